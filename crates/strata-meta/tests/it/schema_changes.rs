//! The schema-change log that ingestion writes and `strata sources history` reads.

use strata_meta::{NewRun, NodeResult, RunId, SchemaChange};

use crate::support::{TestDb, backend_tests};

backend_tests!(
    schema_changes_are_logged_newest_first,
    node_results_are_kept_in_order
);

fn change(source: &str, column: &str, change: &str, action: &str) -> SchemaChange {
    SchemaChange {
        run_id: Some(RunId(uuid::Uuid::new_v4())),
        source: source.into(),
        stream: "orders".into(),
        table: format!("raw.{source}_orders"),
        column: column.into(),
        change: change.into(),
        from_type: Some("Int64".into()),
        to_type: None,
        action: action.into(),
    }
}

async fn schema_changes_are_logged_newest_first(db: &TestDb) {
    let store = db.connect().await;
    let first = change("shop", "amount", "widened", "applied");
    store
        .record_schema_changes(std::slice::from_ref(&first))
        .await
        .unwrap();
    let later = [
        change("shop", "note", "removed", "kept (NULL from now on)"),
        change("crm", "zip", "incompatible", "stopped"),
    ];
    store.record_schema_changes(&later).await.unwrap();

    let all = store.schema_changes(None, 10).await.unwrap();
    let got: Vec<&SchemaChange> = all.iter().map(|(_, c)| c).collect();
    assert_eq!(got, [&later[1], &later[0], &first]);
    assert!(all[0].0 >= all[2].0);

    let shop = store.schema_changes(Some("shop"), 1).await.unwrap();
    assert_eq!(shop.len(), 1);
    assert_eq!(shop[0].1, later[0]);
    store.close().await;
}

async fn node_results_are_kept_in_order(db: &TestDb) {
    let store = db.connect().await;
    let run = store
        .start_run(NewRun {
            command: "build".into(),
            args: String::new(),
            principal: "ana".into(),
            environment: None,
        })
        .await
        .unwrap();
    let results = vec![
        NodeResult {
            unique_id: "model.shop.orders".into(),
            status: "success".into(),
            rows: Some(42),
            failures: None,
            execution_ms: 120,
            message: Some("CREATE TABLE 42".into()),
        },
        NodeResult {
            unique_id: "test.shop.not_null_orders_id".into(),
            status: "fail".into(),
            rows: None,
            failures: Some(3),
            execution_ms: 8,
            message: Some("Got 3 results, configured to fail if != 0".into()),
        },
    ];
    store.record_node_results(&run, &results).await.unwrap();
    assert_eq!(store.node_results(&run).await.unwrap(), results);
    store.close().await;
}
