//! Test stores for both backends, and [`backend_tests!`] to run one behaviour on each.

use sqlx::{Connection, Executor, PgConnection};
use strata_meta::MetaStore;
use tempfile::TempDir;

/// The environment variable holding the base PostgreSQL URL.
pub(crate) const POSTGRES_ENV: &str = "STRATA_IT_POSTGRES";

/// An empty place for one test's metadata store; cleaned up on drop.
pub(crate) enum TestDb {
    Sqlite {
        dir: TempDir,
        url: String,
    },
    Postgres {
        base_url: String,
        schema: String,
        url: String,
    },
}

impl TestDb {
    pub(crate) fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("meta.db").display());
        TestDb::Sqlite { dir, url }
    }

    /// A fresh schema in the PostgreSQL at `$STRATA_IT_POSTGRES`, or `None` (after printing
    /// a skip line for `test`) when the variable is unset.
    pub(crate) async fn postgres(test: &str) -> Option<Self> {
        let Some(base_url) = postgres_base_url() else {
            println!("skipping {test}: {POSTGRES_ENV} is not set");
            return None;
        };
        let schema = format!("meta_it_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&base_url)
            .await
            .unwrap_or_else(|e| panic!("connect to {POSTGRES_ENV}={base_url}: {e}"));
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .await
            .expect("create the test schema");
        conn.close().await.ok();
        let url = with_search_path(&base_url, &schema);
        Some(TestDb::Postgres {
            base_url,
            schema,
            url,
        })
    }

    /// The URL to give [`MetaStore::connect`].
    pub(crate) fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    pub(crate) fn backend_name(&self) -> &'static str {
        match self {
            TestDb::Sqlite { .. } => "sqlite",
            TestDb::Postgres { .. } => "postgres",
        }
    }

    pub(crate) async fn connect(&self) -> MetaStore {
        MetaStore::connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    /// Runs `sql` with a plain driver connection, around the store.
    pub(crate) async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            TestDb::Sqlite { url, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                conn.execute(sql).await.unwrap();
                conn.close().await.unwrap();
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = PgConnection::connect(url).await.unwrap();
                conn.execute(sql).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// Runs a `SELECT COUNT(*) ...` with a plain driver connection.
    pub(crate) async fn count(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            TestDb::Sqlite { url, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
        }
    }

    /// The SQLite directory; `None` for Postgres.
    pub(crate) fn sqlite_dir(&self) -> Option<&std::path::Path> {
        match self {
            TestDb::Sqlite { dir, .. } => Some(dir.path()),
            TestDb::Postgres { .. } => None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let TestDb::Postgres {
            base_url, schema, ..
        } = self
        else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot block on a future; a short-lived
        // thread with its own runtime drops the schema even when the test panicked.
        let base_url = base_url.clone();
        let drop_schema = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a runtime for cleanup")
                .block_on(async {
                    let mut conn = PgConnection::connect(&base_url).await?;
                    conn.execute(sqlx::AssertSqlSafe(drop_schema)).await?;
                    conn.close().await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test schema {schema}: {dropped:?}");
        }
    }
}

pub(crate) fn postgres_base_url() -> Option<String> {
    std::env::var(POSTGRES_ENV).ok().filter(|v| !v.is_empty())
}

/// `base` with `search_path` set to `schema` through the `options` parameter.
pub(crate) fn with_search_path(base: &str, schema: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

/// For each `async fn name(db: &TestDb)` given, generates `mod name` with a `sqlite` and a
/// `postgres` test that call it with a fresh store of that backend.
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    let db = $crate::support::TestDb::sqlite();
                    super::$name(&db).await;
                }

                #[tokio::test]
                async fn postgres() {
                    let test = concat!(module_path!(), "::postgres");
                    if let Some(db) = $crate::support::TestDb::postgres(test).await {
                        super::$name(&db).await;
                    }
                }
            }
        )+
    };
}
pub(crate) use backend_tests;
