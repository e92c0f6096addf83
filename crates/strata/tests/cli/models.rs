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
    // Each node's outcome is recorded with the run in the metadata store.
    let db = dir.join(".strata/strata.db");
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print('\\n'.join(f'{u} {s}' for u,s in c.execute(\"select unique_id, status from node_results where run_id = (select id from runs where command = 'run' order by started_at desc limit 1) order by unique_id\")))",
            db.to_str().unwrap(),
        ])
        .output()
        .expect("python3 runs");
    let recorded = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        recorded.contains("model.shop.broken error")
            && recorded.contains("model.shop.customer_totals success")
            && recorded.lines().count() == 4,
        "{recorded}{}",
        String::from_utf8_lossy(&o.stderr)
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

/// Adds generic tests (built-in and a custom `{% test %}` macro), thresholds, a warning
/// severity and a singular test to the shop project.
fn write_shop_tests(dir: &Path) {
    let files: &[(&str, &str)] = &[
        (
            "models/staging/schema.yml",
            "version: 2\nmodels:\n  - name: stg_customers\n    columns:\n\
             \x20     - name: customer_id\n        tests: [unique, not_null]\n\
             \x20     - name: name\n        tests:\n\
             \x20         - accepted_values:\n              values: ['Ada', 'Bob']\n\
             \x20         - accepted_values:\n              values: ['Ada']\n              config:\n                severity: warn\n",
        ),
        (
            "models/marts/schema.yml",
            "version: 2\nmodels:\n  - name: customer_totals\n    columns:\n\
             \x20     - name: customer_id\n        tests:\n\
             \x20         - relationships:\n              to: ref('stg_customers')\n              field: customer_id\n\
             \x20     - name: total\n        tests:\n\
             \x20         - is_positive:\n              config:\n                error_if: '> 5'\n",
        ),
        (
            "macros/is_positive.sql",
            "{% test is_positive(model, column_name) %}\n\
             select * from {{ model }} where {{ column_name }} <= 0\n\
             {% endtest %}\n",
        ),
        (
            "tests/assert_no_negative_totals.sql",
            "select * from {{ ref('customer_totals') }} where total < 0\n",
        ),
    ];
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

#[test]
fn test_runs_generic_and_singular_tests_with_severities_and_thresholds() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    write_shop_tests(&dir);
    ok(&dir, &["seed"]);
    ok(&dir, &["run"]);

    let o = strata(&dir, &["test"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    assert!(out.contains("Found 7 test(s)"), "{out}");
    assert!(
        out.contains(" PASS unique_stg_customers_customer_id ") && out.contains("[PASS in "),
        "{out}"
    );
    assert!(
        out.contains(" PASS not_null_stg_customers_customer_id "),
        "{out}"
    );
    assert!(
        out.contains(" FAIL 1 accepted_values_stg_customers_name__Ada__Bob ")
            && out.contains("[FAIL 1 in "),
        "{out}"
    );
    // `severity: warn` turns the failure into a warning.
    assert!(
        out.contains(" WARN 2 accepted_values_stg_customers_name__Ada ")
            && out.contains("[WARN 2 in "),
        "{out}"
    );
    // One failing row is over `warn_if` (!= 0) but not `error_if` (> 5).
    assert!(
        out.contains(" WARN 1 is_positive_customer_totals_total "),
        "{out}"
    );
    assert!(
        out.contains(" PASS relationships_customer_totals_e645e9bd108a776788327b0e02f7aaec "),
        "{out}"
    );
    assert!(out.contains(" PASS assert_no_negative_totals "), "{out}");
    assert!(
        out.contains("Completed with 1 error and 2 warnings:"),
        "{out}"
    );
    assert!(
        out.contains(
            "Failure in test accepted_values_stg_customers_name__Ada__Bob (models/staging/schema.yml)\n  Got 1 result, configured to fail if != 0"
        ),
        "{out}"
    );
    assert!(
        out.contains("Warning in test is_positive_customer_totals_total (models/marts/schema.yml)\n  Got 1 result, configured to warn if != 0"),
        "{out}"
    );
    assert!(
        out.contains("Done. PASS=4 WARN=2 ERROR=1 SKIP=0 TOTAL=7"),
        "{out}"
    );
    assert!(
        stderr(&o).contains("1 of 7 test(s) failed, 0 skipped"),
        "{}",
        stderr(&o)
    );

    // Selecting a model runs the tests attached to it: here they pass or warn.
    let out = ok(&dir, &["test", "--select", "customer_totals"]);
    assert!(out.contains("Found 3 test(s)"), "{out}");
    assert!(
        out.contains("Done. PASS=2 WARN=1 ERROR=0 SKIP=0 TOTAL=3"),
        "{out}"
    );
    assert!(
        dir.join("target/run/shop/tests/assert_no_negative_totals.sql")
            .is_file()
    );

    // Fixing the data makes the failing test pass.
    std::fs::write(
        dir.join("seeds/raw_customers.csv"),
        "id,name,zip\n1,Ada,01234\n2,Bob,98765\n",
    )
    .unwrap();
    ok(&dir, &["seed"]);
    ok(&dir, &["run"]);
    let out = ok(&dir, &["test", "--select", "stg_customers"]);
    // The relationships test also tests `stg_customers`, so it comes along.
    assert!(out.contains("Found 5 test(s)"), "{out}");
    assert!(
        out.contains(" PASS accepted_values_stg_customers_name__Ada__Bob "),
        "{out}"
    );
    assert!(
        out.contains("Done. PASS=4 WARN=1 ERROR=0 SKIP=0 TOTAL=5"),
        "{out}"
    );
}

#[test]
fn build_runs_tests_before_dependents_and_a_failure_skips_them() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    write_shop_tests(&dir);

    let o = strata(&dir, &["build"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    assert!(
        out.contains("Found 2 seed(s), 2 model(s), 0 snapshot(s), 7 test(s)"),
        "{out}"
    );
    assert!(
        out.contains(" of 11 OK created seed file analytics_raw.raw_customers"),
        "{out}"
    );
    assert!(
        out.contains("OK created view model analytics.stg_customers"),
        "{out}"
    );
    assert!(
        out.contains(" FAIL 1 accepted_values_stg_customers_name__Ada__Bob "),
        "{out}"
    );
    // The mart waits on its upstream model's tests; it and its own tests are skipped.
    assert!(
        out.contains("SKIP relation analytics.customer_totals"),
        "{out}"
    );
    assert!(
        out.contains("SKIP test is_positive_customer_totals_total"),
        "{out}"
    );
    let fail_at = out.find("FAIL 1 accepted_values").unwrap();
    let skip_at = out.find("SKIP relation analytics.customer_totals").unwrap();
    assert!(fail_at < skip_at, "{out}");
    assert!(
        out.contains("Done. PASS=5 WARN=1 ERROR=1 SKIP=4 TOTAL=11"),
        "{out}"
    );
    let tables = ok(&dir, &["tables", "analytics"]);
    assert!(!tables.contains("customer_totals"), "{tables}");

    // With the data fixed, everything builds.
    std::fs::write(
        dir.join("seeds/raw_customers.csv"),
        "id,name,zip\n1,Ada,01234\n2,Bob,98765\n",
    )
    .unwrap();
    let out = ok(&dir, &["build"]);
    assert!(
        out.contains("OK created table model analytics.customer_totals"),
        "{out}"
    );
    assert!(
        out.contains("Done. PASS=10 WARN=1 ERROR=0 SKIP=0 TOTAL=11"),
        "{out}"
    );
}

/// The project of the incremental tests: one seed of events and three incremental models
/// reading only the rows newer than what they hold.
fn write_events(dir: &Path, rows: &str) {
    let incremental_filter = "{% if is_incremental() %}\n\
         where version > (select max(version) from {{ this }})\n{% endif %}\n";
    let files: Vec<(&str, String)> = vec![
        (
            "dbt_project.yml",
            "name: events\nversion: \"1.0.0\"\nconfig-version: 2\nprofile: events\n".to_string(),
        ),
        ("seeds/raw_events.csv", format!("id,status,version\n{rows}")),
        (
            "models/events_merged.sql",
            format!(
                "{{{{ config(materialized='incremental', unique_key='id', incremental_strategy='merge') }}}}\n\
                 select id, status, version from {{{{ ref('raw_events') }}}}\n{incremental_filter}"
            ),
        ),
        (
            "models/events_replaced.sql",
            format!(
                "{{{{ config(materialized='incremental', unique_key=['id'], incremental_strategy='delete+insert') }}}}\n\
                 select id, status, version from {{{{ ref('raw_events') }}}}\n{incremental_filter}"
            ),
        ),
        (
            "models/events_log.sql",
            format!(
                "{{{{ config(materialized='incremental') }}}}\n\
                 select id, status, version from {{{{ ref('raw_events') }}}}\n{incremental_filter}"
            ),
        ),
    ];
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

fn rows_of(dir: &Path, table: &str) -> String {
    ok(
        dir,
        &[
            "sql",
            &format!("select id, status, version from analytics.{table} order by id, version"),
            "--format",
            "csv",
        ],
    )
}

#[test]
fn incremental_models_merge_append_and_rebuild_on_full_refresh() {
    let (_tmp, dir) = project();
    write_events(&dir, "1,new,1\n2,new,1\n");
    ok(&dir, &["seed"]);
    let out = ok(&dir, &["run"]);
    assert!(out.contains("Found 3 model(s) (3 incremental)"), "{out}");
    assert!(
        out.contains("OK created incremental model analytics.events_merged"),
        "{out}"
    );
    assert!(out.contains("s, 2 rows]"), "{out}");
    let first = "id,status,version\n1,new,1\n2,new,1\n";
    for t in ["events_merged", "events_replaced", "events_log"] {
        assert_eq!(rows_of(&dir, t), first, "{t}");
    }

    // New source rows: order 2 changed, order 3 arrived.
    write_events(&dir, "1,new,1\n2,shipped,2\n3,new,2\n");
    ok(&dir, &["seed"]);
    let out = ok(&dir, &["run"]);
    assert!(
        out.contains("Done. PASS=3 WARN=0 ERROR=0 SKIP=0 TOTAL=3"),
        "{out}"
    );
    let updated = "id,status,version\n1,new,1\n2,shipped,2\n3,new,2\n";
    assert_eq!(rows_of(&dir, "events_merged"), updated);
    assert_eq!(rows_of(&dir, "events_replaced"), updated);
    assert_eq!(
        rows_of(&dir, "events_log"),
        "id,status,version\n1,new,1\n2,new,1\n2,shipped,2\n3,new,2\n"
    );
    let compiled =
        std::fs::read_to_string(dir.join("target/run/events/models/events_merged.sql")).unwrap();
    assert!(
        compiled.starts_with("MERGE INTO analytics.events_merged"),
        "{compiled}"
    );
    assert!(
        compiled.contains("where version > (select max(version) from analytics.events_merged)"),
        "{compiled}"
    );

    // A run with nothing new changes nothing.
    ok(&dir, &["run"]);
    assert_eq!(rows_of(&dir, "events_merged"), updated);
    assert_eq!(
        rows_of(&dir, "events_log"),
        "id,status,version\n1,new,1\n2,new,1\n2,shipped,2\n3,new,2\n"
    );

    // `--full-refresh` rebuilds from the source: order 1, gone upstream, goes.
    write_events(&dir, "2,shipped,2\n3,new,2\n");
    ok(&dir, &["seed"]);
    ok(&dir, &["run", "--select", "events_merged"]);
    assert_eq!(rows_of(&dir, "events_merged"), updated);
    let out = ok(
        &dir,
        &[
            "run",
            "--full-refresh",
            "--select",
            "events_merged",
            "events_log",
        ],
    );
    assert!(
        out.contains("Done. PASS=2 WARN=0 ERROR=0 SKIP=0 TOTAL=2"),
        "{out}"
    );
    let rebuilt = "id,status,version\n2,shipped,2\n3,new,2\n";
    assert_eq!(rows_of(&dir, "events_merged"), rebuilt);
    assert_eq!(rows_of(&dir, "events_log"), rebuilt);
    assert_eq!(rows_of(&dir, "events_replaced"), updated);
}

#[test]
fn an_incremental_merge_without_unique_key_fails_and_keeps_the_table() {
    let (_tmp, dir) = project();
    write_events(&dir, "1,new,1\n");
    ok(&dir, &["seed"]);
    ok(&dir, &["run", "--select", "events_log"]);
    std::fs::write(
        dir.join("models/events_log.sql"),
        "{{ config(materialized='incremental', incremental_strategy='merge') }}\n\
         select id, status, version from {{ ref('raw_events') }}\n",
    )
    .unwrap();
    let o = strata(&dir, &["run", "--select", "events_log"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("incremental_strategy `merge` needs a `unique_key`"),
        "{out}"
    );
    assert_eq!(rows_of(&dir, "events_log"), "id,status,version\n1,new,1\n");
}

/// A project with one seed of people and two snapshots of it: `timestamp` strategy with
/// hard deletes invalidated, and `check` strategy on the name.
fn write_people(dir: &Path, rows: &str) {
    let files: Vec<(&str, String)> = vec![
        (
            "dbt_project.yml",
            "name: people\nversion: \"1.0.0\"\nconfig-version: 2\nprofile: people\n".to_string(),
        ),
        (
            "seeds/raw_people.csv",
            format!("id,name,city,updated_at\n{rows}"),
        ),
        (
            "snapshots/people.sql",
            "{% snapshot people_ts %}\n\
             {{ config(target_schema='snapshots', unique_key='id', strategy='timestamp',\n\
             updated_at='updated_at', invalidate_hard_deletes=True) }}\n\
             select * from {{ ref('raw_people') }}\n\
             {% endsnapshot %}\n\
             {% snapshot people_check %}\n\
             {{ config(target_schema='snapshots', unique_key='id', strategy='check',\n\
             check_cols=['name', 'id']) }}\n\
             select id, name, city from {{ ref('raw_people') }}\n\
             {% endsnapshot %}\n"
                .to_string(),
        ),
    ];
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

fn csv(dir: &Path, sql: &str) -> String {
    ok(dir, &["sql", sql, "--format", "csv"])
}

#[test]
fn snapshots_keep_every_version_with_timestamp_and_check_strategies() {
    let (_tmp, dir) = project();
    write_people(
        &dir,
        "1,Ada,Paris,2024-01-01T00:00:00\n2,Bob,Oslo,2024-01-01T00:00:00\n3,Cy,Rome,2024-01-01T00:00:00\n",
    );
    ok(&dir, &["seed"]);
    let out = ok(&dir, &["snapshot"]);
    assert!(out.contains("Found 2 snapshot(s)"), "{out}");
    assert!(out.contains("OK snapshotted snapshots.people_ts"), "{out}");
    assert!(
        out.contains("Done. PASS=2 WARN=0 ERROR=0 SKIP=0 TOTAL=2"),
        "{out}"
    );
    let first = csv(
        &dir,
        "select id, name, cast(dbt_valid_from as varchar) as valid_from, \
         cast(dbt_updated_at as varchar) as updated, dbt_valid_to is null as current, \
         length(dbt_scd_id) as scd_len from snapshots.people_ts order by id",
    );
    assert_eq!(
        first,
        "id,name,valid_from,updated,current,scd_len\n\
         1,Ada,2024-01-01T00:00:00,2024-01-01T00:00:00,true,32\n\
         2,Bob,2024-01-01T00:00:00,2024-01-01T00:00:00,true,32\n\
         3,Cy,2024-01-01T00:00:00,2024-01-01T00:00:00,true,32\n"
    );

    // Ada renamed (newer updated_at), Bob moves city without a newer timestamp, Cy is gone,
    // Dee is new. `build` runs the seed, then the snapshots.
    write_people(
        &dir,
        "1,Ada L,Paris,2024-02-01T00:00:00\n2,Bob,Bergen,2024-01-01T00:00:00\n4,Dee,Lima,2024-02-01T00:00:00\n",
    );
    let out = ok(&dir, &["build"]);
    assert!(
        out.contains("Found 1 seed(s), 0 model(s), 2 snapshot(s), 0 test(s)"),
        "{out}"
    );
    let ts = csv(
        &dir,
        "select id, name, city, cast(dbt_valid_from as varchar) as valid_from, \
         cast(dbt_valid_to as varchar) as valid_to from snapshots.people_ts \
         where id <> 3 order by id, dbt_valid_from",
    );
    assert_eq!(
        ts,
        "id,name,city,valid_from,valid_to\n\
         1,Ada,Paris,2024-01-01T00:00:00,2024-02-01T00:00:00\n\
         1,Ada L,Paris,2024-02-01T00:00:00,\n\
         2,Bob,Oslo,2024-01-01T00:00:00,\n\
         4,Dee,Lima,2024-02-01T00:00:00,\n"
    );
    // The hard-deleted row is closed at the snapshot time, not removed.
    let gone = csv(
        &dir,
        "select id, name, dbt_valid_to is not null as closed, \
         dbt_valid_to > dbt_valid_from as after_start from snapshots.people_ts where id = 3",
    );
    assert_eq!(gone, "id,name,closed,after_start\n3,Cy,true,true\n");

    // `check` on the name: Ada gets a new version, Bob's city change is not tracked, Cy's
    // row stays current (hard deletes ignored), Dee is inserted.
    let check = csv(
        &dir,
        "select id, name, city, dbt_valid_to is null as current from snapshots.people_check \
         order by id, dbt_valid_from",
    );
    assert_eq!(
        check,
        "id,name,city,current\n1,Ada,Paris,false\n1,Ada L,Paris,true\n2,Bob,Oslo,true\n\
         3,Cy,Rome,true\n4,Dee,Lima,true\n"
    );
    let closed = csv(
        &dir,
        "select count(*) as n from snapshots.people_check o join snapshots.people_check c \
         on o.id = c.id and o.dbt_valid_to = c.dbt_valid_from and c.dbt_valid_to is null",
    );
    assert_eq!(closed, "n\n1\n");

    // A run with no change adds nothing.
    ok(&dir, &["snapshot", "--select", "people_check"]);
    let n = csv(&dir, "select count(*) as n from snapshots.people_check");
    assert_eq!(n, "n\n5\n");

    // Third change: Ada and Bob updated again (newer timestamps), Dee deleted.
    write_people(
        &dir,
        "1,Ada Lovelace,Paris,2024-03-01T00:00:00
2,Bobby,Bergen,2024-03-01T00:00:00
",
    );
    ok(&dir, &["build"]);
    let history = |table: &str| {
        csv(
            &dir,
            &format!(
                "select id, name, dbt_valid_to is null as current from snapshots.{table} \
                 order by id, dbt_valid_from"
            ),
        )
    };
    assert_eq!(
        history("people_ts"),
        "id,name,current\n1,Ada,false\n1,Ada L,false\n1,Ada Lovelace,true\n\
         2,Bob,false\n2,Bobby,true\n3,Cy,false\n4,Dee,false\n"
    );
    assert_eq!(
        history("people_check"),
        "id,name,current\n1,Ada,false\n1,Ada L,false\n1,Ada Lovelace,true\n\
         2,Bob,false\n2,Bobby,true\n3,Cy,true\n4,Dee,true\n"
    );
    // Versions chain without gaps: each closed row ends where its successor starts.
    assert_eq!(
        csv(
            &dir,
            "select cast(dbt_valid_to as varchar) as ended from snapshots.people_ts \
             where name = 'Ada L'"
        ),
        "ended\n2024-03-01T00:00:00\n"
    );
}

#[test]
fn snapshots_take_new_query_columns() {
    let (_tmp, dir) = project();
    write_people(&dir, "1,Ada,Paris,2024-01-01T00:00:00\n");
    ok(&dir, &["build"]);
    // Bob arrives, and the check snapshot now also keeps the city in upper case.
    write_people(
        &dir,
        "1,Ada,Paris,2024-01-01T00:00:00\n2,Bob,Oslo,2024-01-01T00:00:00\n",
    );
    let sql = std::fs::read_to_string(dir.join("snapshots/people.sql"))
        .unwrap()
        .replace(
            "select id, name, city from",
            "select id, name, city, upper(city) as city_code from",
        );
    std::fs::write(dir.join("snapshots/people.sql"), sql).unwrap();
    ok(&dir, &["build"]);
    assert_eq!(
        csv(
            &dir,
            "select id, name, city_code from snapshots.people_check order by id"
        ),
        "id,name,city_code\n1,Ada,\n2,Bob,OSLO\n"
    );
}

#[test]
fn run_results_record_failures_and_result_error_reruns_them() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    std::fs::write(
        dir.join("models/marts/broken.sql"),
        "select no_such_column from {{ ref('stg_customers') }}\n",
    )
    .unwrap();
    ok(&dir, &["seed"]);
    let seeded: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("target/run_results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(seeded["args"]["which"], "seed");
    assert_eq!(seeded["results"][0]["adapter_response"]["rows_affected"], 3);

    let o = strata(&dir, &["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let rr: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("target/run_results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rr["metadata"]["dbt_schema_version"],
        "https://schemas.getdbt.com/dbt/run-results/v6.json"
    );
    let results = rr["results"].as_array().unwrap();
    let statuses: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            (
                r["unique_id"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (
                "model.shop.stg_customers".to_string(),
                "success".to_string()
            ),
            ("model.shop.broken".to_string(), "error".to_string()),
            (
                "model.shop.customer_totals".to_string(),
                "success".to_string()
            ),
        ]
    );
    let broken = &results[1];
    assert!(
        broken["message"]
            .as_str()
            .unwrap()
            .contains("no_such_column"),
        "{broken}"
    );
    let totals = &results[2];
    assert_eq!(totals["adapter_response"]["rows_affected"], 3);
    assert_eq!(totals["message"], "CREATE TABLE 3");
    assert!(totals["execution_time"].as_f64().unwrap() >= 0.0);
    assert_eq!(totals["timing"][1]["name"], "execute");

    // Fixed, then only the failed model runs again.
    std::fs::write(
        dir.join("models/marts/broken.sql"),
        "select customer_id from {{ ref('stg_customers') }}\n",
    )
    .unwrap();
    let out = ok(&dir, &["run", "--select", "result:error"]);
    assert!(out.contains("Found 1 model(s) (1 table)"), "{out}");
    assert!(
        out.contains("1 of 1 OK created table model analytics.broken"),
        "{out}"
    );
    let rr: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("target/run_results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(rr["results"].as_array().unwrap().len(), 1);
    assert_eq!(rr["results"][0]["unique_id"], "model.shop.broken");
    assert_eq!(rr["results"][0]["status"], "success");
    assert_eq!(
        csv(&dir, "select count(*) as n from analytics.broken"),
        "n\n3\n"
    );
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn docs_generate_writes_a_dbt_catalog_with_columns_types_and_stats() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    ok(&dir, &["seed"]);
    ok(&dir, &["run"]);
    // A declared source the lake holds is described too, one it lacks is left out.
    std::fs::write(
        dir.join("models/sources.yml"),
        "version: 2\nsources:\n  - name: app\n    schema: raw\n    tables:\n      - name: events\n      - name: missing\n",
    )
    .unwrap();
    ok(&dir, &["sql", "create table raw.events as select 1 as id"]);

    let out = ok(&dir, &["docs", "generate"]);
    assert!(out.contains("Building catalog"), "{out}");
    assert!(out.contains("Catalog written to"), "{out}");
    assert!(dir.join("target/manifest.json").is_file());
    assert!(
        dir.join("target/compiled/shop/models/marts/customer_totals.sql")
            .is_file()
    );
    let catalog = read_json(&dir.join("target/catalog.json"));
    assert_eq!(
        catalog["metadata"]["dbt_schema_version"],
        "https://schemas.getdbt.com/dbt/catalog/v1.json"
    );
    let manifest = read_json(&dir.join("target/manifest.json"));
    assert_eq!(
        catalog["metadata"]["invocation_id"],
        manifest["metadata"]["invocation_id"]
    );
    let nodes = catalog["nodes"].as_object().unwrap();
    let mut ids: Vec<&str> = nodes.keys().map(String::as_str).collect();
    ids.sort();
    // Built relations only: the ephemeral model has none.
    assert_eq!(
        ids,
        vec![
            "model.shop.customer_totals",
            "model.shop.stg_customers",
            "seed.shop.raw_customers",
            "seed.shop.raw_orders",
        ]
    );
    let totals = &nodes["model.shop.customer_totals"];
    assert_eq!(totals["unique_id"], "model.shop.customer_totals");
    assert_eq!(totals["metadata"]["type"], "BASE TABLE");
    assert_eq!(totals["metadata"]["schema"], "analytics");
    assert_eq!(totals["metadata"]["name"], "customer_totals");
    assert_eq!(totals["stats"]["row_count"]["value"], 3);
    assert_eq!(totals["stats"]["row_count"]["include"], true);
    assert!(totals["stats"]["bytes"]["value"].as_u64().unwrap() > 0);
    let cols = totals["columns"].as_object().unwrap();
    let mut by_index: Vec<(u64, &str)> = cols
        .values()
        .map(|c| (c["index"].as_u64().unwrap(), c["name"].as_str().unwrap()))
        .collect();
    by_index.sort();
    assert_eq!(
        by_index,
        vec![
            (1, "customer_id"),
            (2, "name"),
            (3, "zip"),
            (4, "orders"),
            (5, "total")
        ]
    );
    assert_eq!(cols["orders"]["type"], "BIGINT");
    assert_eq!(cols["name"]["type"], "VARCHAR");
    assert!(cols["name"]["comment"].is_null());

    let view = &nodes["model.shop.stg_customers"];
    assert_eq!(view["metadata"]["type"], "VIEW");
    assert_eq!(view["stats"]["has_stats"]["value"], false);
    assert!(view["stats"].get("row_count").is_none());
    let seed = &nodes["seed.shop.raw_customers"];
    assert_eq!(seed["metadata"]["schema"], "analytics_raw");
    assert_eq!(seed["columns"]["id"]["type"], "INTEGER");
    assert_eq!(seed["columns"]["zip"]["type"], "VARCHAR");
    assert_eq!(seed["stats"]["row_count"]["value"], 3);
    let sources: Vec<&String> = catalog["sources"].as_object().unwrap().keys().collect();
    assert_eq!(sources, vec!["source.shop.app.events"]);
    assert_eq!(
        catalog["sources"]["source.shop.app.events"]["columns"]["id"]["type"],
        "BIGINT"
    );

    let rr = read_json(&dir.join("target/run_results.json"));
    assert_eq!(rr["args"]["which"], "generate");
    assert_eq!(
        rr["metadata"]["invocation_id"],
        catalog["metadata"]["invocation_id"]
    );
    assert!(
        rr["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["unique_id"] == "model.shop.customer_totals" && r["status"] == "success")
    );

    // Without compiling, the manifest keeps the raw code only.
    std::fs::remove_dir_all(dir.join("target")).unwrap();
    ok(&dir, &["docs", "generate", "--no-compile"]);
    assert!(dir.join("target/catalog.json").is_file());
    assert!(!dir.join("target/compiled").exists());
}

#[test]
fn hooks_run_around_models_and_the_whole_run() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    std::fs::write(
        dir.join("dbt_project.yml"),
        "name: shop\nversion: \"1.0.0\"\nconfig-version: 2\nprofile: shop\n\
         on-run-start:\n  - \"create table if not exists analytics.audit (event varchar, relation varchar)\"\n\
         on-run-end: \"insert into analytics.audit values ('end', 'run')\"\n\
         models:\n  shop:\n    +materialized: view\n    marts:\n      +materialized: table\n\
         \x20     +post-hook: \"insert into analytics.audit select 'built', '{{ this }}'\"\n\
         seeds:\n  shop:\n    +schema: raw\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("models/marts/customer_totals.sql"),
        "{{ config(pre_hook=\"insert into analytics.audit values ('pre', '{{ this.identifier }}')\",\n\
         post_hook=[\"insert into analytics.audit select 'rows', cast(count(*) as varchar) from {{ this }}\"]) }}\n\
         select c.customer_id, c.name from {{ ref('stg_customers') }} c\n",
    )
    .unwrap();
    ok(&dir, &["seed"]);
    let out = ok(&dir, &["run"]);
    assert!(
        out.contains("Done. PASS=2 WARN=0 ERROR=0 SKIP=0 TOTAL=2"),
        "{out}"
    );
    // Folder hooks come before the model's own (dbt appends hook lists); the pre-hook runs
    // before the table exists, the post-hooks see its rows.
    assert_eq!(
        csv(
            &dir,
            "select event, relation from analytics.audit order by case event \
             when 'pre' then 1 when 'built' then 2 when 'rows' then 3 else 4 end"
        ),
        "event,relation\npre,customer_totals\nbuilt,analytics.customer_totals\nrows,3\nend,run\n"
    );
    // A failing hook fails its model.
    std::fs::write(
        dir.join("models/marts/customer_totals.sql"),
        "{{ config(post_hook='insert into analytics.no_such_table values (1)') }}\n\
         select 1 as x\n",
    )
    .unwrap();
    let o = strata(&dir, &["run", "--select", "customer_totals"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("ERROR creating table model analytics.customer_totals"),
        "{out}"
    );
    assert!(out.contains("post-hook 2"), "{out}");
}

/// A mart counting orders per customer, with two unit tests: one right, one wrong.
fn write_unit_tests(dir: &Path) {
    let files: &[(&str, &str)] = &[
        (
            "models/marts/customer_orders.sql",
            "select c.customer_id, c.name, count(o.id) as orders\n\
             from {{ ref('stg_customers') }} c\n\
             left join {{ ref('raw_orders') }} o on o.customer_id = c.customer_id\n\
             group by 1, 2\n",
        ),
        (
            "models/marts/unit_tests.yml",
            "unit_tests:\n\
             \x20 - name: counts_orders\n    model: customer_orders\n    given:\n\
             \x20     - input: ref('stg_customers')\n        rows:\n\
             \x20         - {customer_id: 1, name: Ada}\n\
             \x20         - {customer_id: 2, name: Bob}\n\
             \x20     - input: ref('raw_orders')\n        rows:\n\
             \x20         - {id: 1, customer_id: 1}\n\
             \x20         - {id: 2, customer_id: 1}\n\
             \x20   expect:\n      rows:\n\
             \x20       - {customer_id: 2, orders: 0}\n\
             \x20       - {customer_id: 1, orders: 2}\n\
             \x20 - name: wrong_count\n    model: customer_orders\n    given:\n\
             \x20     - input: ref('stg_customers')\n        format: csv\n\
             \x20       rows: |\n          customer_id,name\n          1,Ada\n\
             \x20     - input: ref('raw_orders')\n        rows: []\n\
             \x20   expect:\n      rows:\n\
             \x20       - {customer_id: 1, orders: 1}\n",
        ),
    ];
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

#[test]
fn unit_tests_compare_rows_and_a_failure_skips_the_model_in_build() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    write_unit_tests(&dir);
    ok(&dir, &["seed"]);

    let o = strata(&dir, &["test", "--select", "test_type:unit"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    assert!(out.contains("Found 2 test(s)"), "{out}");
    assert!(
        out.contains(" of 2 PASS customer_orders::counts_orders ....."),
        "{out}"
    );
    assert!(
        out.contains(" of 2 FAIL 2 customer_orders::wrong_count ....."),
        "{out}"
    );
    assert!(
        out.contains(
            "Failure in unit_test wrong_count (models/marts/unit_tests.yml)\n  \
             actual differs from expected:\n  \n  \
             @@  | customer_id | orders\n  \
             +++ | 1           | 0\n  \
             --- | 1           | 1\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("Done. PASS=1 WARN=0 ERROR=1 SKIP=0 TOTAL=2"),
        "{out}"
    );
    // Data tests are not unit tests.
    let out = ok(&dir, &["test", "--select", "test_type:data"]);
    assert!(out.contains("Found 0 test(s)"), "{out}");

    // In `build`, unit tests run before their model; the failing one skips it. One thread
    // keeps the completion order (and so the output order) deterministic.
    let o = strata(&dir, &["build", "--threads", "1"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    let pass_at = out.find("PASS customer_orders::counts_orders").expect(&out);
    let view_at = out
        .find("OK created view model analytics.stg_customers")
        .expect(&out);
    let skip_at = out
        .find("SKIP relation analytics.customer_orders")
        .expect(&out);
    assert!(view_at < pass_at && pass_at < skip_at, "{out}");
    assert!(
        out.contains("OK created table model analytics.customer_totals"),
        "{out}"
    );

    // Without the wrong test, the model builds after its unit test.
    let yml = dir.join("models/marts/unit_tests.yml");
    let text = std::fs::read_to_string(&yml).unwrap();
    let keep = &text[..text.find("  - name: wrong_count").unwrap()];
    std::fs::write(&yml, keep).unwrap();
    let out = ok(&dir, &["build", "--select", "customer_orders"]);
    assert!(
        out.contains("1 of 2 PASS customer_orders::counts_orders"),
        "{out}"
    );
    assert!(
        out.contains("2 of 2 OK created table model analytics.customer_orders"),
        "{out}"
    );
}

#[test]
fn an_enforced_contract_mismatch_fails_the_model_and_keeps_the_table() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    std::fs::write(
        dir.join("models/marts/contract.yml"),
        "version: 2\nmodels:\n  - name: customer_totals\n    config:\n      contract: {enforced: true}\n\
         \x20   columns:\n\
         \x20     - {name: customer_id, data_type: integer}\n\
         \x20     - {name: name, data_type: varchar}\n\
         \x20     - {name: zip, data_type: varchar}\n\
         \x20     - {name: orders, data_type: bigint}\n\
         \x20     - {name: total, data_type: double}\n",
    )
    .unwrap();
    ok(&dir, &["seed"]);
    let out = ok(&dir, &["run"]);
    assert!(
        out.contains("OK created table model analytics.customer_totals"),
        "{out}"
    );

    // The model now returns `orders` as text and drops `total`.
    std::fs::write(
        dir.join("models/marts/customer_totals.sql"),
        "select c.customer_id, c.name, c.zip, cast(count(o.order_id) as varchar) as orders,\n\
         max(o.ordered_on) as last_order\n\
         from {{ ref('stg_customers') }} c\n\
         left join {{ ref('stg_orders') }} o on o.customer_id = c.customer_id\n\
         group by 1, 2, 3\n",
    )
    .unwrap();
    let o = strata(&dir, &["run", "--select", "customer_totals"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    assert!(
        out.contains("1 of 1 ERROR creating table model analytics.customer_totals"),
        "{out}"
    );
    assert!(
        out.contains("this model has an enforced contract that failed."),
        "{out}"
    );
    assert!(
        out.contains(
            "  | column_name | definition_type | contract_type | mismatch_reason       |\n  \
             | ----------- | --------------- | ------------- | --------------------- |\n  \
             | orders      | VARCHAR         | BIGINT        | data type mismatch    |\n  \
             | total       |                 | DOUBLE        | missing in definition |\n  \
             | last_order  | DATE            |               | missing in contract   |\n"
        ),
        "{out}"
    );
    // The old table is untouched.
    assert_eq!(
        csv(
            &dir,
            "select orders, total from analytics.customer_totals where customer_id = 1"
        ),
        "orders,total\n2,19.75\n"
    );
}

/// A fan-out project: one staging view, five independent tables on it, and a mart joining
/// two of them.
fn write_fan_out(dir: &Path) {
    write_shop(dir);
    for i in 1..=5 {
        std::fs::write(
            dir.join(format!("models/marts/part_{i}.sql")),
            format!(
                "select customer_id, name, {i} as part from {{{{ ref('stg_customers') }}}} where customer_id <= {i}\n"
            ),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("models/marts/joined.sql"),
        "select a.customer_id, a.part + b.part as parts from {{ ref('part_2') }} a\n\
         join {{ ref('part_3') }} b on a.customer_id = b.customer_id\n",
    )
    .unwrap();
}

#[test]
fn threads_run_independent_models_concurrently_after_their_parents() {
    let (_tmp, dir) = project();
    write_fan_out(&dir);
    ok(&dir, &["seed"]);

    let out = ok(&dir, &["run", "--threads", "4"]);
    assert!(
        out.contains("Done. PASS=8 WARN=0 ERROR=0 SKIP=0 TOTAL=8"),
        "{out}"
    );
    for i in 1..=8 {
        assert!(out.contains(&format!("{i} of 8 OK created ")), "{out}");
    }
    let parallel = csv(
        &dir,
        "select customer_id, parts from analytics.joined order by customer_id",
    );
    assert_eq!(parallel, "customer_id,parts\n1,5\n2,5\n");
    assert_eq!(
        csv(&dir, "select count(*) as n from analytics.part_4"),
        "n\n3\n"
    );

    // A child never starts before its parents completed.
    let rr = read_json(&dir.join("target/run_results.json"));
    ok(&dir, &["compile"]);
    let manifest = read_json(&dir.join("target/manifest.json"));
    let results = rr["results"].as_array().unwrap();
    assert_eq!(results.len(), 8);
    let timing = |id: &str, phase: usize, key: &str| -> String {
        let r = results.iter().find(|r| r["unique_id"] == id).unwrap();
        r["timing"][phase][key].as_str().unwrap().to_string()
    };
    let mut checked = 0;
    for r in results {
        let id = r["unique_id"].as_str().unwrap();
        let started = timing(id, 1, "started_at");
        for parent in manifest["parent_map"][id].as_array().unwrap() {
            let parent = parent.as_str().unwrap();
            if results.iter().any(|r| r["unique_id"] == parent) {
                let parent_done = timing(parent, 1, "completed_at");
                assert!(
                    started >= parent_done,
                    "{id} started at {started}, before {parent} completed at {parent_done}"
                );
                checked += 1;
            }
        }
    }
    // stg_customers → 5 parts and customer_totals; part_2 and part_3 → joined.
    assert_eq!(checked, 8);

    // One thread gives the same tables.
    ok(&dir, &["run", "--threads", "1"]);
    assert_eq!(
        csv(
            &dir,
            "select customer_id, parts from analytics.joined order by customer_id"
        ),
        parallel
    );
    let o = strata(&dir, &["run", "--threads", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn fail_fast_skips_everything_not_yet_started() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    std::fs::write(
        dir.join("models/marts/broken.sql"),
        "select no_such_column from {{ ref('stg_customers') }}\n",
    )
    .unwrap();
    ok(&dir, &["seed"]);

    let o = strata(&dir, &["run", "--threads", "1", "--fail-fast"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    assert!(
        out.contains("ERROR creating table model analytics.broken"),
        "{out}"
    );
    assert!(
        out.contains("SKIP relation analytics.customer_totals"),
        "{out}"
    );
    assert!(
        out.contains("Done. PASS=1 WARN=0 ERROR=1 SKIP=1 TOTAL=3"),
        "{out}"
    );
    let rr = read_json(&dir.join("target/run_results.json"));
    let skipped: Vec<&str> = rr["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "skipped")
        .map(|r| r["unique_id"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, vec!["model.shop.customer_totals"]);
    let tables = ok(&dir, &["tables", "analytics"]);
    assert!(!tables.contains("customer_totals"), "{tables}");

    // Without it, the independent model still runs.
    let o = strata(&dir, &["run", "--threads", "1"]);
    let out = stdout(&o);
    assert!(
        out.contains("Done. PASS=2 WARN=0 ERROR=1 SKIP=0 TOTAL=3"),
        "{out}"
    );
}

#[test]
fn source_freshness_passes_warns_and_errors_by_max_loaded_at() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    std::fs::write(
        dir.join("models/sources.yml"),
        "version: 2\nsources:\n  - name: shop\n    schema: raw\n    loaded_at_field: loaded_at\n\
         \x20   freshness:\n      warn_after: {count: 1, period: hour}\n      error_after: {count: 1, period: day}\n\
         \x20   tables:\n      - name: fresh\n      - name: aging\n      - name: stale\n\
         \x20     - name: unchecked\n        freshness: null\n",
    )
    .unwrap();
    ok(
        &dir,
        &[
            "sql",
            "create table raw.fresh as select now() as loaded_at; \
             create table raw.aging as select now() - interval '3 hours' as loaded_at; \
             create table raw.stale as select cast('2020-01-01 00:00:00' as timestamp) as loaded_at; \
             create table raw.unchecked as select now() as loaded_at",
        ],
    );
    let o = strata(&dir, &["source", "freshness"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    assert!(out.contains("Found 3 source(s)"), "{out}");
    assert!(
        out.contains("1 of 3 WARN freshness of shop.aging ......"),
        "{out}"
    );
    assert!(
        out.contains("2 of 3 PASS freshness of shop.fresh ......"),
        "{out}"
    );
    assert!(
        out.contains("3 of 3 ERROR STALE freshness of shop.stale ......"),
        "{out}"
    );
    assert!(out.contains("[ERROR STALE in "), "{out}");
    assert!(
        out.contains("Failure in source shop.stale\n  Source shop.stale is stale: last loaded "),
        "{out}"
    );
    assert!(
        out.contains("Done. PASS=1 WARN=1 ERROR=1 SKIP=0 TOTAL=3"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("target/sources.json")).unwrap())
            .unwrap();
    let statuses: Vec<(&str, &str)> = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["unique_id"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("source.shop.shop.aging", "warn"),
            ("source.shop.shop.fresh", "pass"),
            ("source.shop.shop.stale", "error"),
        ]
    );
    assert_eq!(
        json["results"][1]["criteria"]["error_after"],
        serde_json::json!({"count": 1, "period": "day"})
    );

    // Selecting only the fresh table passes.
    let out = ok(
        &dir,
        &["source", "freshness", "--select", "source:shop.fresh"],
    );
    assert!(
        out.contains("Done. PASS=1 WARN=0 ERROR=0 SKIP=0 TOTAL=1"),
        "{out}"
    );
}

#[test]
fn lineage_traces_model_columns_upstream_and_downstream() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    ok(&dir, &["seed"]);
    ok(&dir, &["run"]);

    // `run` records each built model's lineage in the metadata store, by node id.
    let db = dir.join(".strata/strata.db");
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print('\\n'.join(f'{p} {c} <- {u}.{uc} {k}' for p,c,u,uc,k in c.execute(\"select position, column_name, upstream_node, upstream_column, kind from column_lineage where node = 'model.shop.customer_totals' order by position, upstream_node, upstream_column\")))",
            db.to_str().unwrap(),
        ])
        .output()
        .expect("python3 runs");
    let recorded = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        recorded,
        "-1 None <- model.shop.stg_customers.customer_id filtered_by\n\
         -1 None <- seed.shop.raw_orders.customer_id filtered_by\n\
         0 customer_id <- model.shop.stg_customers.customer_id copied\n\
         1 name <- model.shop.stg_customers.name copied\n\
         2 zip <- model.shop.stg_customers.zip copied\n\
         3 orders <- seed.shop.raw_orders.id aggregated\n\
         4 total <- seed.shop.raw_orders.amount aggregated\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let out = ok(&dir, &["lineage", "customer_totals"]);
    for line in [
        "customer_totals.customer_id\n  ← stg_customers.customer_id (copied)\n    ← raw_customers.id (copied)\n",
        "customer_totals.orders\n  ← raw_orders.id (aggregated)\n",
        "customer_totals.total\n  ← raw_orders.amount (aggregated)\n",
        "filtered by:\n  raw_orders.customer_id\n  stg_customers.customer_id\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }

    let out = ok(&dir, &["lineage", "stg_customers.name"]);
    assert!(
        out.contains("stg_customers.name\n  ← raw_customers.name (copied)\n  used by:\n    → customer_totals.name (copied)\n"),
        "{out}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["--json", "lineage", "customer_totals.total"])).unwrap();
    assert_eq!(json["model"], "customer_totals");
    assert_eq!(
        json["columns"],
        serde_json::json!([{
            "column": "total",
            "upstream": [{"node": "raw_orders", "column": "amount", "kind": "aggregated"}],
            "downstream": [],
        }])
    );

    let o = strata(&dir, &["lineage", "customer_totals.nope"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("model `customer_totals` has no column `nope`"),
        "{err}"
    );
}

#[test]
fn store_failures_keeps_each_tests_failing_rows_in_the_audit_schema() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    write_shop_tests(&dir);
    std::fs::write(
        dir.join("tests/assert_no_negative_totals.sql"),
        "{{ config(store_failures=true) }}\n\
         select * from {{ ref('customer_totals') }} where total < 0\n",
    )
    .unwrap();
    ok(&dir, &["seed"]);
    ok(&dir, &["run"]);

    // Only the test configured with `store_failures` keeps its rows (none: it passes).
    let o = strata(&dir, &["test"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let tables = ok(&dir, &["tables", "analytics_dbt_test__audit"]);
    assert!(tables.contains("assert_no_negative_totals"), "{tables}");
    assert!(!tables.contains("accepted_values"), "{tables}");
    assert_eq!(
        ok(
            &dir,
            &[
                "sql",
                "select count(*) as n from analytics_dbt_test__audit.assert_no_negative_totals",
                "--format",
                "csv"
            ]
        ),
        "n\n0\n"
    );

    // `--store-failures` keeps every test's, and the failure says where to look.
    let o = strata(&dir, &["test", "--store-failures"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let audit = "analytics_dbt_test__audit.accepted_values_stg_customers_name__ada__bob";
    assert!(
        out.contains(&format!("See test failures:\n    select * from {audit}")),
        "{out}"
    );
    assert_eq!(
        ok(
            &dir,
            &[
                "sql",
                &format!("select value_field, n_records from {audit}"),
                "--format",
                "csv"
            ]
        ),
        "value_field,n_records\nCy,1\n"
    );
}

#[test]
fn sql_errors_point_at_the_model_files_line() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    ok(&dir, &["seed"]);
    std::fs::write(
        dir.join("models/marts/customer_totals.sql"),
        "{{ config(materialized='table') }}\n\
         select c.customer_id,\n\
         \x20   sum(o.amout) as total\n\
         from {{ ref('stg_customers') }} c\n\
         left join {{ ref('stg_orders') }} o on o.customer_id = c.customer_id\n\
         group by 1\n",
    )
    .unwrap();
    let o = strata(&dir, &["run"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    for line in [
        "models/marts/customer_totals.sql:3:9: No field named o.amout. Did you mean 'o.amount'?",
        "    3 |     sum(o.amout) as total\n      |         ^\n",
        "(compiled SQL: target/run/shop/models/marts/customer_totals.sql:6:9)",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }

    // A syntax error too, past a line of Jinja that renders differently.
    std::fs::write(
        dir.join("models/marts/customer_totals.sql"),
        "{{ config(materialized='table') }}\n\
         select c.customer_id\n\
         from {{ ref('stg_customers') }} c\n\
         where c.customer_id >> 1 and and 2\n",
    )
    .unwrap();
    let o = strata(&dir, &["run"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("models/marts/customer_totals.sql:4:"), "{out}");
    assert!(
        out.contains("    4 | where c.customer_id >> 1 and and 2"),
        "{out}"
    );
}

#[test]
fn show_previews_a_model_or_an_inline_query() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    ok(&dir, &["seed"]);
    // The model need not be built: its compiled query runs over its parents.
    ok(&dir, &["run", "--select", "stg_customers"]);
    let out = ok(
        &dir,
        &["show", "--select", "customer_totals", "--limit", "10"],
    );
    assert!(out.contains("Previewing node 'customer_totals':"), "{out}");
    assert!(out.contains("Ada") && out.contains("19.75"), "{out}");

    let out = ok(
        &dir,
        &[
            "show",
            "--inline",
            "select name from {{ ref('stg_customers') }} order by name",
            "--limit",
            "2",
        ],
    );
    assert!(out.contains("Previewing inline query:"), "{out}");
    assert!(
        out.contains("Ada") && out.contains("Bob") && !out.contains("Cy"),
        "{out}"
    );

    let o = strata(&dir, &["show"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("`strata show` needs `--select <model>` or `--inline"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn query_time_jinja_runs_queries_while_building() {
    let (_tmp, dir) = project();
    write_shop(&dir);
    let files: &[(&str, &str)] = &[
        (
            "seeds/raw_payments.csv",
            "id,order_id,method,amount\n1,10,card,10\n2,10,cash,2.5\n3,11,card,7.25\n4,12,voucher,100\n",
        ),
        // dbt_utils' pivot idiom: one column per distinct value found by a query.
        (
            "models/marts/payments_pivot.sql",
            "{% set methods_query %}select distinct method from {{ ref('raw_payments') }} order by 1{% endset %}\n\
             {% set results = run_query(methods_query) %}\n\
             {% if execute %}{% set methods = results.columns[0].values() %}{% else %}{% set methods = [] %}{% endif %}\n\
             select order_id,\n\
             {% for m in methods %}  sum(case when method = '{{ m }}' then amount else 0 end) as {{ m }}_amount{% if not loop.last %},{% endif %}\n\
             {% endfor %}\
             from {{ ref('raw_payments') }}\ngroup by 1\n",
        ),
        // Every column but one, and a value read through `statement` / `load_result`.
        (
            "models/marts/payments_slim.sql",
            "{% set cols = adapter.get_columns_in_relation(ref('raw_payments')) %}\n\
             {% call statement('stats', fetch_result=True) %}select count(*) as n, max(method) as top from {{ ref('raw_payments') }}{% endcall %}\n\
             {% if execute %}{% set stats = load_result('stats') %}{% set n = stats['data'][0][0] %}{% set top = stats['table'].rows[0]['top'] %}{% else %}{% set n = 0 %}{% set top = '' %}{% endif %}\n\
             select {% for c in cols if c.name != 'amount' %}{{ c.quoted }}, {% endfor %}{{ n }} as payments, '{{ top }}' as top_method\n\
             from {{ ref('raw_payments') }}\n",
        ),
    ];
    for (path, text) in files {
        std::fs::write(dir.join(path), text).unwrap();
    }
    ok(&dir, &["seed"]);
    let out = ok(&dir, &["run"]);
    assert!(
        out.contains("Done. PASS=4 WARN=0 ERROR=0 SKIP=0 TOTAL=4"),
        "{out}"
    );
    assert_eq!(
        csv(
            &dir,
            "select * from analytics.payments_pivot order by order_id"
        ),
        "order_id,card_amount,cash_amount,voucher_amount\n\
         10,10.0,2.5,0.0\n11,7.25,0.0,0.0\n12,0.0,0.0,100.0\n"
    );
    assert_eq!(
        csv(&dir, "select * from analytics.payments_slim order by id"),
        "id,order_id,method,payments,top_method\n\
         1,10,card,4,voucher\n2,10,cash,4,voucher\n3,11,card,4,voucher\n4,12,voucher,4,voucher\n"
    );
    // The compiled SQL the run executed holds the values the queries returned.
    let compiled =
        std::fs::read_to_string(dir.join("target/run/shop/models/marts/payments_pivot.sql"))
            .unwrap();
    assert!(compiled.contains("as voucher_amount"), "{compiled}");

    // `strata compile` has no database connection: a model that queries says so.
    let o = strata(&dir, &["compile"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("run_query needs a database connection"),
        "{}",
        stderr(&o)
    );
}
