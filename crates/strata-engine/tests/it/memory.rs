//! Memory limits: work larger than `engine.memory_limit` spills to disk instead of failing.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_larger_than_memory_limit_spills_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    // 64 MB of memory for a sort of 1 M rows × 2 columns: ~45 MB of Arrow data, which an
    // in-memory sort would need twice over.
    let engine = crate::engine_in(dir.path(), Some(64 << 20)).await;
    let session = engine.session().await.unwrap();
    session
        .sql(
            "CREATE TABLE raw.big AS
             SELECT value AS id, md5(CAST(value AS VARCHAR)) AS payload
             FROM generate_series(1, 1000000) AS t(value)",
        )
        .await
        .unwrap();
    let out_file = dir.path().join("sorted.parquet");
    session
        .sql(&format!(
            "COPY (SELECT * FROM raw.big ORDER BY payload) TO '{}'",
            out_file.display()
        ))
        .await
        .unwrap();
    // The file holds every row, in order.
    let batches = session
        .sql(&format!(
            "SELECT count(*) = 1000000 AS complete,
                    bool_and(prev IS NULL OR prev <= payload) AS sorted
             FROM (SELECT payload, lag(payload) OVER () AS prev FROM '{}')",
            out_file.display()
        ))
        .await
        .unwrap();
    let out = strata_engine::datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(out.contains("| true     | true   |"), "{out}");
    // The spill directory was used (DataFusion removes spill files when done, but the
    // directory the engine created must exist and be the configured one).
    assert!(dir.path().join("spill").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_over_limit_without_spill_support_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let engine = crate::engine_in(dir.path(), Some(16 << 20)).await;
    let session = engine.session().await.unwrap();
    // array_agg keeps every value in memory and cannot spill: the error must name the
    // memory limit rather than crash the process.
    let err = session
        .sql(
            "SELECT array_agg(md5(CAST(value AS VARCHAR))) FROM generate_series(1, 2000000) AS t(value)",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("needs more memory than `engine.memory_limit` allows"),
        "{err}"
    );
}
