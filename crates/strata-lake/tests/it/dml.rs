//! MERGE (upsert), DELETE and UPDATE.

use std::sync::Arc;

use strata_lake::deltalake::arrow::array::{ArrayRef, Int64Array, StringArray};
use strata_lake::deltalake::arrow::record_batch::RecordBatch;
use strata_lake::deltalake::datafusion::prelude::SessionContext;
use strata_lake::{Error, MergeClause, WriteMode, WriteOptions};

use crate::common::{Ctx, TestResult, batch, both_backends, people, query_latest, tn};

/// `(shop Utf8, sku Int64, qty Int64, op Utf8)`: a composite key `(shop, sku)`.
fn stock(rows: &[(&str, i64, i64, &str)]) -> RecordBatch {
    batch(vec![
        (
            "shop",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "sku",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))) as ArrayRef,
        ),
        (
            "qty",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))) as ArrayRef,
        ),
        (
            "op",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))) as ArrayRef,
        ),
    ])
}

fn set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(c, e)| (c.to_string(), e.to_string()))
        .collect()
}

async fn merge_upserts_on_a_composite_key(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("marts.stock");
    lake.write_batches(
        &t,
        vec![stock(&[
            ("berlin", 1, 10, ""),
            ("berlin", 2, 20, ""),
            ("paris", 1, 30, ""),
            ("paris", 2, 40, ""),
        ])],
        WriteMode::Append,
        &WriteOptions {
            partition_by: vec!["shop".into()],
            ..Default::default()
        },
    )
    .await?;

    // Changes: update (berlin,1), delete (paris,2), insert (paris,3) and (rome,1);
    // (berlin,2) is untouched although sku 2 matches in paris (the key is composite).
    let session = SessionContext::new();
    let source = session.read_batch(stock(&[
        ("berlin", 1, 11, "upsert"),
        ("paris", 2, 0, "delete"),
        ("paris", 3, 33, "upsert"),
        ("rome", 1, 5, "upsert"),
        ("rome", 9, 0, "delete"), // deleting a missing row inserts nothing
    ]))?;
    let out = lake
        .merge(
            &t,
            source,
            "s",
            "t",
            "t.shop = s.shop and t.sku = s.sku",
            vec![
                MergeClause::MatchedDelete {
                    predicate: Some("s.op = 'delete'".into()),
                },
                MergeClause::MatchedUpdate {
                    predicate: None,
                    set: set(&[("qty", "s.qty"), ("op", "'updated'")]),
                },
                MergeClause::NotMatchedInsert {
                    predicate: Some("s.op <> 'delete'".into()),
                    set: set(&[
                        ("shop", "s.shop"),
                        ("sku", "s.sku"),
                        ("qty", "s.qty"),
                        ("op", "'inserted'"),
                    ]),
                },
            ],
            Arc::new(session.state()),
            &WriteOptions::default(),
        )
        .await?;
    assert_eq!((out.inserted, out.updated, out.deleted), (2, 1, 1));
    assert_eq!(out.version, 1);
    assert_eq!(
        query_latest(
            lake,
            &t,
            "select shop, sku, qty, op from t order by shop, sku"
        )
        .await?,
        [
            "berlin, 1, 11, updated",
            "berlin, 2, 20, ",
            "paris, 1, 30, ",
            "paris, 3, 33, inserted",
            "rome, 1, 5, inserted",
        ]
    );
    let history = lake.history(&t, Some(1)).await?;
    assert_eq!(history[0].operation, "MERGE");
    assert_eq!(history[0].version, 1);
    Ok(())
}

