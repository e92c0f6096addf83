//! Persisted views and their interplay with tables and namespaces.

use strata_lake::{Error, WriteMode, WriteOptions};

use crate::common::{Ctx, TestResult, both_backends, people, tn};

async fn put_get_list_drop(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let v = tn("reports.big_orders");
    assert_eq!(lake.view(&v).await?, None);
    assert!(lake.list_views(None).await?.is_empty());

    lake.put_view(&v, "select * from raw.orders where amount > 100", false)
        .await?;
    let def = lake.view(&v).await?.expect("stored");
    assert_eq!(def.name, v);
    assert_eq!(def.sql, "select * from raw.orders where amount > 100");

    // Defining it again needs `replace`.
    let err = lake
        .put_view(&v, "select 1", false)
        .await
        .expect_err("exists");
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("CREATE OR REPLACE VIEW"), "{err}");
    assert_eq!(lake.view(&v).await?.expect("kept").sql, def.sql);
    lake.put_view(&v, "select 2 as two", true).await?;
    let replaced = lake.view(&v).await?.expect("replaced");
    assert_eq!(replaced.sql, "select 2 as two");
    assert!(replaced.created_at >= def.created_at);

    lake.put_view(&tn("reports.a_first"), "select 1", false)
        .await?;
    lake.put_view(&tn("other.x"), "select 3", false).await?;
    let all: Vec<String> = lake
        .list_views(None)
        .await?
        .into_iter()
        .map(|d| d.name.to_string())
        .collect();
    assert_eq!(all, ["other.x", "reports.a_first", "reports.big_orders"]);
    let reports: Vec<String> = lake
        .list_views(Some("reports"))
        .await?
        .into_iter()
        .map(|d| d.name.to_string())
        .collect();
    assert_eq!(reports, ["reports.a_first", "reports.big_orders"]);

    // Another process sees the same views.
    let other = ctx.reopen().await?;
    assert_eq!(
        other.view(&v).await?.map(|d| d.sql).as_deref(),
        Some("select 2 as two")
    );

    assert!(lake.drop_view(&v).await?);
    assert!(!lake.drop_view(&v).await?);
    assert_eq!(lake.view(&v).await?, None);
    assert_eq!(lake.list_views(Some("reports")).await?.len(), 1);
    Ok(())
}

async fn view_only_namespaces_are_listed(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    lake.write_batches(
        &tn("raw.people"),
        vec![people(&[(1, "a")])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;
    lake.put_view(
        &tn("reports.people_view"),
        "select * from raw.people",
        false,
    )
    .await?;
    // The view's namespace is listed; Strata's own folder is not a namespace.
    assert_eq!(lake.namespaces().await?, ["raw", "reports"]);
    assert_eq!(lake.tables(None).await?, [tn("raw.people")]);
    assert!(lake.tables(Some("reports")).await?.is_empty());

    // The internal folder cannot be used as a namespace.
    assert!(lake.create_namespace("_strata").await.is_err());
    let err = lake
        .write_batches(
            &tn("_strata.views"),
            vec![people(&[(1, "a")])],
            WriteMode::Append,
            &WriteOptions::default(),
        )
        .await
        .expect_err("reserved");
    assert!(err.to_string().contains("_strata"), "{err}");
    assert_eq!(lake.list_views(None).await?.len(), 1);

    // Dropping a view-only namespace with cascade removes its views.
    assert!(lake.drop_namespace("reports", true).await?);
    assert_eq!(lake.namespaces().await?, ["raw"]);
    assert!(lake.list_views(None).await?.is_empty());
    Ok(())
}

async fn views_and_tables_do_not_collide(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    lake.write_batches(
        &t,
        vec![people(&[(1, "a")])],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await?;
    let err = lake
        .put_view(&t, "select 1", true)
        .await
        .expect_err("a table has that name");
    assert!(matches!(err, Error::TableExists(_)), "{err:?}");
    assert_eq!(lake.view(&t).await?, None);

    let v = tn("raw.people_v");
    lake.put_view(&v, "select * from raw.people", false).await?;
    let err = lake
        .write_batches(
            &v,
            vec![people(&[(1, "a")])],
            WriteMode::Append,
            &WriteOptions::default(),
        )
        .await
        .expect_err("a view");
    assert!(matches!(err, Error::IsAView(..)), "{err:?}");
    let schema = people(&[]).schema();
    let err = lake
        .create_table(&v, &schema, &[], None, true)
        .await
        .expect_err("a view");
    assert!(matches!(err, Error::IsAView(..)), "{err:?}");
    assert!(!lake.table_exists(&v).await?);
    assert_eq!(lake.tables(None).await?, [t]);
    Ok(())
}

both_backends!(
    put_get_list_drop,
    view_only_namespaces_are_listed,
    views_and_tables_do_not_collide,
);
