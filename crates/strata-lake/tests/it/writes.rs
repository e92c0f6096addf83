//! Appends, atomic overwrites, plan writes and exactly-once transaction markers.

use std::sync::Arc;

use strata_lake::deltalake::arrow::array::{ArrayRef, Int32Array, StringArray};
use strata_lake::deltalake::datafusion::prelude::SessionContext;
use strata_lake::{Error, WriteMode, WriteOptions};

use crate::common::{Ctx, TestResult, both_backends, people, query, query_latest, tn};

const ALL: &str = "select id, name from t order by id";

async fn append_creates_then_adds(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    let opts = WriteOptions::default();
    let first = lake
        .write_batches(
            &t,
            vec![people(&[(1, "ann"), (2, "bob")])],
            WriteMode::Append,
            &opts,
        )
        .await?;
    assert_eq!((first.version, first.rows, first.skipped), (0, 2, false));
    let second = lake
        .write_batches(
            &t,
            vec![people(&[(3, "cid")]), people(&[(4, "dan"), (5, "eve")])],
            WriteMode::Append,
            &opts,
        )
        .await?;
    assert_eq!((second.version, second.rows), (1, 3));
    assert_eq!(
        query_latest(lake, &t, ALL).await?,
        ["1, ann", "2, bob", "3, cid", "4, dan", "5, eve"]
    );
    assert_eq!(lake.table_info(&t).await?.rows, 5);

    // An empty append is a commit without rows.
    let empty = lake
        .write_batches(&t, vec![people(&[])], WriteMode::Append, &opts)
        .await?;
    assert_eq!(empty.rows, 0);
    assert_eq!(
        query_latest(lake, &t, "select count(*) from t").await?,
        ["5"]
    );

    // Create mode refuses an existing table and leaves it alone.
    let err = lake
        .write_batches(&t, vec![people(&[(9, "zed")])], WriteMode::Create, &opts)
        .await
        .expect_err("table exists");
    assert!(matches!(err, Error::TableExists(_)), "{err:?}");
    assert_eq!(
        query_latest(lake, &t, "select count(*) from t").await?,
        ["5"]
    );

    let created = lake
        .write_batches(
            &tn("raw.fresh"),
            vec![people(&[(1, "a")])],
            WriteMode::Create,
            &opts,
        )
        .await?;
    assert_eq!(created.version, 0);
    Ok(())
}

async fn overwrite_is_atomic(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    let opts = WriteOptions::default();
    lake.write_batches(
        &t,
        vec![people(&[(1, "old1"), (2, "old2")])],
        WriteMode::Append,
        &opts,
    )
    .await?;
    lake.write_batches(&t, vec![people(&[(3, "old3")])], WriteMode::Append, &opts)
        .await?;

    // A reader that loaded the table before the overwrite.
    let reader = lake.open_table(&t).await?;
    assert_eq!(reader.version(), Some(1));

    let out = lake
        .write_batches(
            &t,
            vec![people(&[(10, "new10"), (11, "new11")])],
            WriteMode::Overwrite,
            &opts,
        )
        .await?;
    assert_eq!((out.version, out.rows), (2, 2));

    // The old reader still sees exactly the old rows (its files are only marked removed)…
    assert_eq!(
        query(&reader, ALL).await?,
        ["1, old1", "2, old2", "3, old3"]
    );
    // …and every new reader, in this process or another, sees only the new rows.
    assert_eq!(
        query_latest(lake, &t, ALL).await?,
        ["10, new10", "11, new11"]
    );
    let other = ctx.reopen().await?;
    assert_eq!(
        query_latest(&other, &t, ALL).await?,
        ["10, new10", "11, new11"]
    );
    let info = lake.table_info(&t).await?;
    assert_eq!((info.version, info.rows, info.files), (2, 2, 1));
    let history = lake.history(&t, Some(1)).await?;
    assert_eq!(history[0].operation, "WRITE");
    assert_eq!(history[0].parameters["mode"], "Overwrite");

    // Overwrite on a missing table creates it.
    let created = lake
        .write_batches(
            &tn("raw.other"),
            vec![people(&[(1, "x")])],
            WriteMode::Overwrite,
            &opts,
        )
        .await?;
    assert_eq!(created.version, 0);
    Ok(())
}

