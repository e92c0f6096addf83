//! `strata demo` end to end: the shop's data ingested, its dbt project built with
//! `strata build`, the RFV mart, and the column lineage of `customer_rfv` against a
//! snapshot file.

use std::path::Path;

use crate::ok;

/// Compares `actual` with `tests/cli/snapshots/<name>`; `STRATA_UPDATE_SNAPSHOTS=1`
/// rewrites the file instead.
#[track_caller]
fn assert_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cli/snapshots")
        .join(name);
    if std::env::var("STRATA_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().expect("snapshots have a folder")).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with STRATA_UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    assert!(
        actual == expected,
        "{} differs (STRATA_UPDATE_SNAPSHOTS=1 accepts the new output):\n--- expected\n{expected}\n+++ actual\n{actual}",
        path.display()
    );
}

fn csv(dir: &Path, sql: &str) -> String {
    ok(dir, &["sql", sql, "--format", "csv"])
}

#[test]
fn demo_builds_its_dbt_project_into_an_rfv_segmentation() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(tmp.path(), &["demo", "shop", "--scale", "1000"]);
    let dir = tmp.path().join("shop");
    for file in [
        "dbt_project.yml",
        "models/staging/_sources.yml",
        "models/marts/customer_rfv.sql",
        "seeds/rfv_segments.csv",
        "snapshots/customers_snapshot.sql",
        "tests/generic/is_between.sql",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }

    // Every node of the project builds and every test passes.
    assert!(out.contains("Building it with `strata build`"), "{out}");
    assert!(
        out.contains("Found 2 seed(s), 8 model(s), 1 snapshot(s), 55 test(s)"),
        "{out}"
    );
    for line in [
        "OK created view model analytics.stg_orders",
        "OK created table model analytics.customer_rfv",
        "OK snapshotted snapshots.customers_snapshot",
        "PASS customer_rfv::customer_rfv_scores_and_segments",
        "PASS assert_orders_are_paid_in_full",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    let done = out
        .lines()
        .find(|l| l.starts_with("Done. PASS="))
        .unwrap_or_else(|| panic!("no build summary in:\n{out}"));
    assert_eq!(
        done, "Done. PASS=66 WARN=0 ERROR=0 SKIP=0 TOTAL=66",
        "{out}"
    );
    assert!(out.contains("Customers by RFV segment"), "{out}");
    assert!(out.contains("strata lineage customer_rfv"), "{out}");

    // One RFV row per customer who ordered, each in one of the six segments.
    assert_eq!(
        csv(
            &dir,
            "select (select count(*) from analytics.customer_rfv) as rfv, \
             (select count(distinct customer_id) from raw.orders) as ordered"
        ),
        "rfv,ordered\n197,197\n"
    );
    assert_eq!(
        csv(
            &dir,
            "select segment_code, count(*) as n from analytics.customer_rfv \
             group by segment_code order by segment_code"
        ),
        "segment_code,n\nat_risk,37\nchampions,31\nhibernating,43\nloyal,49\n\
         needs_attention,19\nnew,18\n"
    );

    // Column lineage of the mart, one level up.
    let lineage = ok(&dir, &["--json", "lineage", "customer_rfv"]);
    assert_snapshot("demo_customer_rfv_lineage.json", &lineage);

    // Served: the analyst sees only the Europe region's orders and customers, emails masked.
    assert!(out.contains("strata serve"), "{out}");
    let served = crate::serve::serve(&dir);
    let port = served.port;
    let all = crate::serve::psql_ok(
        port,
        "admin",
        "admin",
        "SELECT count(*) FROM analytics.fct_orders",
    );
    let europe = crate::serve::psql_ok(
        port,
        "analyst",
        "analyst",
        "SELECT count(*) FROM analytics.fct_orders",
    );
    let (all, europe): (u64, u64) = (all.trim().parse().unwrap(), europe.trim().parse().unwrap());
    assert!(
        europe > 0 && europe < all,
        "analyst sees {europe} of {all} orders"
    );
    let out = crate::serve::psql_ok(
        port,
        "analyst",
        "analyst",
        "SELECT DISTINCT sales_region FROM analytics.dim_customers",
    );
    assert_eq!(out.trim(), "Europe");
    let out = crate::serve::psql_ok(
        port,
        "analyst",
        "analyst",
        "SELECT email FROM analytics.dim_customers ORDER BY customer_id LIMIT 3",
    );
    assert!(
        out.lines().count() == 3 && out.lines().all(|l| l.contains("***@")),
        "{out}"
    );
}
