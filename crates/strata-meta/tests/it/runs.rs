//! The run log: start, finish, list, filter, get.

use std::time::Duration;

use chrono::Utc;
use strata_meta::{Error, NewRun, RunFilter, RunId, RunOutcome, RunStatus};
use strata_types::{Classify, ErrorClass};

use crate::support::{TestDb, backend_tests};

backend_tests!(
    start_records_a_running_run,
    finish_records_the_outcome,
    runs_lists_newest_first_and_filters,
    runs_default_limit_is_50,
    get_run_of_unknown_id_is_none,
    finish_rejects_unknown_finished_and_running,
    text_fields_round_trip,
);

fn new_run(command: &str, args: &str) -> NewRun {
    NewRun {
        command: command.into(),
        args: args.into(),
        principal: "alice".into(),
        environment: Some("dev".into()),
    }
}

async fn start_records_a_running_run(db: &TestDb) {
    let store = db.connect().await;
    let before = Utc::now();
    let id = store
        .start_run(new_run("run", "--select orders"))
        .await
        .unwrap();
    let after = Utc::now();

    let run = store
        .get_run(&id)
        .await
        .unwrap()
        .expect("the run just started");
    assert_eq!(run.id, id);
    assert_eq!(run.command, "run");
    assert_eq!(run.args, "--select orders");
    assert_eq!(run.principal, "alice");
    assert_eq!(run.environment.as_deref(), Some("dev"));
    assert_eq!(run.status, RunStatus::Running);
    // Stored with microsecond precision, so compare against truncated bounds.
    let micros = |t: chrono::DateTime<Utc>| t.timestamp_micros();
    assert!(
        micros(before) <= micros(run.started_at),
        "{before} <= {}",
        run.started_at
    );
    assert!(
        micros(run.started_at) <= micros(after),
        "{} <= {after}",
        run.started_at
    );
    assert_eq!(run.finished_at, None);
    assert_eq!(run.duration_ms, None);
    assert_eq!(run.rows, None);
    assert_eq!(run.error, None);
    store.close().await;
}

async fn finish_records_the_outcome(db: &TestDb) {
    let store = db.connect().await;
    let ok = store.start_run(new_run("run", "")).await.unwrap();
    let bad = store.start_run(new_run("ingest", "")).await.unwrap();
    let stopped = store.start_run(new_run("ingest", "")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(25)).await;

    store
        .finish_run(&ok, RunOutcome::success(Some(1234)))
        .await
        .unwrap();
    store
        .finish_run(&bad, RunOutcome::failed("source `crm` unreachable"))
        .await
        .unwrap();
    store
        .finish_run(&stopped, RunOutcome::cancelled())
        .await
        .unwrap();

    let ok = store.get_run(&ok).await.unwrap().unwrap();
    assert_eq!(ok.status, RunStatus::Success);
    assert_eq!(ok.rows, Some(1234));
    assert_eq!(ok.error, None);
    let finished_at = ok.finished_at.expect("finished_at is set");
    assert!(finished_at >= ok.started_at);
    let duration = ok.duration_ms.expect("duration_ms is set");
    assert!(duration >= 25, "slept 25 ms, recorded {duration} ms");
    assert_eq!(duration, (finished_at - ok.started_at).num_milliseconds());

    let bad = store.get_run(&bad).await.unwrap().unwrap();
    assert_eq!(bad.status, RunStatus::Failed);
    assert_eq!(bad.error.as_deref(), Some("source `crm` unreachable"));
    assert_eq!(bad.rows, None);
    assert!(bad.finished_at.is_some() && bad.duration_ms.is_some());

    let stopped = store.get_run(&stopped).await.unwrap().unwrap();
    assert_eq!(stopped.status, RunStatus::Cancelled);
    store.close().await;
}

