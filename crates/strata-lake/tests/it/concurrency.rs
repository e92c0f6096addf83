//! Several writers at once: no lost commits, no duplicated exactly-once writes, and the
//! store's put-if-absent that Delta's commit protocol relies on.

use std::collections::BTreeSet;

use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use strata_lake::deltalake::Path;
use strata_lake::{Error, WriteMode, WriteOptions};
use strata_types::{Classify, ErrorClass};

use crate::common::{Ctx, TestResult, both_backends, people, query_latest, tn};

const WRITERS: i64 = 5;
const COMMITS_EACH: i64 = 3;

async fn concurrent_appends_all_land(ctx: Ctx) -> TestResult {
    let t = tn("raw.events");
    ctx.lake
        .create_table(&t, &people(&[]).schema(), &[], None, false)
        .await?;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        // Each writer has its own handle, as separate processes would.
        let lake = ctx.reopen().await?;
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for c in 0..COMMITS_EACH {
                let id = w * 100 + c;
                let out = lake
                    .write_batches(
                        &t,
                        vec![people(&[(id, &format!("w{w}c{c}"))])],
                        WriteMode::Append,
                        &WriteOptions::default(),
                    )
                    .await?;
                versions.push(out.version);
            }
            Ok::<_, Error>(versions)
        }));
    }
    let mut versions = BTreeSet::new();
    for task in tasks {
        for v in task.await?? {
            assert!(versions.insert(v), "two writers report version {v}");
        }
    }
    let total = (WRITERS * COMMITS_EACH) as u64;
    assert_eq!(versions, (1..=total).collect::<BTreeSet<_>>());

    let lake = &ctx.lake;
    let rows = query_latest(lake, &t, "select id from t order by id").await?;
    let expected: Vec<String> = (0..WRITERS)
        .flat_map(|w| (0..COMMITS_EACH).map(move |c| (w * 100 + c).to_string()))
        .collect();
    assert_eq!(
        rows, expected,
        "every acknowledged row is in the table once"
    );
    let info = lake.table_info(&t).await?;
    assert_eq!((info.version, info.rows), (total, total));

    // History numbers each commit by its file, even for commits that were retried after
    // losing a race (their `readVersion` is older than their version minus one).
    let history = lake.history(&t, None).await?;
    let listed: Vec<u64> = history.iter().map(|c| c.version).collect();
    assert_eq!(listed, (0..=total).rev().collect::<Vec<_>>());
    Ok(())
}

async fn racing_exactly_once_writes_commit_once(ctx: Ctx) -> TestResult {
    let t = tn("raw.events");
    ctx.lake
        .create_table(&t, &people(&[]).schema(), &[], None, false)
        .await?;
    let opts = WriteOptions {
        transaction: Some(("loader".into(), 1)),
        ..Default::default()
    };
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let lake = ctx.reopen().await?;
        let (t, opts) = (t.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            // A loser of the race learns of the winner's marker through a conflict; running
            // the command again then finds the marker and skips.
            let mut conflicts = 0;
            loop {
                match lake
                    .write_batches(&t, vec![people(&[(1, "once")])], WriteMode::Append, &opts)
                    .await
                {
                    Err(e @ Error::Conflict { .. }) if conflicts < 5 => {
                        // The error tells the caller a retry can help.
                        assert!(e.retryable(), "{e}");
                        assert_eq!(e.class(), ErrorClass::External);
                        conflicts += 1;
                    }
                    other => return other,
                }
            }
        }));
    }
    let mut written = 0;
    for task in tasks {
        let out = task.await??;
        if !out.skipped {
            written += 1;
        }
    }
    assert_eq!(written, 1, "exactly one writer commits the batch");
    let lake = &ctx.lake;
    assert_eq!(
        query_latest(lake, &t, "select id, name from t").await?,
        ["1, once"]
    );
    assert_eq!(lake.table_info(&t).await?.version, 1);
    Ok(())
}

/// Delta's commit is "create `_delta_log/N.json` unless it exists". The store must refuse a
/// second create of the same key, also when both arrive at once.
async fn store_put_if_absent(ctx: Ctx) -> TestResult {
    let store = ctx.lake.store();
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let path = Path::from("probe/once.json");
    store
        .put_opts(&path, PutPayload::from("first"), create.clone())
        .await?;
    let second = store
        .put_opts(&path, PutPayload::from("second"), create.clone())
        .await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "{second:?}"
    );
    let body = object_store::ObjectStoreExt::get(store.as_ref(), &path)
        .await?
        .bytes()
        .await?;
    assert_eq!(&body[..], b"first");

    // Races: for each key, several creates at once; exactly one may win.
    const KEYS: usize = 20;
    const RACERS: usize = 6;
    let mut double_wins = Vec::new();
    for k in 0..KEYS {
        let path = Path::from(format!("probe/race-{k}.json"));
        let mut tasks = Vec::new();
        for r in 0..RACERS {
            let (store, path, create) = (ctx.lake.store(), path.clone(), create.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .put_opts(&path, PutPayload::from(format!("racer {r}")), create)
                    .await
            }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await? {
                Ok(_) => wins += 1,
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if wins != 1 {
            double_wins.push((k, wins));
        }
    }
    assert!(
        double_wins.is_empty(),
        "put-if-absent let several writers create the same key (key, winners): {double_wins:?}"
    );
    Ok(())
}

both_backends!(
    concurrent_appends_all_land,
    racing_exactly_once_writes_commit_once,
    store_put_if_absent,
);
