//! Deep chains of stored views: each view reads the one before it, as layered dbt projects
//! do. Creating view `i` and querying the last must not re-plan the whole chain from
//! scratch each time (DuckDB's view resolution exploded on such chains).

use std::time::Instant;

use datafusion::arrow::array::{Array, Int64Array};

#[test]
fn a_chain_of_200_views_builds_and_queries() {
    // Planning recurses through the chain: run it as the CLI does, on a large stack.
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(64 << 20)
                .enable_all()
                .build()
                .unwrap()
                .block_on(chain_of_views(200))
        })
        .unwrap()
        .join()
        .unwrap();
}

async fn chain_of_views(depth: usize) {
    let dir = tempfile::tempdir().unwrap();
    let engine = crate::engine_in(dir.path(), None).await;
    let session = engine.session().await.unwrap();
    session
        .sql("CREATE TABLE base AS SELECT * FROM (VALUES (1), (2), (3)) AS t(x)")
        .await
        .unwrap();
    let started = Instant::now();
    let mut previous = "base".to_string();
    for i in 1..=depth {
        let name = format!("v_{i:04}");
        let input = if i == 1 {
            "x".to_string()
        } else {
            format!("c_{:04}", i - 1)
        };
        session
            .sql(&format!(
                "CREATE VIEW {name} AS SELECT *, {input} + 1 AS c_{i:04} FROM {previous}"
            ))
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        previous = name;
    }
    let built = started.elapsed();
    // A new session sees the chain as stored in the lake.
    let session = engine.session().await.unwrap();
    let started = Instant::now();
    let batches = session
        .sql(&format!("SELECT sum(c_{depth:04}) AS s FROM {previous}"))
        .await
        .unwrap();
    let queried = started.elapsed();
    let sum = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(sum.len(), 1);
    // x + depth for x in 1..=3
    assert_eq!(sum.value(0), 6 + 3 * depth as i64);
    eprintln!("{depth} views created in {built:?}, last one queried in {queried:?}");
}
