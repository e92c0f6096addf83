//! The `kv` settings table.

use crate::support::{TestDb, backend_tests};

backend_tests!(settings_upsert, settings_keep_any_text);

async fn settings_upsert(db: &TestDb) {
    let store = db.connect().await;
    assert_eq!(store.get_setting("theme").await.unwrap(), None);

    store.set_setting("theme", "dark").await.unwrap();
    store.set_setting("other", "1").await.unwrap();
    assert_eq!(
        store.get_setting("theme").await.unwrap().as_deref(),
        Some("dark")
    );

    store.set_setting("theme", "light").await.unwrap();
    assert_eq!(
        store.get_setting("theme").await.unwrap().as_deref(),
        Some("light")
    );
    assert_eq!(
        store.get_setting("other").await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM kv").await, 2);
    store.close().await;

    // Values survive reconnecting.
    let store = db.connect().await;
    assert_eq!(
        store.get_setting("theme").await.unwrap().as_deref(),
        Some("light")
    );
    store.close().await;
}

async fn settings_keep_any_text(db: &TestDb) {
    let store = db.connect().await;
    let value = "it's \"quoted\", multi-line\nand ünïcode ✓; DROP TABLE kv; --";
    store.set_setting("odd key ' \"", value).await.unwrap();
    store.set_setting("empty", "").await.unwrap();
    assert_eq!(
        store.get_setting("odd key ' \"").await.unwrap().as_deref(),
        Some(value)
    );
    assert_eq!(
        store.get_setting("empty").await.unwrap().as_deref(),
        Some("")
    );
    store.close().await;
}
