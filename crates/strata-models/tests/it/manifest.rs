use serde_json::Value;

use crate::manifest;

#[test]
fn manifest_json_shape_and_compiled_files() {
    let m = manifest();
    let order = m.topo_order().unwrap();
    let compiled = m.compile_all(&order).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = strata_models::write_manifest(&m, &compiled, dir.path()).unwrap();
    let files = strata_models::write_compiled(&m, &compiled, dir.path()).unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        v["metadata"]["dbt_schema_version"],
        "https://schemas.getdbt.com/dbt/manifest/v12.json"
    );
    assert_eq!(v["metadata"]["project_name"], "jaffle_shop");
    let orders = &v["nodes"]["model.jaffle_shop.orders"];
    assert_eq!(orders["resource_type"], "model");
    assert_eq!(orders["schema"], "analytics");
    assert_eq!(orders["relation_name"], "analytics.orders");
    assert_eq!(orders["config"]["materialized"], "table");
    assert_eq!(
        orders["fqn"],
        serde_json::json!(["jaffle_shop", "marts", "orders"])
    );
    assert_eq!(orders["checksum"]["name"], "sha256");
    assert_eq!(
        orders["compiled_path"],
        "target/compiled/jaffle_shop/models/marts/orders.sql"
    );
    assert!(
        orders["compiled_code"]
            .as_str()
            .unwrap()
            .contains("analytics_staging.stg_orders")
    );
    assert!(v["sources"]["source.jaffle_shop.shop.events"]["loaded_at_field"] == "_loaded_at");
    assert!(v["macros"]["macro.shop_utils.cents_to_dollars"]["macro_sql"].is_string());
    assert_eq!(
        v["parent_map"]["model.jaffle_shop.stg_events"],
        serde_json::json!(["source.jaffle_shop.shop.events"])
    );
    assert!(
        v["child_map"]["model.jaffle_shop.stg_orders"]
            .as_array()
            .unwrap()
            .contains(&Value::from("model.jaffle_shop.orders"))
    );
    let t = v["nodes"]
        .as_object()
        .unwrap()
        .values()
        .find(|n| n["name"] == "not_null_stg_orders_order_id")
        .unwrap();
    assert_eq!(t["test_metadata"]["name"], "not_null");
    assert_eq!(t["test_metadata"]["kwargs"]["column_name"], "order_id");
    assert_eq!(t["attached_node"], "model.jaffle_shop.stg_orders");
    assert!(v["unit_tests"]["unit_test.jaffle_shop.orders.test_orders_amount"].is_object());
    let orders_sql = dir
        .path()
        .join("compiled/jaffle_shop/models/marts/orders.sql");
    assert!(files.contains(&orders_sql));
    assert!(
        std::fs::read_to_string(orders_sql)
            .unwrap()
            .contains("credit_card_amount")
    );
    assert!(
        dir.path()
            .join("compiled/jaffle_shop/models/staging/schema.yml/not_null_stg_orders_order_id.sql")
            .is_file()
    );
}
