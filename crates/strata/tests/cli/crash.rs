//! A writer killed with SIGKILL at any instant leaves the table readable at a complete
//! version: the old one or the new one, never a mix.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{ok, project};

const ROWS: u64 = 200_000;

fn generation_sql(table: &str, generation: u64, replace: bool) -> String {
    let verb = if replace {
        "create or replace table"
    } else {
        "create table"
    };
    format!(
        "{verb} {table} as select value as id, {generation} as generation, md5(cast(value as varchar)) as payload from generate_series(1, {ROWS}) as t(value)"
    )
}

/// Rows per generation in the table: must be exactly one generation, complete.
fn check(dir: &std::path::Path, table: &str) -> u64 {
    let out = ok(
        dir,
        &[
            "sql",
            &format!(
                "select count(*) as n, count(distinct generation) as g, min(generation) as gen from {table}"
            ),
            "-f",
            "csv",
        ],
    );
    let line = out.lines().nth(1).unwrap().to_string();
    let parts: Vec<u64> = line.split(',').map(|p| p.parse().unwrap()).collect();
    assert_eq!(parts[0], ROWS, "incomplete table after a crash: {line}");
    assert_eq!(parts[1], 1, "mixed generations after a crash: {line}");
    parts[2]
}

/// Pseudo-random kill delays spread over the writer's run time.
fn delays(n: usize, max_ms: u64) -> Vec<u64> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            5 + x % max_ms
        })
        .collect()
}

fn kill_writer_repeatedly(statement: impl Fn(u64) -> String, table: &str, dir: &std::path::Path) {
    // How long does one write take? Kill within that window.
    let started = std::time::Instant::now();
    ok(dir, &["sql", &statement(1)]);
    let window = (started.elapsed().as_millis() as u64).max(50);
    let mut landed = 0;
    // Up to 1.5× the write time, so that some kills land after the commit too.
    for (i, delay) in delays(20, window * 3 / 2).into_iter().enumerate() {
        let generation = i as u64 + 2;
        let mut child = Command::new(crate::strata_bin())
            .args(["sql", "--quiet", &statement(generation)])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL on Unix
        let _ = child.wait();
        let seen = check(dir, table);
        assert!(seen <= generation, "generation {seen} from the future");
        if seen == generation {
            landed += 1;
        }
    }
    eprintln!("{landed} of 20 killed writes had committed before the kill");
}

#[test]
fn kill_during_overwrite_leaves_previous_or_new_version() {
    let (_tmp, dir) = project();
    ok(&dir, &["sql", &generation_sql("raw.k", 0, false)]);
    kill_writer_repeatedly(|g| generation_sql("raw.k", g, true), "raw.k", &dir);
}

#[test]
fn kill_during_merge_leaves_previous_or_new_version() {
    let (_tmp, dir) = project();
    ok(&dir, &["sql", &generation_sql("raw.m", 0, false)]);
    kill_writer_repeatedly(
        |g| {
            format!(
                "merge into raw.m t using (select value as id, {g} as generation from generate_series(1, {ROWS}) as s(value)) s
                 on t.id = s.id when matched then update set generation = s.generation"
            )
        },
        "raw.m",
        &dir,
    );
}

#[test]
fn ctrl_c_stops_without_committing() {
    let (_tmp, dir) = project();
    let child = Command::new(crate::strata_bin())
        .args([
            "sql",
            "create table raw.big as select value as id, md5(cast(value as varchar)) as payload from generate_series(1, 20000000) as t(value)",
        ])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let tables = ok(&dir, &["tables", "--json"]);
    assert_eq!(tables.trim(), "[]", "a table was committed: {tables}");
}

/// An incremental ingestion of 1 M rows killed at 20 moments and resumed each time ends
/// with exactly the source's rows: none missing, none doubled.
#[test]
fn ingestion_killed_20_times_ends_exactly_once() {
    let Ok(url) = std::env::var("STRATA_IT_POSTGRES") else {
        eprintln!(
            "SKIP ingestion_killed_20_times_ends_exactly_once: STRATA_IT_POSTGRES is not set"
        );
        return;
    };
    let schema = format!("cli_kill_{}", std::process::id());
    let psql = |sql: &str| -> String {
        let o = Command::new("psql")
            .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
            .output()
            .expect("psql runs");
        assert!(
            o.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    psql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.events (id bigint PRIMARY KEY, seq bigint NOT NULL, amount numeric(12,2) NOT NULL, version int NOT NULL);
         INSERT INTO {schema}.events SELECT g, g, g % 1000 + 0.25, 1 FROM generate_series(1, 1000000) g;
         CREATE SEQUENCE {schema}.seq START 2000000;"
    ));
    let (_tmp, dir) = project();
    std::fs::write(
        dir.join("sources/app.yml"),
        format!(
            "type: postgres\nurl: {url}\nstreams:\n  - table: {schema}.events\n    mode: incremental\n    cursor: seq\n    primary_key: [id]\n"
        ),
    )
    .unwrap();
    // Calibrate on a scratch project: how long does the whole first load take? Kills are
    // spread over 1.5× that, so some land mid-read, some mid-write, some after a commit.
    let (_scratch_tmp, scratch) = project();
    std::fs::copy(dir.join("sources/app.yml"), scratch.join("sources/app.yml")).unwrap();
    let t0 = std::time::Instant::now();
    ok(&scratch, &["ingest", "--quiet"]);
    let window = (t0.elapsed().as_millis() as u64).max(200) * 3 / 2;
    for (i, delay) in delays(20, window).into_iter().enumerate() {
        let mut child = Command::new(crate::strata_bin())
            .args(["ingest", "--quiet"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        // The source keeps changing between attempts: updates and inserts.
        psql(&format!(
            "UPDATE {schema}.events SET seq = nextval('{schema}.seq'), amount = amount + 1, version = version + 1 WHERE id % 97 = {i};
             INSERT INTO {schema}.events SELECT 1000000 + {i} * 1000 + g, nextval('{schema}.seq'), g, 1 FROM generate_series(1, 1000) g;"
        ));
    }
    ok(&dir, &["ingest", "--quiet"]);
    let expected = psql(&format!(
        "SELECT count(*) || ',' || count(DISTINCT id) || ',' || sum(id) || ',' || sum(amount) || ',' || sum(id * version) FROM {schema}.events"
    ));
    let got = ok(
        &dir,
        &[
            "sql",
            "select cast(count(*) as varchar) || ',' || cast(count(distinct id) as varchar) || ',' || cast(sum(id) as varchar) || ',' || cast(sum(amount) as varchar) || ',' || cast(sum(id * version) as varchar) as v from raw.app_events",
            "-f",
            "csv",
        ],
    );
    assert_eq!(got.lines().nth(1).unwrap().trim_matches('"'), expected);
    let d: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["describe", "raw.app_events", "--json"])).unwrap();
    eprintln!(
        "{} commits landed across 20 killed runs and the final one",
        d["version"].as_u64().unwrap() + 1
    );
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
}
