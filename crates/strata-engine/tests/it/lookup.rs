//! Key lookups (`Session::key_lookup`): the same rows as the general path, at the table's
//! latest version, with the principal's policies; statements that are not lookups are left
//! to the general path.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::{ParamValues, ScalarValue};
use strata_engine::{Engine, Session};
use strata_lake::{TableName, WriteMode, WriteOptions};

async fn plan(engine: &Engine, s: &Session, sql: &str) -> datafusion::logical_expr::LogicalPlan {
    let plan = s.context().state().create_logical_plan(sql).await.unwrap();
    engine.scan_latest_when_run(plan).unwrap()
}

fn text(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

fn param(v: i64) -> ParamValues {
    ParamValues::from(vec![ScalarValue::Int64(Some(v))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_read_the_latest_version_and_answer_as_the_general_path() {
    let dir = tempfile::tempdir().unwrap();
    let engine = crate::engine_in(dir.path(), None).await;
    let admin = engine.session().await.unwrap();
    admin
        .sql(
            "CREATE TABLE marts.items AS SELECT value AS id, concat('item-', value) AS name, \
             value % 7 AS grp FROM generate_series(1, 20000)",
        )
        .await
        .unwrap();
    let t = TableName::new("marts", "items").unwrap();
    engine.lake().zorder(&t, &["id".to_string()]).await.unwrap();
    admin
        .sql("INSERT INTO marts.items VALUES (20001, 'late', 1)")
        .await
        .unwrap();

    let sql = "SELECT id, name FROM marts.items WHERE id = $1";
    let lookup = admin
        .key_lookup(&plan(&engine, &admin, sql).await)
        .expect("a key lookup");
    for key in [1, 777, 4096, 20000, 20001, 0, 99999] {
        let fast = lookup
            .run(Some(&param(key)))
            .await
            .unwrap()
            .expect("read by key");
        let general = admin
            .sql(&format!(
                "SELECT id, name FROM marts.items WHERE id = {key}"
            ))
            .await
            .unwrap();
        assert_eq!(text(&fast), text(&general), "key {key}");
        let found = fast.iter().map(RecordBatch::num_rows).sum::<usize>();
        assert_eq!(found, usize::from((1..=20001).contains(&key)), "key {key}");
    }
    // A commit after the lookup was made is seen by its next run.
    admin
        .sql("INSERT INTO marts.items VALUES (30000, 'newer', 2)")
        .await
        .unwrap();
    let fast = lookup.run(Some(&param(30000))).await.unwrap().unwrap();
    assert!(text(&fast).contains("| 30000 | newer |"), "{}", text(&fast));
    admin
        .sql("DELETE FROM marts.items WHERE id = 777")
        .await
        .unwrap();
    let fast = lookup.run(Some(&param(777))).await.unwrap().unwrap();
    assert_eq!(fast.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);

    // Constants, extra predicates and expressions over the row are part of the lookup.
    let sql = "SELECT upper(name) AS n, grp * 2 AS g FROM marts.items WHERE 42 = id AND grp = 0";
    let lookup = admin
        .key_lookup(&plan(&engine, &admin, sql).await)
        .expect("a key lookup with a constant key");
    let fast = lookup.run(None).await.unwrap().unwrap();
    assert!(text(&fast).contains("| ITEM-42 | 0 |"), "{}", text(&fast));

    // Not lookups: the general path answers these.
    for sql in [
        "SELECT count(*) FROM marts.items WHERE id = $1",
        "SELECT id FROM marts.items WHERE id > $1",
        "SELECT id, now() FROM marts.items WHERE id = $1",
        "SELECT id FROM marts.items WHERE id = $1 ORDER BY name",
        "SELECT id FROM marts.items WHERE id = $1 LIMIT 1",
        "SELECT i.id FROM marts.items i JOIN marts.items j ON i.id = j.id WHERE i.id = $1",
        "SELECT id FROM marts.items",
    ] {
        assert!(
            admin
                .key_lookup(&plan(&engine, &admin, sql).await)
                .is_none(),
            "{sql} is not a key lookup"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_a_lookup_cannot_read_directly_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = crate::engine_in(dir.path(), None).await;
    let admin = engine.session().await.unwrap();
    let rows = admin
        .sql("SELECT * FROM (VALUES (1, 'EU'), (2, 'US')) AS v(id, region)")
        .await
        .unwrap();
    let t = TableName::new("marts", "parts").unwrap();
    let opts = WriteOptions {
        partition_by: vec!["region".into()],
        ..Default::default()
    };
    engine
        .lake()
        .write_batches(&t, rows, WriteMode::Create, &opts)
        .await
        .unwrap();
    let lookup = admin
        .key_lookup(&plan(&engine, &admin, "SELECT * FROM marts.parts WHERE id = $1").await)
        .expect("the plan is a lookup");
    assert!(lookup.run(Some(&param(1))).await.unwrap().is_none());
}
