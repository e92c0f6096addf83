//! History and time travel by version and by timestamp.

use strata_lake::{Error, Lake, TableName, WriteMode, WriteOptions};

use crate::common::{Ctx, TestResult, both_backends, people, query, tn};

const ALL: &str = "select id, name from t order by id";

/// v0 create, v1 append, v2 update, v3 delete, v4 overwrite.
async fn five_versions(lake: &Lake, t: &TableName) -> TestResult {
    let opts = WriteOptions::default();
    lake.write_batches(t, vec![people(&[(1, "a")])], WriteMode::Append, &opts)
        .await?;
    lake.write_batches(t, vec![people(&[(2, "b")])], WriteMode::Append, &opts)
        .await?;
    lake.update(t, Some("id = 1"), vec![("name".into(), "'A'".into())], None)
        .await?;
    lake.delete(t, Some("id = 2"), None).await?;
    lake.write_batches(t, vec![people(&[(9, "z")])], WriteMode::Overwrite, &opts)
        .await?;
    Ok(())
}

async fn history_is_newest_first(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    five_versions(lake, &t).await?;

    let history = lake.history(&t, None).await?;
    let summary: Vec<(u64, &str)> = history
        .iter()
        .map(|c| (c.version, c.operation.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (4, "WRITE"),
            (3, "DELETE"),
            (2, "UPDATE"),
            (1, "WRITE"),
            (0, "WRITE"),
        ]
    );
    assert_eq!(history[4].parameters["mode"], "Append");
    assert_eq!(history[0].parameters["mode"], "Overwrite");
    assert!(
        history[1].parameters["predicate"]
            .as_str()
            .is_some_and(|p| p.contains("id = 2")),
        "{:?}",
        history[1].parameters
    );
    // Timestamps never go backwards.
    let stamps: Vec<_> = history
        .iter()
        .map(|c| c.timestamp.expect("stamped"))
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] >= w[1]), "{stamps:?}");

    let limited = lake.history(&t, Some(2)).await?;
    let versions: Vec<u64> = limited.iter().map(|c| c.version).collect();
    assert_eq!(versions, [4, 3]);
    let info = lake.table_info(&t).await?;
    assert_eq!(info.version, 4);
    assert_eq!(info.last_modified, history[0].timestamp);
    Ok(())
}

