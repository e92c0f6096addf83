//! Creating, listing, describing and dropping tables; namespaces; the "did you mean" hint.

use std::sync::Arc;

use strata_lake::deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use strata_lake::{Error, WriteMode, WriteOptions};

use crate::common::{Ctx, TestResult, both_backends, people, query_latest, tn};

fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
    ]))
}

async fn create_with_schema_and_partitions(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.orders");
    assert!(!lake.table_exists(&t).await?);

    let table = lake
        .create_table(
            &t,
            &orders_schema(),
            &["region".to_string()],
            Some("orders from the shop"),
            false,
        )
        .await?;
    assert_eq!(table.version(), Some(0));
    assert!(lake.table_exists(&t).await?);

    let info = lake.table_info(&t).await?;
    assert_eq!(info.version, 0);
    assert_eq!((info.rows, info.files), (0, 0));
    assert_eq!(info.partition_columns, ["region"]);
    assert_eq!(info.description.as_deref(), Some("orders from the shop"));
    let columns: Vec<(&str, &DataType, bool)> = info
        .schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type(), f.is_nullable()))
        .collect();
    assert_eq!(
        columns,
        [
            ("id", &DataType::Int64, false),
            ("region", &DataType::Utf8, true),
            ("amount", &DataType::Float64, true),
        ]
    );
    assert!(query_latest(lake, &t, "select * from t").await?.is_empty());

    // A second create fails; with `if_not_exists` it returns the existing table.
    let again = lake
        .create_table(&t, &orders_schema(), &[], None, false)
        .await;
    assert!(
        matches!(again, Err(Error::TableExists(ref n)) if n == &t),
        "{again:?}"
    );
    let same = lake
        .create_table(&t, &orders_schema(), &[], None, true)
        .await?;
    assert_eq!(same.version(), Some(0));

    // Rows land in one folder per partition value.
    let batch = crate::common::batch(vec![
        (
            "id",
            Arc::new(strata_lake::deltalake::arrow::array::Int64Array::from(
                vec![1, 2, 3],
            )) as _,
        ),
        (
            "region",
            Arc::new(strata_lake::deltalake::arrow::array::StringArray::from(
                vec!["eu", "us", "eu"],
            )) as _,
        ),
        (
            "amount",
            Arc::new(strata_lake::deltalake::arrow::array::Float64Array::from(
                vec![1.5, 2.5, 3.5],
            )) as _,
        ),
    ]);
    let written = lake
        .write_batches(&t, vec![batch], WriteMode::Append, &WriteOptions::default())
        .await?;
    assert_eq!(
        (written.version, written.rows, written.skipped),
        (1, 3, false)
    );
    let files = crate::common::data_files(lake, &t).await?;
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().any(|f| f.contains("/region=eu/")), "{files:?}");
    assert!(files.iter().any(|f| f.contains("/region=us/")), "{files:?}");
    assert_eq!(
        query_latest(lake, &t, "select id, region, amount from t order by id").await?,
        ["1, eu, 1.5", "2, us, 2.5", "3, eu, 3.5"]
    );
    assert_eq!(
        query_latest(lake, &t, "select count(*) from t where region = 'eu'").await?,
        ["2"]
    );
    let info = lake.table_info(&t).await?;
    assert_eq!((info.version, info.rows, info.files), (1, 3, 2));
    assert!(info.bytes > 0);
    assert!(info.last_modified.is_some());
    Ok(())
}

async fn bad_partition_column(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.orders");
    let err = lake
        .create_table(&t, &orders_schema(), &["country".to_string()], None, false)
        .await
        .expect_err("`country` is not a column");
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("`country`"), "{msg}");
    assert!(msg.contains("id, region, amount"), "{msg}");
    assert!(!lake.table_exists(&t).await?);

    // The same check guards a write that creates the table.
    let opts = WriteOptions {
        partition_by: vec!["country".into()],
        ..Default::default()
    };
    let err = lake
        .write_batches(&t, vec![people(&[(1, "a")])], WriteMode::Append, &opts)
        .await
        .expect_err("`country` is not a column");
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("id, name"), "{err}");
    assert!(!lake.table_exists(&t).await?);
    assert!(lake.tables(None).await?.is_empty());
    Ok(())
}

