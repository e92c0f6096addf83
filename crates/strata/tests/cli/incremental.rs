//! Incremental models beyond the basic strategies: `on_schema_change` in its four settings
//! and `insert_overwrite` by partition.

use std::path::Path;

use crate::{ok, project, stdout, strata};

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// A project with a seed of events and one incremental model per `on_schema_change`
/// setting, each selecting `columns` from the seed.
fn write_models(dir: &Path, rows: &str, columns: &str) {
    write(
        dir,
        &[
            (
                "dbt_project.yml",
                "name: evolve\nversion: \"1.0.0\"\nconfig-version: 2\nprofile: evolve\n",
            ),
            (
                "seeds/raw_events.csv",
                &format!("id,kind,amount,note\n{rows}"),
            ),
        ],
    );
    for setting in ["ignore", "fail", "append_new_columns", "sync_all_columns"] {
        write(
            dir,
            &[(
                &format!("models/events_{setting}.sql"),
                &format!(
                    "{{{{ config(materialized='incremental', unique_key='id', on_schema_change='{setting}') }}}}\n\
                     select {columns} from {{{{ ref('raw_events') }}}}\n\
                     {{% if is_incremental() %}}where id > (select max(id) from {{{{ this }}}}){{% endif %}}\n"
                ),
            )],
        );
    }
}

fn csv(dir: &Path, sql: &str) -> String {
    ok(dir, &["sql", sql, "--format", "csv"])
}