async fn overwrite_replacing_the_schema(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    lake.write_batches(
        &t,
        vec![people(&[(1, "a")])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;
    let reader = lake.open_table(&t).await?;
    let codes = crate::common::batch(vec![
        (
            "code",
            Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef,
        ),
        ("n", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
    ]);

    // Other columns: a plain overwrite refuses them and changes nothing…
    let err = lake
        .write_batches(
            &t,
            vec![codes.clone()],
            WriteMode::Overwrite,
            &WriteOptions::default(),
        )
        .await
        .expect_err("different columns");
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
    assert_eq!(lake.table_info(&t).await?.version, 0);

    // …`replace_schema` swaps columns and rows in one commit (CREATE OR REPLACE TABLE).
    let out = lake
        .write_batches(
            &t,
            vec![codes],
            WriteMode::Overwrite,
            &WriteOptions {
                replace_schema: true,
                partition_by: vec!["code".into()],
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(out.version, 1);
    let info = lake.table_info(&t).await?;
    let names: Vec<&str> = info
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["code", "n"]);
    assert_eq!(info.partition_columns, ["code"]);
    assert_eq!(
        query_latest(lake, &t, "select code, n from t order by code").await?,
        ["x, 1", "y, 2"]
    );
    // The old version keeps its own schema and rows.
    assert_eq!(query(&reader, ALL).await?, ["1, a"]);
    let v0 = lake.open_table_version(&t, 0).await?;
    assert_eq!(query(&v0, ALL).await?, ["1, a"]);
    Ok(())
}

async fn write_plan_streams_a_query(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("staging.squares");
    let session = SessionContext::new();
    let plan = session
        .sql("select cast(v as bigint) as id, concat('n', cast(v * v as varchar)) as name from unnest([1, 2, 3]) as u(v)")
        .await?
        .into_optimized_plan()?;
    let out = lake
        .write_plan(
            &t,
            plan,
            Arc::new(session.state()),
            WriteMode::Create,
            &WriteOptions {
                description: Some("squares".into()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!((out.version, out.rows, out.skipped), (0, 3, false));
    assert_eq!(
        query_latest(lake, &t, ALL).await?,
        ["1, n1", "2, n4", "3, n9"]
    );
    assert_eq!(
        lake.table_info(&t).await?.description.as_deref(),
        Some("squares")
    );

    // Overwrite through a plan that reads the table itself.
    let table = lake.open_table(&t).await?;
    let session = SessionContext::new();
    table.update_datafusion_session(&session.state())?;
    session.register_table("src", table.table_provider().await?)?;
    let plan = session
        .sql("select id * 10 as id, name from src where id > 1")
        .await?
        .into_optimized_plan()?;
    let out = lake
        .write_plan(
            &t,
            plan,
            Arc::new(session.state()),
            WriteMode::Overwrite,
            &WriteOptions::default(),
        )
        .await?;
    assert_eq!((out.version, out.rows), (1, 2));
    assert_eq!(query_latest(lake, &t, ALL).await?, ["20, n4", "30, n9"]);
    Ok(())
}

async fn transaction_marker_makes_writes_idempotent(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.events");
    let with_txn = |v: i64| WriteOptions {
        transaction: Some(("app".to_string(), v)),
        ..Default::default()
    };
    lake.write_batches(
        &t,
        vec![people(&[(1, "seed")])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;

    let first = lake
        .write_batches(
            &t,
            vec![people(&[(2, "batch5")])],
            WriteMode::Append,
            &with_txn(5),
        )
        .await?;
    assert_eq!((first.version, first.rows, first.skipped), (1, 1, false));

    // The same (app, version) again — a retry after a lost acknowledgement — is a no-op.
    let repeat = lake
        .write_batches(
            &t,
            vec![people(&[(2, "batch5")])],
            WriteMode::Append,
            &with_txn(5),
        )
        .await?;
    assert_eq!((repeat.version, repeat.rows, repeat.skipped), (1, 0, true));
    // An older one too, also from another handle (another process).
    let other = ctx.reopen().await?;
    let older = other
        .write_batches(
            &t,
            vec![people(&[(3, "batch4")])],
            WriteMode::Append,
            &with_txn(4),
        )
        .await?;
    assert!(older.skipped);
    assert_eq!(lake.table_info(&t).await?.version, 1);
    assert_eq!(query_latest(lake, &t, ALL).await?, ["1, seed", "2, batch5"]);

    // A newer version writes; another app id is independent.
    let next = lake
        .write_batches(
            &t,
            vec![people(&[(4, "batch6")])],
            WriteMode::Append,
            &with_txn(6),
        )
        .await?;
    assert_eq!((next.version, next.skipped), (2, false));
    let other_app = lake
        .write_batches(
            &t,
            vec![people(&[(5, "other")])],
            WriteMode::Append,
            &WriteOptions {
                transaction: Some(("other_app".to_string(), 1)),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!((other_app.version, other_app.skipped), (3, false));
    assert_eq!(
        query_latest(lake, &t, ALL).await?,
        ["1, seed", "2, batch5", "4, batch6", "5, other"]
    );

    // Plan writes honour the marker as well.
    let session = SessionContext::new();
    let plan = session
        .sql("select cast(99 as bigint) as id, 'plan' as name")
        .await?
        .into_optimized_plan()?;
    let skipped = lake
        .write_plan(
            &t,
            plan,
            Arc::new(session.state()),
            WriteMode::Append,
            &with_txn(6),
        )
        .await?;
    assert!(skipped.skipped);
    assert_eq!(
        query_latest(lake, &t, "select count(*) from t").await?,
        ["4"]
    );

    // The marker is committed with the data: the commit that wrote batch 6 carries it.
    let table = lake.open_table(&t).await?;
    let state = table.snapshot()?;
    let recorded = state
        .transaction_version(table.log_store().as_ref(), "app")
        .await?;
    assert_eq!(recorded, Some(6));
    Ok(())
}

async fn commit_metadata_is_recorded(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    let mut opts = WriteOptions::default();
    opts.commit_metadata
        .insert("strata.command".into(), serde_json::json!("load"));
    lake.write_batches(&t, vec![people(&[(1, "a")])], WriteMode::Append, &opts)
        .await?;
    let table = lake.open_table(&t).await?;
    use futures::TryStreamExt;
    let infos: Vec<_> = table.history(Some(1)).try_collect().await?;
    assert_eq!(infos[0].info["strata.command"], "load");
    Ok(())
}

both_backends!(
    append_creates_then_adds,
    overwrite_is_atomic,
    overwrite_replacing_the_schema,
    write_plan_streams_a_query,
    transaction_marker_makes_writes_idempotent,
    commit_metadata_is_recorded,
);
