//! Opening stores and applying migrations.

use strata_meta::{MetaStore, NewRun, RunFilter};

use crate::support::{TestDb, backend_tests};

backend_tests!(
    reports_its_backend,
    migrations_apply_once_across_connects,
    concurrent_first_connects_all_succeed,
    refuses_a_store_migrated_by_a_newer_strata,
);

fn new_run(command: &str) -> NewRun {
    NewRun {
        command: command.into(),
        args: String::new(),
        principal: "tester".into(),
        environment: None,
    }
}

async fn reports_its_backend(db: &TestDb) {
    let store = db.connect().await;
    assert_eq!(store.backend_name(), db.backend_name());
    store.close().await;
}

async fn migrations_apply_once_across_connects(db: &TestDb) {
    let store = db.connect().await;
    let id = store.start_run(new_run("run")).await.unwrap();
    store.close().await;

    // Connecting again finds the migrations applied and the data intact.
    let store = db.connect().await;
    assert!(store.get_run(&id).await.unwrap().is_some());
    assert_eq!(store.runs(RunFilter::new()).await.unwrap().len(), 1);
    store.close().await;

    assert_eq!(
        db.count("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
            .await,
        8,
        "each migration recorded once"
    );
}

async fn concurrent_first_connects_all_succeed(db: &TestDb) {
    // A scheduler and a CLI command opening a fresh store at the same moment.
    let connects = (0..8).map(|_| {
        let url = db.url().to_owned();
        async move { MetaStore::connect(&url).await }
    });
    let stores: Vec<MetaStore> = futures_join_all(connects).await;
    for store in stores {
        store.start_run(new_run("run")).await.unwrap();
        store.close().await;
    }
    assert_eq!(db.count("SELECT COUNT(*) FROM runs").await, 8);
}

/// Joins the futures on separate tasks so they really overlap.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<MetaStore>
where
    F: Future<Output = strata_meta::Result<MetaStore>> + Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut stores = Vec::new();
    for handle in handles {
        stores.push(handle.await.unwrap().unwrap_or_else(|e| panic!("{e}")));
    }
    stores
}

async fn refuses_a_store_migrated_by_a_newer_strata(db: &TestDb) {
    db.connect().await.close().await;
    let checksum = match db.backend_name() {
        "sqlite" => "X'00'",
        _ => "'\\x00'::bytea",
    };
    db.execute(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, {checksum}, 0)"
    ))
    .await;
    let err = MetaStore::connect(db.url()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("migration 9999"), "{msg}");
    assert!(msg.contains("upgrade Strata"), "{msg}");
    assert_eq!(
        strata_types::Classify::class(&err),
        strata_types::ErrorClass::User
    );
}

#[tokio::test]
async fn sqlite_creates_missing_parent_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c/meta.db");
    let store = MetaStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.close().await;
    assert!(path.is_file());
}

#[tokio::test]
async fn sqlite_file_is_in_wal_mode() {
    let db = TestDb::sqlite();
    db.connect().await.close().await;
    let dir = db.sqlite_dir().unwrap();
    // WAL mode is a property of the file; it persists after the store closes.
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(dir.join("meta.db").is_file());
}

#[tokio::test]
async fn sqlite_in_memory_store_works() {
    let store = MetaStore::connect("sqlite::memory:").await.unwrap();
    let id = store.start_run(new_run("run")).await.unwrap();
    assert!(store.get_run(&id).await.unwrap().is_some());
    store.set_setting("k", "v").await.unwrap();
    assert_eq!(store.get_setting("k").await.unwrap().as_deref(), Some("v"));
    store.close().await;
}
