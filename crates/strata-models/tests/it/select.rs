use std::collections::BTreeSet;

use strata_models::select::{SelectContext, select};

use crate::manifest;

fn names(sel: &[&str], excl: &[&str]) -> BTreeSet<String> {
    let m = manifest();
    let ctx = SelectContext::load(&crate::fixture(), None).unwrap();
    names_in(&m, sel, excl, &ctx)
}

fn names_in(
    m: &strata_models::Manifest,
    sel: &[&str],
    excl: &[&str],
    ctx: &SelectContext,
) -> BTreeSet<String> {
    let s: Vec<String> = sel.iter().map(|x| x.to_string()).collect();
    let e: Vec<String> = excl.iter().map(|x| x.to_string()).collect();
    select(m, &s, &e, ctx)
        .unwrap()
        .into_iter()
        .map(|id| m.nodes[&id].name.clone())
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn names_and_graph_operators() {
    assert_eq!(names(&["stg_orders"], &[]), set(&["stg_orders"]));
    assert_eq!(
        names(&["+stg_orders"], &[]),
        set(&["stg_orders", "raw_orders"])
    );
    assert_eq!(
        names(&["stg_orders+1"], &["resource_type:test"]),
        set(&["stg_orders", "orders", "customers"])
    );
    assert_eq!(
        names(&["stg_orders+"], &["resource_type:test"]),
        set(&["stg_orders", "orders", "customers", "order_counts"])
    );
    assert_eq!(
        names(&["1+customers"], &[]),
        set(&["customers", "stg_customers", "stg_orders", "stg_events"])
    );
    assert_eq!(
        names(&["2+customers"], &[]),
        set(&[
            "customers",
            "stg_customers",
            "stg_orders",
            "stg_events",
            "raw_customers",
            "raw_orders",
            "events"
        ])
    );
    assert_eq!(
        names(&["stg_*"], &[]),
        set(&["stg_customers", "stg_events", "stg_orders", "stg_payments"])
    );
    let at = names(&["@stg_events"], &["resource_type:test"]);
    assert!(
        at.contains("customers") && at.contains("stg_orders") && at.contains("events"),
        "{at:?}"
    );
}

#[test]
fn methods() {
    assert_eq!(names(&["tag:finance"], &[]), set(&["orders"]));
    assert_eq!(
        names(&["tag:staging"], &[]),
        set(&["stg_customers", "stg_events", "stg_orders", "stg_payments"])
    );
    assert_eq!(
        names(&["path:models/marts"], &["resource_type:test"]),
        set(&["customers", "orders"])
    );
    assert_eq!(names(&["models/marts/orders.sql"], &[]), set(&["orders"]));
    assert_eq!(names(&["source:shop"], &[]), set(&["events", "sessions"]));
    assert_eq!(
        names(&["source:shop.events+"], &["resource_type:test"]),
        set(&["events", "stg_events", "customers"])
    );
    assert_eq!(
        names(&["resource_type:seed"], &[]),
        set(&["raw_customers", "raw_orders", "raw_payments"])
    );
    assert_eq!(
        names(&["config.materialized:ephemeral"], &[]),
        set(&["stg_events"])
    );
    assert_eq!(names(&["package:shop_utils"], &[]), set(&["util_calendar"]));
    assert_eq!(
        names(&["fqn:jaffle_shop.marts.*"], &["resource_type:test"]),
        set(&["customers", "orders"])
    );
    assert_eq!(
        names(&["jaffle_shop.staging.stg_orders"], &[]),
        set(&["stg_orders"])
    );
    assert_eq!(
        names(&["test_type:singular"], &[]),
        set(&["assert_no_negative_payments"])
    );
    assert_eq!(names(&["test_type:generic"], &[]).len(), 11);
}

#[test]
fn unions_intersections_and_exclude() {
    assert_eq!(
        names(&["stg_orders customers"], &[]),
        set(&["stg_orders", "customers"])
    );
    assert_eq!(
        names(&["stg_orders", "customers"], &[]),
        set(&["stg_orders", "customers"])
    );
    assert_eq!(
        names(&["tag:staging,config.materialized:view"], &[]),
        set(&["stg_customers", "stg_orders", "stg_payments"])
    );
    assert_eq!(
        names(&["tag:staging"], &["stg_events stg_orders"]),
        set(&["stg_customers", "stg_payments"])
    );
    let all = names(&[], &[]);
    assert!(
        !all.contains("events"),
        "sources are not selected by default"
    );
    assert!(all.contains("orders") && all.contains("raw_orders"));
}

#[test]
fn yaml_selectors() {
    assert_eq!(
        names(&["selector:staging_and_parents"], &[]),
        set(&[
            "stg_customers",
            "stg_events",
            "stg_orders",
            "stg_payments",
            "raw_customers",
            "raw_orders",
            "raw_payments",
            "events"
        ])
    );
    assert_eq!(
        names(&["selector:marts_without_tests"], &[]),
        set(&["customers", "orders"])
    );
}

#[test]
fn state_modified_and_result() {
    let m = manifest();
    let state = tempfile::tempdir().unwrap();
    strata_models::write_manifest(&m, &Default::default(), state.path()).unwrap();
    std::fs::write(
        state.path().join("run_results.json"),
        r#"{"results": [{"unique_id": "model.jaffle_shop.orders", "status": "error"},
                        {"unique_id": "model.jaffle_shop.customers", "status": "success"}]}"#,
    )
    .unwrap();
    let dir = crate::copy_fixture();
    // body change, config change, upstream macro change, new model
    let p = dir.path().join("models/marts/customers.sql");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, format!("{text}\n-- edited")).unwrap();
    let y = dir.path().join("models/staging/schema.yml");
    let text = std::fs::read_to_string(&y).unwrap();
    std::fs::write(&y, text.replace("owner: ops", "owner: finance")).unwrap();
    let mac = dir.path().join("packages/shop_utils/macros/cents.sql");
    let text = std::fs::read_to_string(&mac).unwrap();
    std::fs::write(&mac, text.replace("round(", "round( ")).unwrap();
    std::fs::write(dir.path().join("models/brand_new.sql"), "select 1").unwrap();
    let m2 = strata_models::Manifest::load(dir.path(), &Default::default()).unwrap();
    let ctx = SelectContext::load(dir.path(), Some(state.path())).unwrap();
    assert_eq!(
        names_in(&m2, &["state:modified"], &["resource_type:test"], &ctx),
        set(&["customers", "stg_orders", "stg_payments", "brand_new"])
    );
    assert_eq!(
        names_in(&m2, &["state:modified.body"], &[], &ctx),
        set(&["customers", "brand_new"])
    );
    // New nodes count as modified in every sub-selector, as in dbt.
    assert_eq!(
        names_in(&m2, &["state:modified.macros"], &[], &ctx),
        set(&["stg_payments", "brand_new"])
    );
    assert_eq!(
        names_in(&m2, &["state:new"], &[], &ctx),
        set(&["brand_new"])
    );
    assert_eq!(
        names_in(&m2, &["result:error"], &[], &ctx),
        set(&["orders"])
    );
    assert_eq!(
        names_in(&m2, &["result:error+"], &["resource_type:test"], &ctx),
        set(&["orders", "order_counts"])
    );
}