async fn namespaces_and_listing(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    assert!(lake.namespaces().await?.is_empty());
    assert!(lake.tables(None).await?.is_empty());

    lake.create_namespace("staging").await?;
    lake.create_namespace("staging").await?; // idempotent
    assert!(lake.create_namespace("Bad-Name").await.is_err());
    for t in ["raw.b", "raw.a", "marts.c"] {
        lake.write_batches(
            &tn(t),
            vec![people(&[(1, "x")])],
            WriteMode::Append,
            &WriteOptions::default(),
        )
        .await?;
    }
    assert_eq!(lake.namespaces().await?, ["marts", "raw", "staging"]);
    assert_eq!(
        lake.tables(None).await?,
        [tn("marts.c"), tn("raw.a"), tn("raw.b")]
    );
    assert_eq!(lake.tables(Some("raw")).await?, [tn("raw.a"), tn("raw.b")]);
    assert!(lake.tables(Some("staging")).await?.is_empty());

    // A second handle (another process) sees the same lake.
    let other = ctx.reopen().await?;
    assert_eq!(other.tables(None).await?.len(), 3);

    // Non-empty namespaces are only dropped with cascade.
    let err = lake
        .drop_namespace("raw", false)
        .await
        .expect_err("not empty");
    assert!(err.to_string().contains("2 tables"), "{err}");
    assert!(lake.drop_namespace("raw", true).await?);
    assert!(lake.drop_namespace("staging", false).await?);
    assert_eq!(lake.namespaces().await?, ["marts"]);
    assert_eq!(lake.tables(None).await?, [tn("marts.c")]);
    Ok(())
}

async fn drop_table_and_did_you_mean(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let empty = lake.not_found(&tn("raw.orders")).await;
    assert_eq!(
        empty.to_string(),
        "table `raw.orders` does not exist; the lake holds no tables yet"
    );

    let t = tn("raw.orders");
    lake.write_batches(
        &t,
        vec![people(&[(1, "a")])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;

    let err = lake.open_table(&tn("raw.ordres")).await.expect_err("typo");
    assert!(matches!(err, Error::TableNotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "table `raw.ordres` does not exist; did you mean `raw.orders`?"
    );
    let far = lake.not_found(&tn("marts.customers")).await;
    assert_eq!(
        far.to_string(),
        "table `marts.customers` does not exist; `strata tables` lists the existing ones"
    );

    lake.drop_table(&t).await?;
    assert!(!lake.table_exists(&t).await?);
    assert!(lake.tables(None).await?.is_empty());
    assert!(crate::common::data_files(lake, &t).await?.is_empty());
    let err = lake.drop_table(&t).await.expect_err("already dropped");
    assert!(matches!(err, Error::TableNotFound { .. }), "{err:?}");
    assert!(matches!(
        lake.table_info(&t).await,
        Err(Error::TableNotFound { .. })
    ));

    // The name can be used again, starting a new history.
    let out = lake
        .write_batches(
            &t,
            vec![people(&[(7, "new")])],
            WriteMode::Append,
            &WriteOptions::default(),
        )
        .await?;
    assert_eq!(out.version, 0);
    assert_eq!(
        query_latest(lake, &t, "select id, name from t").await?,
        ["7, new"]
    );
    Ok(())
}

/// The freshness check readers use to reuse an opened table: a new commit, and a table
/// dropped and created again (its version numbers start over), both end it.
async fn still_latest_sees_new_and_replaced_commits(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    assert!(lake.latest_commit(&t).await?.is_none());
    let opts = WriteOptions::default();
    lake.write_batches(&t, vec![people(&[(1, "a")])], WriteMode::Append, &opts)
        .await?;
    let (v0, s0) = lake
        .latest_commit(&t)
        .await?
        .ok_or("no commit after a write")?;
    assert_eq!(v0, 0);
    assert!(lake.still_latest(&t, v0, &s0).await?);

    lake.write_batches(&t, vec![people(&[(2, "b")])], WriteMode::Append, &opts)
        .await?;
    assert!(!lake.still_latest(&t, v0, &s0).await?);
    let (v1, s1) = lake
        .latest_commit(&t)
        .await?
        .ok_or("no commit after a write")?;
    assert_eq!(v1, 1);
    assert!(lake.still_latest(&t, v1, &s1).await?);

    lake.drop_table(&t).await?;
    assert!(!lake.still_latest(&t, v1, &s1).await?);
    lake.write_batches(&t, vec![people(&[(3, "c")])], WriteMode::Append, &opts)
        .await?;
    let (again, stamp) = lake
        .latest_commit(&t)
        .await?
        .ok_or("no commit after a write")?;
    assert_eq!(again, 0);
    assert!(
        !lake.still_latest(&t, v0, &s0).await?,
        "a recreated table is not the old one"
    );
    assert!(lake.still_latest(&t, again, &stamp).await?);
    Ok(())
}

both_backends!(
    still_latest_sees_new_and_replaced_commits,
    create_with_schema_and_partitions,
    bad_partition_column,
    namespaces_and_listing,
    drop_table_and_did_you_mean,
);