async fn runs_lists_newest_first_and_filters(db: &TestDb) {
    let store = db.connect().await;
    let mut ids: Vec<RunId> = Vec::new();
    for (i, command) in ["run", "ingest", "run", "test", "run"]
        .into_iter()
        .enumerate()
    {
        ids.push(
            store
                .start_run(new_run(command, &format!("#{i}")))
                .await
                .unwrap(),
        );
        // Distinct start times, whatever the clock's resolution.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    store
        .finish_run(&ids[0], RunOutcome::success(None))
        .await
        .unwrap();
    store
        .finish_run(&ids[1], RunOutcome::failed("boom"))
        .await
        .unwrap();
    store
        .finish_run(&ids[2], RunOutcome::failed("bang"))
        .await
        .unwrap();

    let all = store.runs(RunFilter::new()).await.unwrap();
    let all_ids: Vec<RunId> = all.iter().map(|r| r.id).collect();
    let newest_first: Vec<RunId> = ids.iter().rev().copied().collect();
    assert_eq!(all_ids, newest_first);
    assert!(all.windows(2).all(|w| w[0].started_at >= w[1].started_at));

    let runs = store.runs(RunFilter::new().command("run")).await.unwrap();
    let args: Vec<&str> = runs.iter().map(|r| r.args.as_str()).collect();
    assert_eq!(args, ["#4", "#2", "#0"]);

    let failed = store
        .runs(RunFilter::new().status(RunStatus::Failed))
        .await
        .unwrap();
    let args: Vec<&str> = failed.iter().map(|r| r.args.as_str()).collect();
    assert_eq!(args, ["#2", "#1"]);

    let both = RunFilter {
        command: Some("run".into()),
        status: Some(RunStatus::Failed),
        limit: None,
    };
    let args: Vec<String> = store
        .runs(both)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.args)
        .collect();
    assert_eq!(args, ["#2"]);

    let running = store
        .runs(RunFilter::new().status(RunStatus::Running))
        .await
        .unwrap();
    assert_eq!(running.len(), 2);
    assert!(running.iter().all(|r| r.finished_at.is_none()));

    let two = store.runs(RunFilter::new().limit(2)).await.unwrap();
    let args: Vec<&str> = two.iter().map(|r| r.args.as_str()).collect();
    assert_eq!(args, ["#4", "#3"]);

    assert!(
        store
            .runs(RunFilter::new().command("nope"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .runs(RunFilter::new().limit(0))
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await;
}

async fn runs_default_limit_is_50(db: &TestDb) {
    let store = db.connect().await;
    for i in 0..55 {
        store
            .start_run(new_run("run", &i.to_string()))
            .await
            .unwrap();
    }
    assert_eq!(store.runs(RunFilter::new()).await.unwrap().len(), 50);
    assert_eq!(
        store.runs(RunFilter::new().limit(100)).await.unwrap().len(),
        55
    );
    store.close().await;
}

async fn get_run_of_unknown_id_is_none(db: &TestDb) {
    let store = db.connect().await;
    store.start_run(new_run("run", "")).await.unwrap();
    let unknown = RunId(uuid::Uuid::new_v4());
    assert_eq!(store.get_run(&unknown).await.unwrap(), None);
    store.close().await;
}

async fn finish_rejects_unknown_finished_and_running(db: &TestDb) {
    let store = db.connect().await;

    let unknown = RunId(uuid::Uuid::new_v4());
    let err = store
        .finish_run(&unknown, RunOutcome::success(None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RunNotFound { id } if id == unknown),
        "{err:?}"
    );
    assert!(err.to_string().contains(&unknown.to_string()), "{err}");
    assert_eq!(err.class(), ErrorClass::User);

    let id = store.start_run(new_run("run", "")).await.unwrap();
    let still_running = RunOutcome {
        status: RunStatus::Running,
        rows: None,
        bytes: None,
        error: None,
    };
    let err = store.finish_run(&id, still_running).await.unwrap_err();
    assert!(matches!(err, Error::UnfinishedOutcome { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Internal);
    assert_eq!(
        store.get_run(&id).await.unwrap().unwrap().status,
        RunStatus::Running
    );

    store
        .finish_run(&id, RunOutcome::failed("first"))
        .await
        .unwrap();
    let err = store
        .finish_run(&id, RunOutcome::success(Some(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::RunAlreadyFinished {
                status: RunStatus::Failed,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("already finished with status `failed`"),
        "{err}"
    );
    // The first outcome stands.
    let run = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!(
        (run.status, run.error.as_deref(), run.rows),
        (RunStatus::Failed, Some("first"), None)
    );
    store.close().await;
}

async fn text_fields_round_trip(db: &TestDb) {
    let store = db.connect().await;
    let run = NewRun {
        command: "run".into(),
        args: "--vars '{\"day\": \"2025-01-01\"}' -- ünïcode ✓\nline 2".into(),
        principal: "o'brien@example.com".into(),
        environment: None,
    };
    let id = store.start_run(run.clone()).await.unwrap();
    let error = "line 1\nline 2 with 'quotes' and \"more\"";
    store
        .finish_run(
            &id,
            RunOutcome {
                status: RunStatus::Failed,
                rows: Some(i64::MAX),
                bytes: Some(123),
                error: Some(error.into()),
            },
        )
        .await
        .unwrap();
    let got = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!(got.args, run.args);
    assert_eq!(got.principal, run.principal);
    assert_eq!(got.environment, None);
    assert_eq!(got.rows, Some(i64::MAX));
    assert_eq!(got.bytes, Some(123));
    assert_eq!(got.error.as_deref(), Some(error));
    // Listing maps rows the same way as get_run.
    assert_eq!(store.runs(RunFilter::new()).await.unwrap(), vec![got]);
    store.close().await;
}