#[test]
fn bad_selection_is_explained() {
    let m = manifest();
    let err = select(&m, &["colour:red".into()], &[], &SelectContext::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("selection `colour:red`: unknown method `colour`"),
        "{err}"
    );
    let err = select(
        &m,
        &["state:modified".into()],
        &[],
        &SelectContext::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--state"), "{err}");
}

#[test]
fn bare_names_select_folders_and_packages_as_dbt_does() {
    // A folder of the root project, with and without the package name.
    let marts = set(&["orders", "customers"]);
    assert_eq!(names(&["marts"], &["resource_type:test"]), marts);
    assert_eq!(
        names(&["jaffle_shop.marts"], &["resource_type:test"]),
        marts
    );
    // A package name selects the package's nodes.
    assert_eq!(
        names(&["shop_utils"], &["resource_type:test"]),
        set(&["util_calendar"])
    );
    // A folder and a node under it.
    assert_eq!(names(&["marts.orders"], &[]), set(&["orders"]));
    assert_eq!(names(&["nope"], &[]), set(&[]));
}

#[test]
fn test_name_and_file_methods() {
    let uniques = names(&["test_name:unique"], &[]);
    assert!(!uniques.is_empty());
    assert!(
        uniques.iter().all(|n| n.starts_with("unique_")),
        "{uniques:?}"
    );
    assert_eq!(
        names(&["test_name:assert_no_negative_payments"], &[]),
        set(&["assert_no_negative_payments"])
    );
    assert_eq!(names(&["file:orders.sql"], &[]), set(&["orders"]));
    assert_eq!(names(&["file:stg_orders"], &[]), set(&["stg_orders"]));
    assert_eq!(
        names(&["file:raw_*.csv"], &[]),
        set(&["raw_customers", "raw_orders", "raw_payments"])
    );
}