async fn merge_not_matched_by_source_and_marker(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    lake.write_batches(
        &t,
        vec![people(&[(1, "a"), (2, "b"), (3, "c")])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;
    let opts = WriteOptions {
        transaction: Some(("sync".into(), 1)),
        ..Default::default()
    };
    // A full snapshot of the source: rows missing from it are deleted (3) or flagged.
    let (t, opts) = (&t, &opts);
    let merge = |src: RecordBatch| {
        let session = SessionContext::new();
        let source = session.read_batch(src).expect("a batch is a valid source");
        async move {
            lake.merge(
                t,
                source,
                "source",
                "target",
                "target.id = source.id",
                vec![
                    MergeClause::MatchedUpdate {
                        predicate: Some("target.name <> source.name".into()),
                        set: set(&[("name", "source.name")]),
                    },
                    MergeClause::NotMatchedInsert {
                        predicate: None,
                        set: set(&[("id", "source.id"), ("name", "source.name")]),
                    },
                    MergeClause::NotMatchedBySourceDelete {
                        predicate: Some("target.id = 3".into()),
                    },
                    MergeClause::NotMatchedBySourceUpdate {
                        predicate: None,
                        set: set(&[("name", "concat(target.name, '-gone')")]),
                    },
                ],
                Arc::new(session.state()),
                opts,
            )
            .await
        }
    };
    let out = merge(people(&[(2, "B"), (4, "d")])).await?;
    assert_eq!((out.inserted, out.updated, out.deleted), (1, 2, 1));
    assert_eq!(
        query_latest(lake, t, "select id, name from t order by id").await?,
        ["1, a-gone", "2, B", "4, d"]
    );
    // The same merge under the same marker is skipped.
    let again = merge(people(&[(2, "B"), (4, "d")])).await?;
    assert_eq!((again.inserted, again.updated, again.deleted), (0, 0, 0));
    assert_eq!(again.version, out.version);
    assert_eq!(lake.table_info(t).await?.version, out.version);
    assert_eq!(
        query_latest(lake, t, "select id, name from t order by id").await?,
        ["1, a-gone", "2, B", "4, d"]
    );
    Ok(())
}

async fn merge_errors(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    let session = SessionContext::new();
    let err = lake
        .merge(
            &t,
            session.read_batch(people(&[(1, "a")]))?,
            "s",
            "t",
            "t.id = s.id",
            vec![],
            Arc::new(session.state()),
            &WriteOptions::default(),
        )
        .await
        .expect_err("no table");
    assert!(matches!(err, Error::TableNotFound { .. }), "{err:?}");

    lake.write_batches(
        &t,
        vec![people(&[(1, "a")])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;
    let err = lake
        .merge(
            &t,
            session.read_batch(people(&[(1, "x")]))?,
            "s",
            "t",
            "t.id = s.id",
            vec![MergeClause::MatchedUpdate {
                predicate: None,
                set: set(&[("no_such_column", "s.name")]),
            }],
            Arc::new(session.state()),
            &WriteOptions::default(),
        )
        .await
        .expect_err("unknown column");
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("`no_such_column`"), "{err}");
    assert_eq!(lake.table_info(&t).await?.version, 0);
    assert_eq!(
        query_latest(lake, &t, "select id, name from t").await?,
        ["1, a"]
    );
    Ok(())
}

async fn delete_by_predicate(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    lake.write_batches(
        &t,
        vec![people(&[(1, "a"), (2, "b"), (3, "c"), (4, "d")])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;
    let before = lake.open_table(&t).await?;

    assert_eq!(
        lake.delete(&t, Some("id % 2 = 0"), None).await?,
        2,
        "rows 2 and 4"
    );
    assert_eq!(
        query_latest(lake, &t, "select id, name from t order by id").await?,
        ["1, a", "3, c"]
    );
    assert_eq!(lake.delete(&t, Some("id > 100"), None).await?, 0);
    let history = lake.history(&t, None).await?;
    assert_eq!(history[0].operation, "DELETE");

    // A predicate over a missing column fails and changes nothing.
    let version = lake.table_info(&t).await?.version;
    let err = lake
        .delete(&t, Some("nope = 1"), None)
        .await
        .expect_err("unknown column");
    assert!(err.to_string().contains("nope"), "{err}");
    assert_eq!(lake.table_info(&t).await?.version, version);

    // Without a predicate every row goes; the old version is still readable.
    assert_eq!(lake.delete(&t, None, None).await?, 2);
    assert!(query_latest(lake, &t, "select * from t").await?.is_empty());
    assert_eq!(
        crate::common::query(&before, "select count(*) from t").await?,
        ["4"]
    );
    Ok(())
}

async fn update_with_predicate(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    lake.write_batches(
        &t,
        vec![people(&[(1, "a"), (2, "b"), (3, "c")])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;
    let n = lake
        .update(
            &t,
            Some("id >= 2"),
            set(&[("name", "upper(name)"), ("id", "id * 10")]),
            None,
        )
        .await?;
    assert_eq!(n, 2);
    assert_eq!(
        query_latest(lake, &t, "select id, name from t order by id").await?,
        ["1, a", "20, B", "30, C"]
    );
    let n = lake
        .update(&t, None, set(&[("name", "'all'")]), None)
        .await?;
    assert_eq!(n, 3);
    assert_eq!(
        query_latest(lake, &t, "select distinct name from t").await?,
        ["all"]
    );
    assert_eq!(lake.history(&t, Some(1)).await?[0].operation, "UPDATE");

    // An unknown column is an error naming the columns (deltalake alone would ignore the
    // assignment and still report the rows as updated).
    let err = lake
        .update(&t, None, set(&[("missing", "1")]), None)
        .await
        .expect_err("unknown column");
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot write to `raw.people`: column `missing` does not exist; columns are: id, name"
    );
    let err = lake
        .update(&t, None, set(&[("nmae", "'x'")]), None)
        .await
        .expect_err("typo");
    assert!(err.to_string().contains("did you mean `name`?"), "{err}");
    assert_eq!(lake.table_info(&t).await?.version, 2);
    assert_eq!(
        query_latest(lake, &t, "select distinct name from t").await?,
        ["all"]
    );
    Ok(())
}

both_backends!(
    merge_upserts_on_a_composite_key,
    merge_not_matched_by_source_and_marker,
    merge_errors,
    delete_by_predicate,
    update_with_predicate,
);
