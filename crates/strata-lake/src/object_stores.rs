//! Object stores beyond local disk.
//!
//! Delta needs an atomic "create if absent" to commit safely (two writers must never both
//! create version N). S3 gives it through conditional writes (`If-None-Match: *`), which
//! `object_store` uses for `PutMode::Create`; Strata therefore registers S3 with conditional
//! puts on and refuses to turn them off unless `conditional_put: disabled` is set explicitly
//! together with `allow_unsafe_rename: true` (a single-writer setup, at the user's risk). In
//! that setup "create if absent" is emulated by a HEAD then a PUT ([`HeadThenPut`]), which is
//! correct only while a single process writes.

use std::fmt;
use std::sync::{Arc, Once};

use futures::stream::BoxStream;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError, Path};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use url::Url;

/// Opens the object store at `url` (`file://`, `s3://…` with the lake's S3 options), scoped
/// to the URL's path: locations inside it are relative. Sources read files through this, so
/// they reach every store the lake can.
pub fn open_store(
    url: &Url,
    options: &std::collections::HashMap<String, String>,
) -> crate::Result<ObjectStoreRef> {
    register();
    deltalake::logstore::store_for(url, options.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| crate::Error::Location {
            url: strata_types::redact_url_password(url.as_str()),
            message: e.to_string(),
        })
}

/// Registers the S3 factories with Delta once per process.
pub(crate) fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            let url = Url::parse(scheme).expect("static URL");
            object_store_factories().insert(url.clone(), Arc::new(S3Factory));
            logstore_factories().insert(url, Arc::new(S3Factory));
        }
    });
}

struct S3Factory;

impl ObjectStoreFactory for S3Factory {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let mut builder = AmazonS3Builder::from_env().with_url(url.to_string());
        // Read before the loop: the options are a map, so the opt-in may come after the
        // option it allows.
        let unsafe_ok = config.raw.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("allow_unsafe_rename") && v.trim().eq_ignore_ascii_case("true")
        });
        for (k, v) in config.raw.iter() {
            let key = k.to_ascii_lowercase();
            if key == "allow_unsafe_rename" {
                continue;
            }
            let parsed: AmazonS3ConfigKey = key.parse().map_err(|_| {
                DeltaTableError::Generic(format!(
                    "unknown S3 option `{k}`; see the `aws_*` options of object_store's AmazonS3ConfigKey (aws_endpoint, aws_region, aws_access_key_id, aws_secret_access_key, aws_allow_http, …)"
                ))
            })?;
            builder = builder.with_config(parsed, v);
        }
        // Checked on the builder, so that `AWS_CONDITIONAL_PUT` from the environment counts.
        let conditional_put_off = builder
            .get_config_value(&AmazonS3ConfigKey::ConditionalPut)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("disabled"));
        if conditional_put_off && !unsafe_ok {
            return Err(DeltaTableError::Generic(
                "conditional_put: disabled lets two writers overwrite each other's commits; set `allow_unsafe_rename: true` as well if only one process ever writes".into(),
            ));
        }
        let store = builder
            .build()
            .map_err(|e| DeltaTableError::Generic(format!("S3 configuration: {e}")))?;
        let path = Path::parse(url.path()).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        let store: ObjectStoreRef = if conditional_put_off {
            // Without it, object_store refuses every `PutMode::Create`: no commit could land.
            Arc::new(HeadThenPut(Arc::new(store)))
        } else {
            Arc::new(store)
        };
        Ok((store, path))
    }
}

impl LogStoreFactory for S3Factory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// "Create if absent" as a HEAD then an unconditional write, for stores without conditional
/// writes. Two processes can both see the key absent and both write: only for the
/// single-writer setup the user opted into with `allow_unsafe_rename: true`.
#[derive(Debug)]
struct HeadThenPut(Arc<dyn ObjectStore>);

impl HeadThenPut {
    async fn refuse_existing(&self, location: &Path) -> object_store::Result<()> {
        match self.0.head(location).await {
            Ok(_) => Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "the object exists (checked with HEAD: conditional puts are disabled)"
                    .into(),
            }),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl fmt::Display for HeadThenPut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HeadThenPut({})", self.0)
    }
}

#[async_trait::async_trait]
impl ObjectStore for HeadThenPut {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if matches!(opts.mode, PutMode::Create) {
            self.refuse_existing(location).await?;
            opts.mode = PutMode::Overwrite;
        }
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.0.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        mut options: CopyOptions,
    ) -> object_store::Result<()> {
        if matches!(options.mode, CopyMode::Create) {
            self.refuse_existing(to).await?;
            options.mode = CopyMode::Overwrite;
        }
        self.0.copy_opts(from, to, options).await
    }
}