async fn time_travel_by_version(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    five_versions(lake, &t).await?;
    let expected: [&[&str]; 5] = [
        &["1, a"],
        &["1, a", "2, b"],
        &["1, A", "2, b"],
        &["1, A"],
        &["9, z"],
    ];
    for (v, rows) in expected.iter().enumerate() {
        let table = lake.open_table_version(&t, v as u64).await?;
        assert_eq!(table.version(), Some(v as u64));
        assert_eq!(&query(&table, ALL).await?, rows, "version {v}");
    }

    let err = lake
        .open_table_version(&t, 5)
        .await
        .expect_err("no version 5");
    assert!(
        matches!(
            err,
            Error::NoSuchVersion {
                oldest: 0,
                latest: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "`raw.people` has no version 5; its history holds versions 0 to 4"
    );
    let err = lake
        .open_table_version(&tn("raw.peeple"), 0)
        .await
        .expect_err("no table");
    assert!(
        err.to_string().contains("did you mean `raw.people`"),
        "{err}"
    );
    Ok(())
}

async fn time_travel_by_timestamp(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    five_versions(lake, &t).await?;
    let history = lake.history(&t, None).await?;
    let at = |v: u64| {
        history
            .iter()
            .find(|c| c.version == v)
            .and_then(|c| c.timestamp)
            .expect("every commit has a timestamp")
    };

    // At a commit's own timestamp, that commit is visible. Commits in the same millisecond
    // share a timestamp: the latest of them wins, so compare with the newest version
    // committed at or before each instant.
    for v in 0..=4u64 {
        let ts = at(v);
        let newest_at_ts = (0..=4u64).filter(|&w| at(w) <= ts).max().expect("v itself");
        let table = lake.open_table_at(&t, ts).await?;
        assert_eq!(table.version(), Some(newest_at_ts), "at {ts}");
    }
    // Far in the future: the latest version.
    let later = at(4) + chrono::Duration::days(1);
    let table = lake.open_table_at(&t, later).await?;
    assert_eq!(table.version(), Some(4));
    assert_eq!(query(&table, ALL).await?, ["9, z"]);
    // Just after version 1 (and before 2, when they are apart): the two first rows.
    if at(1) < at(2) {
        let table = lake.open_table_at(&t, at(1)).await?;
        assert_eq!(query(&table, ALL).await?, ["1, a", "2, b"]);
    }

    // Before the table existed: an error naming the range.
    let before = at(0) - chrono::Duration::seconds(1);
    let err = lake.open_table_at(&t, before).await.expect_err("too early");
    assert!(
        matches!(
            err,
            Error::NoSuchVersion {
                oldest: 0,
                latest: 4,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("at or before"), "{msg}");
    assert!(msg.contains("versions 0 to 4"), "{msg}");
    Ok(())
}

/// `commitInfo` is optional in the Delta protocol; other writers may leave it out. Each commit
/// is still listed under its own version.
async fn history_lists_commits_without_commit_info(ctx: Ctx) -> TestResult {
    let lake = &ctx.lake;
    let t = tn("raw.people");
    let opts = WriteOptions::default();
    lake.write_batches(&t, vec![people(&[(1, "a")])], WriteMode::Append, &opts)
        .await?;
    lake.write_batches(&t, vec![people(&[(2, "b")])], WriteMode::Append, &opts)
        .await?;
    let bare = r#"{"txn":{"appId":"external","version":3}}"#;
    object_store::ObjectStoreExt::put(
        lake.store().as_ref(),
        &strata_lake::deltalake::Path::from("raw/people/_delta_log/00000000000000000002.json"),
        format!("{bare}\n").into(),
    )
    .await?;

    let history = lake.history(&t, None).await?;
    let summary: Vec<(u64, &str)> = history
        .iter()
        .map(|c| (c.version, c.operation.as_str()))
        .collect();
    assert_eq!(summary, [(2, ""), (1, "WRITE"), (0, "WRITE")]);
    assert!(
        history[0].timestamp.is_some(),
        "falls back to the file's time"
    );
    let info = lake.table_info(&t).await?;
    assert_eq!((info.version, info.rows), (2, 2));
    assert_eq!(
        query(&lake.open_table(&t).await?, ALL).await?,
        ["1, a", "2, b"]
    );
    Ok(())
}

both_backends!(
    history_is_newest_first,
    history_lists_commits_without_commit_info,
    time_travel_by_version,
    time_travel_by_timestamp,
);

/// After old commits leave the log (a checkpoint, then log cleanup), the error names the
/// versions time travel can still reach: from the oldest checkpoint on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_past_a_cleaned_log_names_the_oldest_version() -> TestResult {
    let ctx = Ctx::local().await?;
    let lake = &ctx.lake;
    let t = tn("raw.people");
    five_versions(lake, &t).await?;
    let table = lake.open_table(&t).await?;
    strata_lake::deltalake::checkpoints::create_checkpoint(&table, None).await?;
    let log = ctx
        .root()
        .to_file_path()
        .map_err(|()| "local lake")?
        .join("raw/people/_delta_log");
    for v in 0..3 {
        std::fs::remove_file(log.join(format!("{v:020}.json")))?;
    }
    let err = lake
        .open_table_version(&t, 1)
        .await
        .expect_err("version 1 is gone");
    assert_eq!(
        err.to_string(),
        "`raw.people` has no version 1; its history holds versions 4 to 4"
    );
    // Version 3's commit is still there, but nothing before it: it cannot be rebuilt.
    let err = lake
        .open_table_version(&t, 3)
        .await
        .expect_err("version 3 is gone");
    assert!(
        matches!(err, Error::NoSuchVersion { oldest: 4, .. }),
        "{err:?}"
    );
    assert_eq!(
        query(&lake.open_table_version(&t, 4).await?, ALL)
            .await?
            .len(),
        1
    );
    Ok(())
}
