//! dbt-compatible modeling end to end: `strata seed` and `strata run` on a small layered
//! project (seeds → staging views and an ephemeral model → mart tables).

use std::path::Path;

use crate::{ok, project, stderr, stdout, strata};

/// Writes a small dbt project beside the Strata project's `strata.yml`.
fn write_shop(dir: &Path) {
    let files: &[(&str, &str)] = &[
        (
            "dbt_project.yml",
            "name: shop\nversion: \"1.0.0\"\nconfig-version: 2\nprofile: shop\n\
             models:\n  shop:\n    +materialized: view\n    marts:\n      +materialized: table\n\
             seeds:\n  shop:\n    +schema: raw\n",
        ),
        (
            "seeds/raw_customers.csv",
            "id,name,zip\n1,Ada,01234\n2,Bob,98765\n3,Cy,\n",
        ),
        (
            "seeds/raw_orders.csv",
            "id,customer_id,ordered_on,amount\n10,1,2024-01-02,12.50\n11,1,2024-01-05,7.25\n12,2,2024-02-01,100\n",
        ),
        (
            "seeds/seeds.yml",
            "version: 2\nseeds:\n  - name: raw_customers\n    config:\n      column_types:\n        id: integer\n        zip: varchar\n",
        ),
        (
            "models/staging/stg_customers.sql",
            "select id as customer_id, name, zip from {{ ref('raw_customers') }}\n",
        ),
        (
            "models/staging/stg_orders.sql",
            "{{ config(materialized='ephemeral') }}\n\
             select id as order_id, customer_id, ordered_on, amount from {{ ref('raw_orders') }}\n",
        ),
        (
            "models/marts/customer_totals.sql",
            "select c.customer_id, c.name, c.zip, count(o.order_id) as orders,\n\
             coalesce(sum(o.amount), 0) as total\n\
             from {{ ref('stg_customers') }} c\n\
             left join {{ ref('stg_orders') }} o on o.customer_id = c.customer_id\n\
             group by 1, 2, 3\n",
        ),
    ];
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

#[test]
fn seed_and_run_build_views_tables_and_inline_ephemerals() {
    let (_tmp, dir) = project();
    write_shop(&dir);

    let out = ok(&dir, &["seed"]);
    assert!(
        out.contains("1 of 2 OK created seed file analytics_raw.raw_customers"),
        "{out}"
    );
    assert!(out.contains("[") && out.contains("s, 3 rows]"), "{out}");
    assert!(
        out.contains("Done. PASS=2 WARN=0 ERROR=0 SKIP=0 TOTAL=2"),
        "{out}"
    );
    // `column_types` wins over inference: the zip code keeps its leading zero.
    let types = ok(
        &dir,
        &[
            "sql",
            "select arrow_typeof(id) as id, zip from analytics_raw.raw_customers where id = 1",
            "--format",
            "csv",
        ],
    );
    assert_eq!(types, "id,zip\nInt32,01234\n");

    let out = ok(&dir, &["run"]);
    assert!(out.contains("Found 2 model(s) (1 table, 1 view)"), "{out}");
    assert!(
        out.contains("1 of 2 OK created view model analytics.stg_customers"),
        "{out}"
    );
    assert!(
        out.contains("2 of 2 OK created table model analytics.customer_totals"),
        "{out}"
    );
    assert!(out.contains("s, 3 rows]"), "{out}");
    assert!(
        out.contains("Done. PASS=2 WARN=0 ERROR=0 SKIP=0 TOTAL=2"),
        "{out}"
    );
    // The ephemeral model is inlined, never created.
    assert!(!out.contains("stg_orders"), "{out}");
    let mart = ok(
        &dir,
        &[
            "sql",
            "select * from analytics.customer_totals order by customer_id",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        mart,
        "customer_id,name,zip,orders,total\n1,Ada,01234,2,19.75\n2,Bob,98765,1,100.0\n3,Cy,,0,0.0\n"
    );
    // The view is persisted: a later session reads it.
    let view = ok(
        &dir,
        &[
            "sql",
            "select count(*) as n from analytics.stg_customers",
            "--format",
            "csv",
        ],
    );
    assert_eq!(view, "n\n3\n");
    assert!(
        dir.join("target/run/shop/models/marts/customer_totals.sql")
            .is_file()
    );

    // Re-seeding and re-running replace: new rows, a new column, a view turned table.
    std::fs::write(
        dir.join("seeds/raw_customers.csv"),
        "id,name,zip,vip\n1,Ada,01234,true\n2,Bob,98765,false\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("models/staging/stg_customers.sql"),
        "{{ config(materialized='table') }}\nselect id as customer_id, name, zip, vip from {{ ref('raw_customers') }}\n",
    )
    .unwrap();
    ok(&dir, &["seed", "--select", "raw_customers"]);
    let out = ok(&dir, &["run", "--select", "stg_customers"]);
    assert!(
        out.contains("1 of 1 OK created table model analytics.stg_customers"),
        "{out}"
    );
    let staged = ok(
        &dir,
        &[
            "sql",
            "select customer_id, vip from analytics.stg_customers order by 1",
            "--format",
            "csv",
        ],
    );
    assert_eq!(staged, "customer_id,vip\n1,true\n2,false\n");
}

#[test]
fn a_failed_model_skips_its_dependents_and_the_run_continues() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    std::fs::write(
        dir.join("models/marts/broken.sql"),
        "select no_such_column from {{ ref('stg_customers') }}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("models/marts/after_broken.sql"),
        "select * from {{ ref('broken') }}\n",
    )
    .unwrap();
    ok(&dir, &["seed"]);

    let o = strata(&dir, &["run"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    assert!(
        out.contains("ERROR creating table model analytics.broken"),
        "{out}"
    );
    assert!(
        out.contains("SKIP relation analytics.after_broken"),
        "{out}"
    );
    assert!(
        out.contains("OK created table model analytics.customer_totals"),
        "{out}"
    );
    assert!(
        out.contains("Failure in model broken (models/marts/broken.sql)"),
        "{out}"
    );
    assert!(out.contains("no_such_column"), "{out}");
    assert!(
        out.contains("Done. PASS=2 WARN=0 ERROR=1 SKIP=1 TOTAL=4"),
        "{out}"
    );
    assert!(
        stderr(&o).contains("1 of 4 model(s) failed, 1 skipped"),
        "{}",
        stderr(&o)
    );
    // Nothing was created for the failed model or its dependent; the rest is queryable.
    let tables = ok(&dir, &["tables", "analytics"]);
    assert!(!tables.contains("broken"), "{tables}");
    let n = ok(
        &dir,
        &[
            "sql",
            "select count(*) as n from analytics.customer_totals",
            "--format",
            "csv",
        ],
    );
    assert_eq!(n, "n\n3\n");

    // A model switching from table to view keeps the table when its new SQL is broken.
    std::fs::write(
        dir.join("models/marts/customer_totals.sql"),
        "{{ config(materialized='view') }}\nselect nope from {{ ref('stg_customers') }}\n",
    )
    .unwrap();
    let o = strata(&dir, &["run", "--select", "customer_totals"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let n = ok(
        &dir,
        &[
            "sql",
            "select count(*) as n from analytics.customer_totals",
            "--format",
            "csv",
        ],
    );
    assert_eq!(n, "n\n3\n");
}
