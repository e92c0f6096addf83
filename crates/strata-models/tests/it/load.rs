use std::collections::BTreeSet;

use strata_models::{LoadOptions, Manifest, ResourceType};

use crate::{compiled, manifest};

fn ids(m: &Manifest, rt: ResourceType) -> BTreeSet<String> {
    m.nodes
        .values()
        .filter(|n| n.resource_type == rt)
        .map(|n| n.unique_id.clone())
        .collect()
}

#[test]
fn nodes_of_each_kind() {
    let m = manifest();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        ids(&m, ResourceType::Model),
        set(&[
            "model.jaffle_shop.customers",
            "model.jaffle_shop.orders",
            "model.jaffle_shop.stg_customers",
            "model.jaffle_shop.stg_events",
            "model.jaffle_shop.stg_orders",
            "model.jaffle_shop.stg_payments",
            "model.shop_utils.util_calendar",
        ])
    );
    assert_eq!(
        ids(&m, ResourceType::Seed),
        set(&[
            "seed.jaffle_shop.raw_customers",
            "seed.jaffle_shop.raw_orders",
            "seed.jaffle_shop.raw_payments",
        ])
    );
    assert_eq!(
        ids(&m, ResourceType::Source),
        set(&[
            "source.jaffle_shop.shop.events",
            "source.jaffle_shop.shop.sessions"
        ])
    );
    assert_eq!(
        ids(&m, ResourceType::Snapshot),
        set(&["snapshot.jaffle_shop.customers_snapshot"])
    );
    assert_eq!(
        ids(&m, ResourceType::Analysis),
        set(&["analysis.jaffle_shop.order_counts"])
    );
    let tests: BTreeSet<String> = m
        .nodes
        .values()
        .filter(|n| n.resource_type == ResourceType::Test)
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(tests.len(), 12, "{tests:?}");
    for t in [
        "unique_stg_customers_customer_id",
        "not_null_stg_orders_order_id",
        "source_not_null_shop_events_event_id",
        "relationships_orders_customer_id__customer_id__ref_customers_",
        "is_positive_orders_amount",
        "assert_no_negative_payments",
    ] {
        assert!(tests.contains(t), "missing test {t}: {tests:?}");
    }
    assert_eq!(m.unit_tests.len(), 1);
    assert_eq!(
        m.unit_tests["unit_test.jaffle_shop.orders.test_orders_amount"].model,
        "model.jaffle_shop.orders"
    );
}

#[test]
fn edges_from_ref_and_source() {
    let m = manifest();
    let parents = |id: &str| m.parent_map[id].iter().cloned().collect::<BTreeSet<_>>();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        parents("model.jaffle_shop.customers"),
        set(&[
            "model.jaffle_shop.stg_customers",
            "model.jaffle_shop.stg_orders",
            "model.jaffle_shop.stg_events",
        ])
    );
    assert_eq!(
        parents("model.jaffle_shop.stg_events"),
        set(&["source.jaffle_shop.shop.events"])
    );
    assert_eq!(
        parents("snapshot.jaffle_shop.customers_snapshot"),
        set(&["model.jaffle_shop.stg_customers"])
    );
    let rel = m
        .nodes
        .values()
        .find(|n| n.name.starts_with("relationships_orders"))
        .unwrap();
    assert_eq!(
        rel.depends_on
            .nodes
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        set(&["model.jaffle_shop.orders", "model.jaffle_shop.customers"])
    );
    assert!(
        m.child_map["model.jaffle_shop.stg_orders"]
            .contains(&"model.jaffle_shop.orders".to_string())
    );
    // Macros reached are recorded, across packages.
    assert!(
        m.nodes["model.jaffle_shop.stg_payments"]
            .depends_on
            .macros
            .contains(&"macro.shop_utils.cents_to_dollars".to_string())
    );
    // Build order puts parents first.
    let order = m.topo_order().unwrap();
    let pos = |id: &str| order.iter().position(|x| x == id).unwrap();
    assert!(pos("seed.jaffle_shop.raw_orders") < pos("model.jaffle_shop.stg_orders"));
    assert!(pos("model.jaffle_shop.stg_orders") < pos("model.jaffle_shop.orders"));
}

