//! The schema-change log that ingestion writes and `strata sources history` reads.

use strata_meta::{LineageEdge, NewRun, NodeResult, RunId, SchemaChange};

use crate::support::{TestDb, backend_tests};

backend_tests!(
    schema_changes_are_logged_newest_first,
    node_results_are_kept_in_order,
    column_lineage_is_replaced_per_model_and_read_both_ways
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

fn edge(
    node: &str,
    position: i64,
    column: Option<&str>,
    up: (&str, &str),
    kind: &str,
) -> LineageEdge {
    LineageEdge {
        node: node.into(),
        position,
        column: column.map(str::to_string),
        upstream_node: up.0.into(),
        upstream_column: up.1.into(),
        kind: kind.into(),
    }
}

async fn column_lineage_is_replaced_per_model_and_read_both_ways(db: &TestDb) {
    let store = db.connect().await;
    let orders = "model.shop.orders";
    let first = vec![
        edge(
            orders,
            -1,
            None,
            ("seed.shop.raw_orders", "status"),
            "filtered_by",
        ),
        edge(
            orders,
            0,
            Some("order_id"),
            ("seed.shop.raw_orders", "id"),
            "copied",
        ),
        edge(
            orders,
            1,
            Some("amount"),
            ("seed.shop.raw_orders", "cents"),
            "transformed",
        ),
    ];
    store
        .replace_column_lineage(None, orders, &first)
        .await
        .unwrap();
    let totals = "model.shop.customer_totals";
    let other = vec![edge(
        totals,
        0,
        Some("total"),
        (orders, "amount"),
        "aggregated",
    )];
    store
        .replace_column_lineage(None, totals, &other)
        .await
        .unwrap();
    assert_eq!(store.column_lineage(orders).await.unwrap(), first);

    // A rebuild replaces the model's edges and leaves the others alone.
    let second = vec![edge(
        orders,
        0,
        Some("order_id"),
        ("seed.shop.raw_orders", "id"),
        "copied",
    )];
    store
        .replace_column_lineage(None, orders, &second)
        .await
        .unwrap();
    assert_eq!(store.column_lineage(orders).await.unwrap(), second);
    assert_eq!(store.column_lineage(totals).await.unwrap(), other);

    // Downstream: who reads orders.amount, who reads anything of raw_orders.
    assert_eq!(
        store
            .column_lineage_downstream(orders, Some("amount"))
            .await
            .unwrap(),
        other
    );
    assert!(
        store
            .column_lineage_downstream(orders, Some("order_id"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .column_lineage_downstream("seed.shop.raw_orders", None)
            .await
            .unwrap(),
        second
    );
    store.close().await;
}
