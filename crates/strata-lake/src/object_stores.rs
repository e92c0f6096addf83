//! Object stores beyond local disk.
//!
//! Delta needs an atomic "create if absent" to commit safely (two writers must never both
//! create version N). S3 gives it through conditional writes (`If-None-Match: *`), which
//! `object_store` uses for `PutMode::Create`; Strata therefore registers S3 with conditional
//! puts on and refuses to turn them off unless `conditional_put: disabled` is set explicitly
//! together with `allow_unsafe_rename: true` (a single-writer setup, at the user's risk).

use std::sync::{Arc, Once};

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError, Path};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use url::Url;

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
        let mut unsafe_ok = false;
        for (k, v) in config.raw.iter() {
            let key = k.to_ascii_lowercase();
            if key == "allow_unsafe_rename" {
                unsafe_ok = v.eq_ignore_ascii_case("true");
                continue;
            }
            let parsed: AmazonS3ConfigKey = key.parse().map_err(|_| {
                DeltaTableError::Generic(format!(
                    "unknown S3 option `{k}`; see the `aws_*` options of object_store's AmazonS3ConfigKey (aws_endpoint, aws_region, aws_access_key_id, aws_secret_access_key, aws_allow_http, …)"
                ))
            })?;
            if matches!(parsed, AmazonS3ConfigKey::ConditionalPut)
                && v.trim() == "disabled"
                && !unsafe_ok
            {
                return Err(DeltaTableError::Generic(
                    "conditional_put: disabled lets two writers overwrite each other's commits; set `allow_unsafe_rename: true` as well if only one process ever writes".into(),
                ));
            }
            builder = builder.with_config(parsed, v);
        }
        let store = builder
            .build()
            .map_err(|e| DeltaTableError::Generic(format!("S3 configuration: {e}")))?;
        let path = Path::parse(url.path()).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        Ok((Arc::new(store), path))
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
