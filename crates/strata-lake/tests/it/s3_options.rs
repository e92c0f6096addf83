//! The S3 safety guard: commits need conditional puts unless the user opts out explicitly,
//! and the opted-out (single-writer) setup still commits.

use std::collections::HashMap;

use strata_lake::{Error, Lake, WriteMode, WriteOptions};
use url::Url;

use crate::common::{Ctx, TestResult, people, query_latest, tn};

fn options(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Building the store makes no request, so this needs no S3 server.
#[tokio::test]
async fn conditional_put_off_needs_an_explicit_opt_in() -> TestResult {
    let root = Url::parse("s3://nowhere/lake/")?;
    let base = [
        ("aws_endpoint", "http://127.0.0.1:9"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "k"),
        ("aws_secret_access_key", "s"),
    ];
    let mut off = base.to_vec();
    off.push(("aws_conditional_put", "disabled"));
    let err = Lake::open(&root, options(&off))
        .await
        .expect_err("unsafe without opt-in");
    assert!(matches!(err, Error::Location { .. }), "{err:?}");
    assert!(
        err.to_string().contains("allow_unsafe_rename: true"),
        "{err}"
    );

    // With the opt-in it opens, whatever order the (hash map) options come in.
    off.push(("allow_unsafe_rename", "true"));
    for _ in 0..20 {
        Lake::open(&root, options(&off)).await?;
    }
    // The opt-in alone changes nothing about the default (conditional puts on).
    let mut opt_in = base.to_vec();
    opt_in.push(("allow_unsafe_rename", "true"));
    Lake::open(&root, options(&opt_in)).await?;

    let mut typo = base.to_vec();
    typo.push(("aws_endpoitn", "http://x"));
    let err = Lake::open(&root, options(&typo))
        .await
        .expect_err("unknown option");
    assert!(
        err.to_string().contains("unknown S3 option `aws_endpoitn`"),
        "{err}"
    );
    Ok(())
}

/// A store without conditional writes, opted into for a single writer: commits land (by HEAD
/// then PUT), and a writer holding a stale version still moves on to the next free one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_writer_without_conditional_put() -> TestResult {
    let Some(ctx) = Ctx::s3("single_writer_without_conditional_put").await? else {
        return Ok(());
    };
    let mut opts = ctx.options().clone();
    opts.insert("aws_conditional_put".into(), "disabled".into());
    opts.insert("allow_unsafe_rename".into(), "true".into());
    let lake = Lake::open(ctx.root(), opts.clone()).await?;
    let t = tn("raw.people");
    let w = WriteOptions::default();
    let first = lake
        .write_batches(&t, vec![people(&[(1, "a")])], WriteMode::Append, &w)
        .await?;
    assert_eq!(first.version, 0);

    // Two handles, one after the other: the second still believes version 0 is the latest
    // when it commits, finds version 1 taken and retries as version 2.
    let stale = Lake::open(ctx.root(), opts).await?.open_table(&t).await?;
    lake.write_batches(&t, vec![people(&[(2, "b")])], WriteMode::Append, &w)
        .await?;
    let table = stale
        .write(vec![people(&[(3, "c")])])
        .with_save_mode(strata_lake::deltalake::protocol::SaveMode::Append)
        .await?;
    assert_eq!(table.version(), Some(2));
    assert_eq!(
        query_latest(&lake, &t, "select id, name from t order by id").await?,
        ["1, a", "2, b", "3, c"]
    );
    Ok(())
}
