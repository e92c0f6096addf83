//! Schema evolution: new columns, refused mismatches, type widening, ALTER TABLE ADD COLUMN.

use std::sync::Arc;

use strata_lake::deltalake::arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray};
use strata_lake::deltalake::arrow::datatypes::{DataType, Field, Schema};
use strata_lake::{Error, WriteMode, WriteOptions};

use crate::common::{Ctx, TestResult, batch, both_backends, people, query_latest, tn};

fn evolve() -> WriteOptions {
    WriteOptions {
        evolve_schema: true,
        ..Default::default()
    }
}

async fn new_column_needs_evolve_schema(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    lake.write_batches(
        &t,
        vec![people(&[(1, "a"), (2, "b")])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;
    let with_email = || {
        batch(vec![
            ("id", Arc::new(Int64Array::from(vec![3])) as ArrayRef),
            ("name", Arc::new(StringArray::from(vec!["c"])) as ArrayRef),
            (
                "email",
                Arc::new(StringArray::from(vec!["c@example.com"])) as ArrayRef,
            ),
        ])
    };

    // Without `evolve_schema` the write is refused and nothing is committed.
    let err = lake
        .write_batches(
            &t,
            vec![with_email()],
            WriteMode::Append,
            &WriteOptions::default(),
        )
        .await
        .expect_err("extra column");
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("raw.people"), "{err}");
    let info = lake.table_info(&t).await?;
    assert_eq!(info.version, 0);
    assert_eq!(info.schema.fields().len(), 2);
    assert_eq!(
        query_latest(lake, &t, "select id, name from t order by id").await?,
        ["1, a", "2, b"]
    );

    // With it, the column is added; old rows read NULL.
    let out = lake
        .write_batches(&t, vec![with_email()], WriteMode::Append, &evolve())
        .await?;
    assert_eq!(out.version, 1);
    let info = lake.table_info(&t).await?;
    let names: Vec<&str> = info
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["id", "name", "email"]);
    assert_eq!(
        query_latest(lake, &t, "select id, name, email from t order by id").await?,
        ["1, a, NULL", "2, b, NULL", "3, c, c@example.com"]
    );

    // A later write without the column: refused by default (deltalake does not fill missing
    // columns), accepted with `evolve_schema`, which writes NULL and never drops the column.
    let err = lake
        .write_batches(
            &t,
            vec![people(&[(4, "d")])],
            WriteMode::Append,
            &WriteOptions::default(),
        )
        .await
        .expect_err("missing column");
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
    assert_eq!(lake.table_info(&t).await?.version, 1);
    lake.write_batches(&t, vec![people(&[(4, "d")])], WriteMode::Append, &evolve())
        .await?;
    assert_eq!(
        query_latest(lake, &t, "select id, email from t where id = 4").await?,
        ["4, NULL"]
    );
    assert_eq!(lake.table_info(&t).await?.schema.fields().len(), 3);
    Ok(())
}

async fn incompatible_type_is_refused(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    lake.write_batches(
        &t,
        vec![people(&[(1, "a")])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;
    // `id` as text: neither a plain write nor an evolving one may change the column's type.
    let text_ids = batch(vec![
        ("id", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
        ("name", Arc::new(StringArray::from(vec!["b"])) as ArrayRef),
    ]);
    for opts in [WriteOptions::default(), evolve()] {
        let err = lake
            .write_batches(&t, vec![text_ids.clone()], WriteMode::Append, &opts)
            .await
            .expect_err("text into bigint");
        assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
    }
    let info = lake.table_info(&t).await?;
    assert_eq!(info.version, 0);
    assert_eq!(info.schema.field(0).data_type(), &DataType::Int64);
    assert_eq!(
        query_latest(lake, &t, "select id, name from t").await?,
        ["1, a"]
    );
    Ok(())
}

async fn int32_to_int64_widening(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.counts");
    let ints32 = |v: Vec<i32>| batch(vec![("n", Arc::new(Int32Array::from(v)) as ArrayRef)]);
    let ints64 = |v: Vec<i64>| batch(vec![("n", Arc::new(Int64Array::from(v)) as ArrayRef)]);
    lake.write_batches(
        &t,
        vec![ints32(vec![1, 2])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;

    // Int64 values into an Int32 column. deltalake 1.1 does not implement Delta's
    // `typeWidening` table feature, so the column stays Int32 whatever the options: the
    // incoming values are cast to the table's type, and a value that does not fit is an
    // error (a SchemaMismatch, nothing committed), never a silent wrap or truncation.
    for opts in [WriteOptions::default(), evolve()] {
        let before = lake.table_info(&t).await?.version;
        let fits = lake
            .write_batches(&t, vec![ints64(vec![3])], WriteMode::Append, &opts)
            .await?;
        assert_eq!(fits.version, before + 1);
        let err = lake
            .write_batches(
                &t,
                vec![ints64(vec![i64::from(i32::MAX) + 1])],
                WriteMode::Append,
                &opts,
            )
            .await
            .expect_err("2147483648 does not fit an Int32 column");
        assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("2147483648"), "{err}");
        let info = lake.table_info(&t).await?;
        assert_eq!(
            info.version,
            before + 1,
            "the failed write committed nothing"
        );
        assert_eq!(info.schema.field(0).data_type(), &DataType::Int32);
    }
    assert_eq!(
        query_latest(lake, &t, "select n from t order by n").await?,
        ["1", "2", "3", "3"]
    );

    // And the other way: Int32 data into an Int64 column is a safe cast.
    let t64 = tn("raw.counts64");
    lake.write_batches(
        &t64,
        vec![ints64(vec![10])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;
    lake.write_batches(
        &t64,
        vec![ints32(vec![20])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;
    let info = lake.table_info(&t64).await?;
    assert_eq!(info.schema.field(0).data_type(), &DataType::Int64);
    assert_eq!(
        query_latest(lake, &t64, "select n from t order by n").await?,
        ["10", "20"]
    );
    Ok(())
}

async fn add_columns(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    lake.write_batches(
        &t,
        vec![people(&[(1, "a")])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;
    let new = Arc::new(Schema::new(vec![
        Field::new("score", DataType::Float64, false),
        Field::new("tag", DataType::Utf8, true),
    ]));
    let version = lake.add_columns(&t, &new).await?;
    assert_eq!(version, 1);
    let info = lake.table_info(&t).await?;
    let cols: Vec<(&str, bool)> = info
        .schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.is_nullable()))
        .collect();
    // Added columns are always nullable: existing rows have no value for them.
    assert_eq!(
        cols,
        [("id", true), ("name", true), ("score", true), ("tag", true)]
    );
    assert_eq!(
        query_latest(lake, &t, "select id, name, score, tag from t").await?,
        ["1, a, NULL, NULL"]
    );

    let dup = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, true)]));
    let err = lake.add_columns(&t, &dup).await.expect_err("exists");
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("`name` already exists"), "{err}");
    assert_eq!(lake.table_info(&t).await?.version, 1);
    Ok(())
}

both_backends!(
    new_column_needs_evolve_schema,
    incompatible_type_is_refused,
    int32_to_int64_widening,
    add_columns,
);
