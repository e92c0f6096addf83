//! Error messages: they name the thing, hide passwords and say what to do.

use strata_meta::{Error, MetaStore};
use strata_types::{Classify, ErrorClass};

use crate::support::{postgres_base_url, with_search_path};

async fn connect_err(url: &str) -> Error {
    match MetaStore::connect(url).await {
        Ok(store) => panic!(
            "connecting to {url} should fail, got a {} store",
            store.backend_name()
        ),
        Err(err) => err,
    }
}

#[tokio::test]
async fn unsupported_scheme_names_the_redacted_url_and_the_accepted_forms() {
    let err = connect_err("mysql://root:hunter2@localhost:3306/strata").await;
    let msg = err.to_string();
    assert!(matches!(err, Error::UnsupportedUrl { .. }), "{err:?}");
    assert!(
        msg.contains("`mysql://root:***@localhost:3306/strata`"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "password leaked: {msg}");
    assert!(msg.contains("sqlite://<path>"), "{msg}");
    assert!(msg.contains("postgres://"), "{msg}");
    assert!(msg.contains("postgresql://"), "{msg}");
    assert_eq!(err.class(), ErrorClass::User);
    assert!(!err.retryable());
}

#[tokio::test]
async fn a_bare_path_is_not_a_url() {
    for url in [
        "meta.db",
        "",
        "postgres:/missing-slash",
        "https://example.com/db",
    ] {
        let err = connect_err(url).await;
        assert!(
            matches!(err, Error::UnsupportedUrl { .. }),
            "{url}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("`{url}`")), "{err}");
    }
}

#[tokio::test]
async fn invalid_postgres_url_is_redacted() {
    let err = connect_err("postgres://bob:s3cr/et@db.internal:notaport/strata").await;
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::InvalidUrl {
                backend: "postgres",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(msg.contains("bob:***@"), "{msg}");
    assert!(!msg.contains("s3cr"), "password leaked: {msg}");
    assert_eq!(err.class(), ErrorClass::User);
}

#[tokio::test]
async fn unreachable_postgres_names_backend_host_and_cause() {
    let err = connect_err("postgres://strata:s3cret@127.0.0.1:1/test").await;
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Connect {
                backend: "postgres",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.starts_with("could not connect to the postgres metadata database at 127.0.0.1:1"),
        "{msg}"
    );
    assert!(msg.contains("database `test`, user `strata`"), "{msg}");
    assert!(msg.to_lowercase().contains("connection refused"), "{msg}");
    assert!(msg.contains("check that PostgreSQL is running"), "{msg}");
    assert!(!msg.contains("s3cret"), "password leaked: {msg}");
    assert_eq!(err.class(), ErrorClass::External);
    assert!(err.retryable());
}

#[tokio::test]
async fn sqlite_directory_that_cannot_be_created() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let err = connect_err(&format!("sqlite://{}/meta.db", file.display())).await;
    let msg = err.to_string();
    assert!(matches!(err, Error::CreateDir { .. }), "{err:?}");
    assert!(msg.contains(&format!("`{}`", file.display())), "{msg}");
    assert!(msg.contains("a file of that name is in the way"), "{msg}");
    assert_eq!(err.class(), ErrorClass::External);
}

#[tokio::test]
async fn sqlite_file_that_cannot_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the database file should be.
    let err = connect_err(&format!("sqlite://{}", dir.path().display())).await;
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Connect {
                backend: "sqlite",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.starts_with(&format!(
            "could not connect to the sqlite metadata database at `{}`",
            dir.path().display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains("unable to open database file (SQLite code 14)"),
        "{msg}"
    );
}

#[tokio::test]
async fn postgres_missing_database_is_a_user_error() {
    let Some(base) = postgres_base_url() else {
        println!("skipping: STRATA_IT_POSTGRES is not set");
        return;
    };
    // Same server, a database that does not exist.
    let (server, _) = base
        .rsplit_once('/')
        .expect("the base URL names a database");
    let url = format!(
        "{server}/strata_no_such_db_{}",
        uuid::Uuid::new_v4().simple()
    );
    let err = connect_err(&url).await;
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Connect {
                backend: "postgres",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(msg.contains("does not exist (SQLSTATE 3D000)"), "{msg}");
    assert!(
        !msg.contains("at line"),
        "Postgres' source line is noise: {msg}"
    );
    assert_eq!(err.class(), ErrorClass::User);
    assert!(!err.retryable());
}

#[tokio::test]
async fn postgres_missing_schema_fails_on_migration() {
    let Some(base) = postgres_base_url() else {
        println!("skipping: STRATA_IT_POSTGRES is not set");
        return;
    };
    let url = with_search_path(
        &base,
        &format!("meta_it_missing_{}", uuid::Uuid::new_v4().simple()),
    );
    let err = connect_err(&url).await;
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Migrate {
                backend: "postgres",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.starts_with("could not migrate the postgres metadata database"),
        "{msg}"
    );
    assert!(msg.contains("SQLSTATE 3F000"), "{msg}");
    assert!(msg.contains("create it first with `CREATE SCHEMA"), "{msg}");
}