#[test]
fn on_schema_change_ignores_fails_appends_or_syncs_columns() {
    let (_tmp, dir) = project();
    write_models(&dir, "1,a,10,x\n2,b,20,y\n", "id, kind, amount");
    ok(&dir, &["seed"]);
    ok(&dir, &["run"]);

    // The query drops `kind`, adds `note` and turns `amount` into text.
    write_models(
        &dir,
        "1,a,10,x\n2,b,20,y\n3,c,30,z\n",
        "id, cast(amount as varchar) as amount, note",
    );
    ok(&dir, &["seed"]);
    let o = strata(&dir, &["run"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("Done. PASS=3 WARN=0 ERROR=1 SKIP=0 TOTAL=4"),
        "{out}"
    );
    for line in [
        "the columns of the query and of analytics.events_fail differ, and on_schema_change is `fail`:",
        "new in the query: note VARCHAR",
        "gone from the query: kind VARCHAR",
        "retyped: amount BIGINT -> VARCHAR",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }

    // ignore: the table keeps its columns; `kind` is NULL for the new row, and `amount`
    // still holds numbers.
    assert_eq!(
        csv(&dir, "select * from analytics.events_ignore order by id"),
        "id,kind,amount\n1,a,10\n2,b,20\n3,,30\n"
    );
    // fail: untouched.
    assert_eq!(
        csv(&dir, "select * from analytics.events_fail order by id"),
        "id,kind,amount\n1,a,10\n2,b,20\n"
    );
    // append_new_columns: `note` added (NULL in old rows), `kind` kept, `amount` keeps its type.
    assert_eq!(
        csv(
            &dir,
            "select id, kind, amount, note, arrow_typeof(amount) as t from analytics.events_append_new_columns order by id"
        ),
        "id,kind,amount,note,t\n1,a,10,,Int64\n2,b,20,,Int64\n3,,30,z,Int64\n"
    );
    // sync_all_columns: exactly the query's columns, `amount` now text.
    assert_eq!(
        csv(
            &dir,
            "select *, arrow_typeof(amount) as t from analytics.events_sync_all_columns order by id"
        ),
        "id,amount,note,t\n1,10,,Utf8View\n2,20,,Utf8View\n3,30,z,Utf8View\n"
    );
}

#[test]
fn insert_overwrite_replaces_the_partitions_the_new_rows_hold() {
    let (_tmp, dir) = project();
    let write_day = |rows: &str| {
        write(
            &dir,
            &[
                (
                    "dbt_project.yml",
                    "name: daily\nversion: \"1.0.0\"\nconfig-version: 2\nprofile: daily\n",
                ),
                ("seeds/raw_sales.csv", &format!("day,store,amount\n{rows}")),
                (
                    "models/daily_sales.sql",
                    "{{ config(materialized='incremental', incremental_strategy='insert_overwrite',\n\
                     partition_by=['day']) }}\n\
                     select day, store, sum(amount) as amount from {{ ref('raw_sales') }}\n\
                     {% if is_incremental() %}where day >= (select max(day) from {{ this }}){% endif %}\n\
                     group by day, store\n",
                ),
            ],
        )
    };
    write_day("2024-01-01,north,10\n2024-01-01,south,5\n2024-01-02,north,7\n");
    ok(&dir, &["seed"]);
    ok(&dir, &["run"]);
    // Day 2 is restated (south arrives, north changes) and day 3 arrives; day 1 in the
    // source changed too, but it is outside the new rows' partitions and stays as built.
    write_day(
        "2024-01-01,north,99\n2024-01-01,south,5\n2024-01-02,north,8\n2024-01-02,south,1\n2024-01-03,north,4\n",
    );
    ok(&dir, &["seed"]);
    let out = ok(&dir, &["run"]);
    assert!(
        out.contains("Done. PASS=1 WARN=0 ERROR=0 SKIP=0 TOTAL=1"),
        "{out}"
    );
    assert_eq!(
        csv(
            &dir,
            "select day, store, amount from analytics.daily_sales order by day, store"
        ),
        "day,store,amount\n2024-01-01,north,10\n2024-01-01,south,5\n2024-01-02,north,8\n\
         2024-01-02,south,1\n2024-01-03,north,4\n"
    );

    // Without `partition_by` the strategy says what it needs.
    std::fs::write(
        dir.join("models/daily_sales.sql"),
        "{{ config(materialized='incremental', incremental_strategy='insert_overwrite') }}\n\
         select day, store, amount from {{ ref('raw_sales') }}\n",
    )
    .unwrap();
    let o = strata(&dir, &["run"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("incremental_strategy `insert_overwrite` needs a `partition_by`"),
        "{}",
        stdout(&o)
    );
}

/// A seed of timestamped events (with `event_time`) and a daily microbatch model over it.
fn write_microbatch(dir: &Path, rows: &str) {
    write(
        dir,
        &[
            (
                "dbt_project.yml",
                "name: batches\nversion: \"1.0.0\"\nconfig-version: 2\nprofile: batches\n",
            ),
            (
                "seeds/raw_events.csv",
                &format!("id,event_at,amount\n{rows}"),
            ),
            (
                "seeds/seeds.yml",
                "version: 2\nseeds:\n  - name: raw_events\n    config:\n      event_time: event_at\n\
                 \x20     column_types:\n        event_at: timestamp\n",
            ),
            (
                "models/daily.sql",
                "{{ config(materialized='incremental', incremental_strategy='microbatch',\n\
                 event_time='day', batch_size='day', begin='2024-01-01') }}\n\
                 select cast(event_at as date) as day, count(*) as events, sum(amount) as amount\n\
                 from {{ ref('raw_events') }}\ngroup by 1\n",
            ),
        ],
    );
}

#[test]
fn microbatch_builds_and_rebuilds_one_time_window_at_a_time() {
    let (_tmp, dir) = project();
    write_microbatch(
        &dir,
        "1,2024-01-01 10:00:00,5\n2,2024-01-01 23:59:59,1\n3,2024-01-02 00:00:00,7\n4,2024-01-03 12:00:00,2\n",
    );
    ok(&dir, &["seed"]);
    let out = ok(&dir, &["run", "--event-time-end", "2024-01-04"]);
    assert!(
        out.contains("OK created incremental model analytics.daily") && out.contains("3 rows]"),
        "{out}"
    );
    let day_rows = |dir: &Path| {
        csv(
            dir,
            "select day, events, amount from analytics.daily order by day",
        )
    };
    assert_eq!(
        day_rows(&dir),
        "day,events,amount\n2024-01-01,2,6\n2024-01-02,1,7\n2024-01-03,1,2\n"
    );
    let compiled =
        std::fs::read_to_string(dir.join("target/run/batches/models/daily.sql")).unwrap();
    assert!(
        compiled.contains(
            "(select * from analytics.raw_events where event_at >= cast('2024-01-03 00:00:00' as timestamp) and event_at < cast('2024-01-04 00:00:00' as timestamp))"
        ),
        "{compiled}"
    );

    // A late event on day 3, a new day 4, and a change on day 1 (outside the range).
    write_microbatch(
        &dir,
        "1,2024-01-01 10:00:00,50\n2,2024-01-01 23:59:59,1\n3,2024-01-02 00:00:00,7\n4,2024-01-03 12:00:00,2\n\
         5,2024-01-03 18:00:00,3\n6,2024-01-04 08:00:00,9\n",
    );
    ok(&dir, &["seed"]);
    ok(
        &dir,
        &[
            "run",
            "--event-time-start",
            "2024-01-03",
            "--event-time-end",
            "2024-01-05",
        ],
    );
    assert_eq!(
        day_rows(&dir),
        "day,events,amount\n2024-01-01,2,6\n2024-01-02,1,7\n2024-01-03,2,5\n2024-01-04,1,9\n"
    );

    // A model without `batch_size` says what it needs.
    std::fs::write(
        dir.join("models/daily.sql"),
        "{{ config(materialized='incremental', incremental_strategy='microbatch', event_time='day') }}\n\
         select cast(event_at as date) as day from {{ ref('raw_events') }}\n",
    )
    .unwrap();
    let o = strata(&dir, &["run"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("a microbatch model needs `batch_size`: hour, day, month or year"),
        "{}",
        stdout(&o)
    );
}
