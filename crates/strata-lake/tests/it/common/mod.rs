//! Shared fixtures: a lake on a local tempdir or in a fresh bucket of a moto S3 server,
//! batch builders, and reading rows back through DataFusion.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use strata_lake::deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use strata_lake::deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use strata_lake::deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
use strata_lake::deltalake::datafusion::prelude::SessionContext;
use strata_lake::{DeltaTable, Lake, TableName};
use url::Url;

/// Errors of a test body; a failed `?` fails the test with the error's message.
pub(crate) type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Where a test's lake lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Local,
    S3,
}

/// One test's lake. Dropping it removes the local folder; S3 buckets live as long as moto.
pub(crate) struct Ctx {
    pub(crate) lake: Lake,
    pub(crate) backend: Backend,
    root: Url,
    options: HashMap<String, String>,
    s3_endpoint: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

/// The S3 endpoint of the moto server started by `scripts/test.sh`, if any.
pub(crate) fn s3_endpoint() -> Option<String> {
    std::env::var("STRATA_IT_S3_ENDPOINT")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim_end_matches('/').to_string())
}

impl Ctx {
    pub(crate) async fn local() -> TestResult<Ctx> {
        let dir = tempfile::tempdir()?;
        let root = Url::from_directory_path(dir.path()).map_err(|()| "tempdir is not a path")?;
        let lake = Lake::open(&root, HashMap::new()).await?;
        Ok(Ctx {
            lake,
            backend: Backend::Local,
            root,
            options: HashMap::new(),
            s3_endpoint: None,
            _dir: Some(dir),
        })
    }

    /// A lake in a new bucket, or `None` (after printing a skip line) without moto.
    pub(crate) async fn s3(test: &str) -> TestResult<Option<Ctx>> {
        let Some(endpoint) = s3_endpoint() else {
            eprintln!(
                "SKIP {test} [s3]: STRATA_IT_S3_ENDPOINT is not set (scripts/test.sh starts moto)"
            );
            return Ok(None);
        };
        let bucket = unique_bucket(test);
        create_bucket(&endpoint, &bucket)?;
        let options: HashMap<String, String> = [
            ("aws_endpoint", endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", "testing"),
            ("aws_secret_access_key", "testing"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let root = Url::parse(&format!("s3://{bucket}/lake/"))?;
        let lake = Lake::open(&root, options.clone()).await?;
        Ok(Some(Ctx {
            lake,
            backend: Backend::S3,
            root,
            options,
            s3_endpoint: Some(endpoint),
            _dir: None,
        }))
    }

    /// The lake's root URL.
    pub(crate) fn root(&self) -> &Url {
        &self.root
    }

    /// The options the lake was opened with (the S3 connection for moto).
    pub(crate) fn options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// A second, independent handle on the same lake (as another process would open it).
    pub(crate) async fn reopen(&self) -> TestResult<Lake> {
        Ok(Lake::open(&self.root, self.options.clone()).await?)
    }

    /// Where a table lives, and the options the Python `deltalake` package needs to read it.
    pub(crate) fn python_location(&self, t: &TableName) -> (String, serde_json::Value) {
        let url = self.lake.table_url(t);
        match (&self.s3_endpoint, url.scheme()) {
            (Some(endpoint), "s3") => (
                url.to_string(),
                serde_json::json!({
                    "AWS_ENDPOINT_URL": endpoint,
                    "AWS_ALLOW_HTTP": "true",
                    "AWS_REGION": "us-east-1",
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                }),
            ),
            _ => (
                url.to_file_path()
                    .expect("local lakes have file URLs")
                    .display()
                    .to_string(),
                serde_json::json!({}),
            ),
        }
    }
}

/// Runs each named `async fn(Ctx) -> TestResult` twice: `<name>::local` on a tempdir lake and
/// `<name>::s3` on a fresh bucket of the moto server (skipped without one).
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() -> $crate::common::TestResult {
                let ctx = $crate::common::Ctx::local().await?;
                super::$name(ctx).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() -> $crate::common::TestResult {
                let test = module_path!();
                match $crate::common::Ctx::s3(test).await? {
                    Some(ctx) => super::$name(ctx).await,
                    None => Ok(()),
                }
            }
        }
    )*};
}
pub(crate) use both_backends;

fn unique_bucket(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let short: String = test
        .rsplit("::")
        .next()
        .unwrap_or(test)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!(
        "it-{}-{}-{nanos}-{}",
        short.trim_matches('-'),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `PUT /<bucket>` on moto. object_store cannot create buckets and moto does not check
/// signatures, so a bare HTTP/1.1 request is enough.
fn create_bucket(endpoint: &str, bucket: &str) -> TestResult {
    let url = Url::parse(endpoint)?;
    let host = url.host_str().ok_or("S3 endpoint without a host")?;
    let port = url
        .port_or_known_default()
        .ok_or("S3 endpoint without a port")?;
    let mut stream = TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("creating bucket `{bucket}` on {endpoint}: {status}").into());
    }
    Ok(())
}

pub(crate) fn tn(s: &str) -> TableName {
    s.parse().expect("test table names are valid")
}

/// A batch whose columns are all nullable (as Delta stores them unless told otherwise).
pub(crate) fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema, columns.into_iter().map(|(_, a)| a).collect())
        .expect("columns of one length")
}

/// `(id Int64, name Utf8)` rows.
pub(crate) fn people(rows: &[(i64, &str)]) -> RecordBatch {
    batch(vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))) as ArrayRef,
        ),
    ])
}

/// Runs `sql` over the table registered as `t`; each row is rendered as `a, b, NULL`.
pub(crate) async fn query(table: &DeltaTable, sql: &str) -> TestResult<Vec<String>> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    ctx.register_table("t", table.table_provider().await?)?;
    let batches = ctx.sql(sql).await?.collect().await?;
    render(&batches)
}

/// [`query`] on the table's latest version.
pub(crate) async fn query_latest(lake: &Lake, t: &TableName, sql: &str) -> TestResult<Vec<String>> {
    let table = lake.open_table(t).await?;
    query(&table, sql).await
}

pub(crate) fn render(batches: &[RecordBatch]) -> TestResult<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            out.push(cells.join(", "));
        }
    }
    Ok(out)
}

/// Data files (parquet) under a table's folder, as object-store paths relative to the lake.
pub(crate) async fn data_files(lake: &Lake, t: &TableName) -> TestResult<Vec<String>> {
    use futures::TryStreamExt;
    let prefix = strata_lake::deltalake::Path::from(format!("{}/{}", t.namespace, t.name));
    let metas: Vec<_> = lake.store().list(Some(&prefix)).try_collect().await?;
    let mut out: Vec<String> = metas
        .into_iter()
        .map(|m| m.location.to_string())
        .filter(|p| p.ends_with(".parquet") && !p.contains("_delta_log"))
        .collect();
    out.sort();
    Ok(out)
}
