//! End-to-end tests of the `strata` binary: a real process, a real project directory, a
//! real lake on disk.

mod access_as_code;
mod authz_matrix;
mod clients;
mod crash;
mod dbt_compat;
mod demo;
mod errors;
mod flight;
mod garbage;
mod incremental;
mod models;
mod rest;
mod s3;
mod serve;
mod sources;
mod workflow;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn strata_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strata"))
}

/// Runs `strata args…` in `dir`.
pub(crate) fn strata(dir: &Path, args: &[&str]) -> Output {
    Command::new(strata_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("STRATA_PROJECT")
        .env_remove("STRATA_ENV")
        .env("STRATA_LOG", "error")
        .output()
        .expect("the strata binary runs")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The rest of the line of `out` that starts with `key` and a space (client scripts print
/// their findings as `key value` lines).
#[track_caller]
pub(crate) fn labelled(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no `{key}` line in:\n{out}"))
        .to_string()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `strata args…` in `dir` with `input` on standard input.
pub(crate) fn strata_with_input(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(strata_bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the strata binary runs");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .expect("the child reads its input");
    child.wait_with_output().expect("the child exits")
}

/// Runs and asserts success, returning stdout.
#[track_caller]
pub(crate) fn ok(dir: &Path, args: &[&str]) -> String {
    let o = strata(dir, args);
    assert!(
        o.status.success(),
        "strata {args:?} failed ({:?}):\n{}\n{}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// A new project in a temporary directory.
pub(crate) fn project() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    ok(tmp.path(), &["init", "p", "--quiet"]);
    (tmp, dir)
}