#[test]
fn config_precedence_and_relations() {
    let m = manifest();
    let n = |id: &str| &m.nodes[id];
    // project (view) < folder marts (table)
    assert_eq!(n("model.jaffle_shop.customers").materialized(), "table");
    // folder staging (view) < yml (table) < in-file config() (view), as dbt orders them
    let stg_orders = n("model.jaffle_shop.stg_orders");
    assert_eq!(stg_orders.materialized(), "view");
    assert_eq!(stg_orders.config.get("meta").unwrap()["owner"], "ops");
    // tags add up across levels
    assert_eq!(
        stg_orders.config.tags(),
        vec!["jaffle", "staging", "orders"]
    );
    assert_eq!(
        n("model.jaffle_shop.orders").config.tags(),
        vec!["jaffle", "finance", "marts"]
    );
    // custom schema → <target>_<custom>
    assert_eq!(stg_orders.relation.render(), "analytics_staging.stg_orders");
    assert_eq!(
        n("model.jaffle_shop.orders").relation.render(),
        "analytics.orders"
    );
    assert_eq!(
        n("seed.jaffle_shop.raw_customers").relation.render(),
        "analytics_raw_seeds.raw_customers"
    );
    assert_eq!(
        n("source.jaffle_shop.shop.events").relation.render(),
        "raw.shop_events"
    );
    assert_eq!(
        n("snapshot.jaffle_shop.customers_snapshot")
            .relation
            .render(),
        "snapshots.customers_snapshot"
    );
    // package project config applies to its nodes
    assert_eq!(n("model.shop_utils.util_calendar").materialized(), "table");
    // test severity from yml
    let pos = m
        .nodes
        .values()
        .find(|x| x.name == "is_positive_orders_amount")
        .unwrap();
    assert_eq!(pos.config.get_str("severity"), Some("warn"));
    // sources: freshness inherited, and turned off by `freshness: null`
    assert!(n("source.jaffle_shop.shop.events").freshness.is_some());
    assert!(n("source.jaffle_shop.shop.sessions").freshness.is_none());
    assert_eq!(
        n("source.jaffle_shop.shop.events")
            .loaded_at_field
            .as_deref(),
        Some("_loaded_at")
    );
    // docs blocks resolve in descriptions
    assert_eq!(
        n("model.jaffle_shop.stg_customers").description,
        "One row per customer."
    );
}

#[test]
fn ephemeral_models_are_inlined() {
    let m = manifest();
    let sql = compiled(&m, "model.jaffle_shop.customers");
    assert!(
        sql.starts_with("with __dbt__cte__stg_events as (\nselect event_id, customer_id from raw.shop_events\n),\ncustomers as ("),
        "{sql}"
    );
    assert!(sql.contains("select * from __dbt__cte__stg_events"));
}

#[test]
fn vars_scoped_by_package_and_overridden_by_cli() {
    let m = manifest();
    assert_eq!(
        compiled(&m, "model.shop_utils.util_calendar"),
        "select 7 as day_number, 100 as divisor"
    );
    let opts = LoadOptions {
        vars: Some("{cents_divisor: 5, start_date: '2020-01-01'}".into()),
        ..LoadOptions::default()
    };
    let m = Manifest::load(&crate::fixture(), &opts).unwrap();
    assert_eq!(
        compiled(&m, "model.shop_utils.util_calendar"),
        "select 7 as day_number, 5 as divisor"
    );
    assert!(compiled(&m, "model.jaffle_shop.stg_orders").contains("order_date >= '2020-01-01'"));
    assert!(compiled(&m, "model.jaffle_shop.stg_payments").contains("/ 5, 2)"));
}

#[test]
fn generic_and_singular_tests_compile() {
    let m = manifest();
    let by_name = |name: &str| {
        m.nodes
            .values()
            .find(|n| n.name == name)
            .unwrap()
            .unique_id
            .clone()
    };
    assert_eq!(
        compiled(&m, &by_name("not_null_stg_orders_order_id")),
        "select order_id\nfrom analytics_staging.stg_orders\nwhere order_id is null"
    );
    assert_eq!(
        compiled(&m, &by_name("is_positive_orders_amount")),
        "select * from analytics.orders where amount < 0"
    );
    assert!(
        compiled(
            &m,
            &by_name("relationships_orders_customer_id__customer_id__ref_customers_")
        )
        .contains("from analytics.customers")
    );
    let av = m
        .nodes
        .values()
        .find(|n| n.name.starts_with("accepted_values_stg_payments"))
        .unwrap();
    assert!(
        compiled(&m, &av.unique_id)
            .contains("'credit_card', 'coupon', 'bank_transfer', 'gift_card'")
    );
    assert_eq!(
        compiled(&m, "test.jaffle_shop.assert_no_negative_payments"),
        "select * from analytics_staging.stg_payments where amount < 0"
    );
}
