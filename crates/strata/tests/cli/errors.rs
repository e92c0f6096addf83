//! Bad input: one clear message naming what, where and how to fix; nothing changed.

use crate::{ok, project, stderr, strata};

#[test]
fn malformed_project_file_names_file_line_and_column() {
    let (_tmp, dir) = project();
    std::fs::write(
        dir.join("strata.yml"),
        "name: shop\nengine:\n  memory_limt: 1GB\n",
    )
    .unwrap();
    let o = strata(&dir, &["sql", "select 1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("strata.yml:3:3"), "{err}");
    assert!(err.contains("memory_limt"), "{err}");

    std::fs::write(dir.join("strata.yml"), "name: shop\nlake: s3://\n").unwrap();
    let err = stderr(&strata(&dir, &["tables"]));
    assert!(
        err.contains("strata.yml:2:7") && err.contains("has no bucket"),
        "{err}"
    );

    std::fs::write(
        dir.join("strata.yml"),
        "name: shop\nmetadata: postgres://u:${env:STRATA_TEST_UNSET_PW}@h/db\n",
    )
    .unwrap();
    let err = stderr(&strata(&dir, &["tables"]));
    assert!(err.contains("`STRATA_TEST_UNSET_PW` is not set"), "{err}");
}

#[test]
fn secrets_never_appear_in_messages() {
    let (_tmp, dir) = project();
    std::fs::write(
        dir.join("strata.yml"),
        "name: shop\nmetadata: postgres://strata:${env:STRATA_TEST_PW}@127.0.0.1:1/db\n",
    )
    .unwrap();
    let o = std::process::Command::new(crate::strata_bin())
        .args(["runs"])
        .current_dir(&dir)
        .env("STRATA_TEST_PW", "very-secret-pw")
        .env("STRATA_LOG", "warn")
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!o.status.success());
    assert!(!all.contains("very-secret-pw"), "{all}");
    assert!(
        all.contains("unavailable") || all.contains("127.0.0.1:1"),
        "{all}"
    );
}

#[test]
fn outside_a_project() {
    let tmp = tempfile::tempdir().unwrap();
    let o = strata(tmp.path(), &["sql", "select 1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no Strata project found"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("strata init"), "{}", stderr(&o));
    let o = strata(tmp.path(), &["init", "--quiet"]);
    assert!(o.status.success());
    let o = strata(tmp.path(), &["init"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already contains a Strata project"));
}

#[test]
fn sql_errors_exit_1_and_change_nothing() {
    let (_tmp, dir) = project();
    ok(
        &dir,
        &[
            "sql",
            "create table raw.t (id bigint not null, name varchar)",
        ],
    );
    ok(&dir, &["sql", "insert into raw.t values (1, 'one')"]);
    for (sql, expect) in [
        ("selec 1", "SQL syntax error"),
        ("select * from raw.tt", "did you mean `raw.t`?"),
        (
            "insert into raw.t values ('abc', 'x')",
            "Cannot cast string 'abc'",
        ),
        (
            "insert into raw.t values (2, 'two'); insert into raw.nope values (1)",
            "`raw.nope` does not exist",
        ),
        ("", "no SQL statement given"),
    ] {
        let o = strata(&dir, &["sql", sql]);
        assert_eq!(o.status.code(), Some(1), "{sql}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.starts_with("error: ") || err.contains("\nerror: "),
            "{err}"
        );
        assert!(err.contains(expect), "{sql}: {err}");
    }
    // Statements before a failing one in the same script did commit (each is its own
    // commit, like autocommit in psql); the failed ones left nothing.
    assert_eq!(
        ok(
            &dir,
            &["sql", "select id, name from raw.t order by id", "-f", "csv"]
        ),
        "id,name\n1,one\n2,two\n"
    );
}
