//! `strata serve` with real clients: psql and psycopg over the Postgres wire protocol, as
//! users with grants, row policies, masks and API tokens set up through the CLI.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{ok, project, stderr, stdout, strata_bin};

pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// `strata args…` with extra environment variables; asserts success.
#[track_caller]
pub(crate) fn ok_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = Command::new(strata_bin())
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("STRATA_LOG", "error")
        .output()
        .expect("the strata binary runs");
    assert!(
        o.status.success(),
        "strata {args:?} failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// A running `strata serve`, stopped when dropped.
pub(crate) struct Served {
    child: Child,
    pub(crate) port: u16,
    /// The REST API's port.
    pub(crate) http_port: u16,
    /// Flight SQL's port.
    pub(crate) flight_port: u16,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve(dir: &Path) -> Served {
    serve_with(dir, &[])
}

pub(crate) fn serve_with(dir: &Path, extra: &[&str]) -> Served {
    let mut child = Command::new(strata_bin())
        .args([
            "--json",
            "serve",
            "--pg-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--flight-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .current_dir(dir)
        .env("STRATA_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("strata serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("strata serve prints its address");
    let v: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("strata serve printed {line:?}: {e}"));
    let addr = v["postgres"].as_str().expect("a postgres address");
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    let port_of = |key: &str| {
        v[key]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    };
    Served {
        child,
        port,
        http_port: port_of("http"),
        flight_port: port_of("flight"),
    }
}

fn psql(port: u16, user: &str, password: &str, sql: &str) -> Output {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            "strata",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            sql,
        ])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs")
}

#[track_caller]
pub(crate) fn psql_ok(port: u16, user: &str, password: &str, sql: &str) -> String {
    let o = psql(port, user, password, sql);
    assert!(
        o.status.success(),
        "psql {sql:?} failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

#[track_caller]
fn psql_err(port: u16, user: &str, password: &str, sql: &str) -> String {
    let o = psql(port, user, password, sql);
    assert!(
        !o.status.success(),
        "psql {sql:?} should fail, printed:\n{}",
        stdout(&o)
    );
    stderr(&o)
}

pub(crate) fn python() -> String {
    std::env::var("STRATA_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs a psycopg script with `PORT` and `TOKEN`/`PASSWORD` in its environment; returns
/// its standard output.
fn psycopg(script: &str, env: &[(&str, &str)]) -> String {
    let o = Command::new(python())
        .args(["-c", script])
        .envs(env.iter().copied())
        .output()
        .expect("python runs");
    assert!(
        o.status.success(),
        "psycopg script failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// The start of psycopg scripts: `connect(user)` opens an autocommit connection to `PORT`
/// with `PASSWORD`.
const CONNECT: &str = r#"import os, psycopg
def connect(user):
    return psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user=user,
                           password=os.environ["PASSWORD"], dbname="strata", autocommit=True)
"#;

/// A project with `marts.orders`, an analyst `alice` (region EU) who sees EU orders with
/// masked emails, and a superuser `admin`.
pub(crate) fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let (tmp, dir) = project();
    ok(
        &dir,
        &[
            "sql",
            "CREATE TABLE marts.orders AS SELECT * FROM (VALUES \
               (1, 'alice@example.com', 'EU', 10), (2, 'bob@example.com', 'US', 20), \
               (3, 'carol@example.com', 'EU', 30)) AS v(id, email, region, amount)",
        ],
    );
    ok(&dir, &["sql", "CREATE TABLE raw.secret AS SELECT 42 AS x"]);
    let pw = [("PW", PASSWORD)];
    ok_env(
        &dir,
        &[
            "users",
            "add",
            "alice",
            "--password-env",
            "PW",
            "--attr",
            "region=EU",
        ],
        &pw,
    );
    ok_env(
        &dir,
        &[
            "users",
            "add",
            "admin",
            "--password-env",
            "PW",
            "--superuser",
        ],
        &pw,
    );
    ok(&dir, &["roles", "add", "analyst"]);
    ok(&dir, &["roles", "grant", "analyst", "alice"]);
    ok(&dir, &["grants", "add", "select", "marts", "analyst"]);
    ok(
        &dir,
        &[
            "policies",
            "add-filter",
            "marts.orders",
            "own_region",
            "--using",
            "region = current_user_attribute('region')",
            "--to",
            "analyst",
        ],
    );
    ok(
        &dir,
        &[
            "policies",
            "add-mask",
            "marts.orders.email",
            "--mask",
            "email",
        ],
    );
    (tmp, dir)
}

#[test]
fn psql_sees_only_granted_rows_and_masked_values() {
    let (_tmp, dir) = setup();
    let s = serve(&dir);
    let out = psql_ok(
        s.port,
        "alice",
        PASSWORD,
        "SELECT id, email FROM marts.orders ORDER BY id",
    );
    assert_eq!(out.trim(), "1|a***@example.com\n3|c***@example.com");
    let out = psql_ok(
        s.port,
        "alice",
        PASSWORD,
        "SELECT count(*), sum(amount) FROM marts.orders",
    );
    assert_eq!(out.trim(), "2|40");

    let err = psql_err(s.port, "alice", PASSWORD, "SELECT * FROM raw.secret");
    assert!(err.contains("does not exist or is not granted"), "{err}");
    let err = psql_err(
        s.port,
        "alice",
        PASSWORD,
        "INSERT INTO marts.orders VALUES (4, 'x@y.z', 'EU', 1)",
    );
    assert!(err.contains("permission denied"), "{err}");
    let err = psql_err(s.port, "alice", PASSWORD, "DROP TABLE marts.orders");
    assert!(err.contains("permission denied"), "{err}");
    let err = psql_err(s.port, "alice", "wrong", "SELECT 1");
    assert!(err.contains("password authentication failed"), "{err}");
    let err = psql_err(s.port, "mallory", PASSWORD, "SELECT 1");
    assert!(err.contains("password authentication failed"), "{err}");

    // Every statement and login attempt is in the audit log.
    let deadline = Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&dir, &["--json", "audit", "--limit", "100"])).unwrap();
        let entries = v.as_array().unwrap().clone();
        if entries.len() >= 8 || Instant::now() > deadline {
            break entries;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let find = |user: &str, outcome: &str, needle: &str| {
        entries.iter().any(|r| {
            let e = &r["entry"];
            e["principal"] == user
                && e["surface"] == "pgwire"
                && e["outcome"] == outcome
                && e["statement"].as_str().unwrap_or_default().contains(needle)
        })
    };
    assert!(
        find("alice", "ok", "SELECT id, email FROM marts.orders"),
        "{entries:#?}"
    );
    assert!(
        find("alice", "denied", "INSERT INTO marts.orders"),
        "{entries:#?}"
    );
    assert!(find("alice", "denied", "DROP TABLE"), "{entries:#?}");
    assert!(find("mallory", "denied", "login"), "{entries:#?}");
    assert!(
        entries
            .iter()
            .any(|r| r["entry"]["tables"] == serde_json::json!(["marts.orders"])),
        "{entries:#?}"
    );

    // A superuser sees everything and may change it, through Strata's own statements.
    let out = psql_ok(
        s.port,
        "admin",
        PASSWORD,
        "SELECT email FROM marts.orders ORDER BY id",
    );
    assert!(out.contains("bob@example.com"), "{out}");
    psql_ok(
        s.port,
        "admin",
        PASSWORD,
        "CREATE TABLE sandbox.t AS SELECT id FROM marts.orders",
    );
    let out = psql_ok(
        s.port,
        "admin",
        PASSWORD,
        "INSERT INTO sandbox.t VALUES (9)",
    );
    assert!(out.contains("INSERT 0 1"), "{out}");
    let out = psql_ok(s.port, "admin", PASSWORD, "SELECT count(*) FROM sandbox.t");
    assert_eq!(out.trim(), "4");
    // The lake saw the commit: a later CLI session reads it.
    let out = ok(
        &dir,
        &[
            "sql",
            "SELECT count(*) AS n FROM sandbox.t",
            "--format",
            "csv",
        ],
    );
    assert!(out.contains('4'), "{out}");
}

#[test]
fn psycopg_binds_parameters_and_gets_sqlstates() {
    let (_tmp, dir) = setup();
    let s = serve(&dir);
    let port = s.port.to_string();
    let out = psycopg(
        r#"
import os, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="alice",
                       password=os.environ["PASSWORD"], dbname="strata", autocommit=True)
cur = conn.cursor()
cur.execute("SELECT id, email, amount FROM marts.orders WHERE id = %s", (3,))
print(cur.fetchall())
cur.execute("SELECT id FROM marts.orders WHERE email = %s", ("alice@example.com",))
print(cur.fetchall())
try:
    cur.execute("INSERT INTO marts.orders VALUES (5, 'e@x.y', 'EU', 1)")
except psycopg.Error as e:
    print("denied", e.sqlstate)
try:
    cur.execute("SELECT * FROM raw.secret")
except psycopg.Error as e:
    print("hidden", e.sqlstate)
cur.execute("SELECT 1")
print(cur.fetchone())
admin = psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="admin",
                        password=os.environ["PASSWORD"], dbname="strata", autocommit=True)
a = admin.cursor()
a.execute("INSERT INTO marts.orders VALUES (%s, %s, %s, %s)", (7, "it's@example.com", "EU", 70))
print(a.statusmessage)
a.execute("UPDATE marts.orders SET amount = %s WHERE id = %s", (71, 7))
a.execute("SELECT email, amount FROM marts.orders WHERE id = %s", (7,))
print(a.fetchall())
a.execute("DELETE FROM marts.orders WHERE email = %s", ("'; DROP TABLE marts.orders; --",))
print(a.statusmessage)
a.execute("SELECT count(*) FROM marts.orders")
print(a.fetchone())
"#,
        &[("PORT", &port), ("PASSWORD", PASSWORD)],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "[(3, 'c***@example.com', 30)]", "{out}");
    // Predicates see masked values: the clear email matches nothing.
    assert_eq!(lines[1], "[]", "{out}");
    assert_eq!(lines[2], "denied 42501", "{out}");
    assert_eq!(lines[3], "hidden 42501", "{out}");
    // The connection survives its errors.
    assert_eq!(lines[4], "(1,)", "{out}");
    // Writes take bound parameters as values, never as SQL text.
    assert_eq!(lines[5], "INSERT 0 1", "{out}");
    assert_eq!(lines[6], "[(\"it's@example.com\", 71)]", "{out}");
    assert_eq!(lines[7], "DELETE 0", "{out}");
    assert_eq!(lines[8], "(4,)", "{out}");
}

/// A server-side prepared statement (psycopg `prepare=True`, JDBC after its threshold) runs
/// against the table as it is when it runs, with the principal's filter and mask; it reads
/// the columns it was prepared with when columns were added, and asks to be prepared again
/// when they changed. psycopg's `DEALLOCATE ALL` after DDL drops the connection's statements.
#[test]
fn prepared_statements_read_the_latest_version_each_time_they_run() {
    let (_tmp, dir) = setup();
    let s = serve(&dir);
    let port = s.port.to_string();
    let out = psycopg(
        &format!(
            r#"
{CONNECT}a = connect("alice").cursor()
d = connect("admin").cursor()
# DDL from another connection: psycopg drops its own prepared statements after DDL it runs.
ddl = connect("admin").cursor()
q = "SELECT id, email FROM marts.orders WHERE amount > %s ORDER BY id"
a.execute(q, (0,), prepare=True); print(a.fetchall())
d.execute("INSERT INTO marts.orders VALUES (4, 'dan@example.com', 'EU', 40)")
a.execute(q, (0,), prepare=True); print(a.fetchall())
d.execute("DELETE FROM marts.orders WHERE id = 1")
a.execute(q, (0,), prepare=True); print(a.fetchall())
c = "SELECT count(*) FROM marts.orders WHERE amount > %s"
d.execute(c, (0,), prepare=True); print(d.fetchone()[0])
s = "SELECT * FROM marts.orders WHERE id = %s"
d.execute(s, (2,), prepare=True); print(len(d.fetchone()))
ddl.execute("ALTER TABLE marts.orders ADD COLUMN note VARCHAR")
d.execute(s, (2,), prepare=True); print(len(d.fetchone()))
d.execute(c, (0,), prepare=True); print(d.fetchone()[0])
ddl.execute("CREATE OR REPLACE TABLE marts.orders AS SELECT id, region, amount FROM marts.orders")
try:
    d.execute(s, (2,), prepare=True); print("unchanged", d.fetchone())
except psycopg.Error as e:
    print("changed", e.sqlstate, "prepare it again" in str(e))
d.execute(s, (2,), prepare=False); print(len(d.fetchone()))
ddl.execute("DROP TABLE marts.orders")
try:
    d.execute(c, (0,), prepare=True); print("still there", d.fetchone())
except psycopg.Error as e:
    print("dropped", e.sqlstate)
ddl.execute("DEALLOCATE ALL"); print(ddl.statusmessage)
"#
        ),
        &[("PORT", &port), ("PASSWORD", PASSWORD)],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "[(1, 'a***@example.com'), (3, 'c***@example.com')]",
            "[(1, 'a***@example.com'), (3, 'c***@example.com'), (4, 'd***@example.com')]",
            "[(3, 'c***@example.com'), (4, 'd***@example.com')]",
            "3",
            "4",
            "4",
            "3",
            "changed 0A000 True",
            "3",
            "dropped 42P01",
            "DEALLOCATE ALL",
        ],
        "{out}"
    );
}

/// Lookups by key (answered from the pages holding the key, without planning each run) give
/// what a scan gives: the principal's row filter and masks, the access of the moment, every
/// type in text and binary.
#[test]
fn key_lookups_apply_policies_and_encode_every_type() {
    let (_tmp, dir) = setup();
    let s = serve(&dir);
    let port = s.port.to_string();
    let out = psycopg(
        &format!(
            r#"
import time
{CONNECT}a = connect("alice").cursor()
d = connect("admin").cursor()
q = "SELECT * FROM marts.orders WHERE id = %s"
for k in (1, 2, 3, 4):
    a.execute(q, (k,), prepare=True); print(a.fetchall())
d.execute("DROP POLICY own_region ON marts.orders")
time.sleep(2.5)
a.execute(q, (2,), prepare=True); print(a.fetchall())
d.execute("REVOKE SELECT ON SCHEMA marts FROM analyst")
time.sleep(2.5)
try:
    a.execute(q, (1,), prepare=True); print("still readable", a.fetchall())
except psycopg.Error as e:
    print("refused", e.sqlstate)
d.execute("CREATE TABLE marts.typed AS SELECT * FROM (VALUES "
          "(1, CAST(2 AS BIGINT), 'x', DATE '2024-02-29', TIMESTAMP '2024-01-02 03:04:05.123456', "
          "CAST(12.34 AS DECIMAL(10,2)), true, 1.5, NULL), "
          "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'y')) AS v(id, big, s, d, ts, dec, b, f, n)")
look = "SELECT * FROM marts.typed WHERE id = %s"
scan = "SELECT * FROM marts.typed WHERE id >= %s AND id <= %s"
for binary in (False, True):
    for k in (1, 2):
        d.execute(look, (k,), prepare=True, binary=binary); x = d.fetchall()
        d.execute(scan, (k, k), prepare=True, binary=binary); y = d.fetchall()
        print(binary, x == y, x)
"#
        ),
        &[("PORT", &port), ("PASSWORD", PASSWORD)],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "[(1, 'a***@example.com', 'EU', 10)]",
            "[]",
            "[(3, 'c***@example.com', 'EU', 30)]",
            "[]",
            "[(2, 'b***@example.com', 'US', 20)]",
            "refused 42501",
            "False True [(1, 2, 'x', datetime.date(2024, 2, 29), datetime.datetime(2024, 1, 2, 3, 4, 5, 123456), Decimal('12.34'), True, 1.5, None)]",
            "False True [(2, None, None, None, None, None, None, None, 'y')]",
            "True True [(1, 2, 'x', datetime.date(2024, 2, 29), datetime.datetime(2024, 1, 2, 3, 4, 5, 123456), Decimal('12.34'), True, 1.5, None)]",
            "True True [(2, None, None, None, None, None, None, None, 'y')]",
        ],
        "{out}"
    );
}

/// A statement prepared before a policy or grant changed runs under the new access, as
/// PostgreSQL re-plans a cached plan after `REVOKE`: the row filter it was planned with goes
/// away with the policy, and a revoked grant refuses it.
#[test]
fn prepared_statements_follow_access_changes_made_after_they_were_prepared() {
    let (_tmp, dir) = setup();
    let s = serve(&dir);
    let port = s.port.to_string();
    let out = psycopg(
        &format!(
            r#"
import time
{CONNECT}a = connect("alice").cursor()
d = connect("admin").cursor()
q = "SELECT id, email FROM marts.orders WHERE amount > %s ORDER BY id"
a.execute(q, (0,), prepare=True); print(a.fetchall())
# Prepared under the row filter; the filter goes away.
d.execute("DROP POLICY own_region ON marts.orders")
time.sleep(2.5)
a.execute(q, (0,), prepare=True); print(a.fetchall())
# Prepared again after the change, before any other statement ran on the connection.
d.execute("CREATE POLICY own_region ON marts.orders TO analyst USING (region = current_user_attribute('region'))")
time.sleep(2.5)
p = "SELECT count(*) FROM marts.orders WHERE amount > %s"
a.execute(p, (0,), prepare=True); print(a.fetchone()[0])
a.execute(q, (0,), prepare=True); print(a.fetchall())
d.execute("REVOKE SELECT ON SCHEMA marts FROM analyst")
time.sleep(2.5)
for sql in (q, p):
    try:
        a.execute(sql, (0,), prepare=True); print("still readable", a.fetchall())
    except psycopg.Error as e:
        print("refused", e.sqlstate)
"#
        ),
        &[("PORT", &port), ("PASSWORD", PASSWORD)],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "[(1, 'a***@example.com'), (3, 'c***@example.com')]",
            "[(1, 'a***@example.com'), (2, 'b***@example.com'), (3, 'c***@example.com')]",
            "2",
            "[(1, 'a***@example.com'), (3, 'c***@example.com')]",
            "refused 42501",
            "refused 42501",
        ],
        "{out}"
    );

    // Executions of prepared statements are audited like simple queries, refusals included.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&dir, &["--json", "audit", "--limit", "200"])).unwrap();
        let count = |outcome: &str| {
            v.as_array()
                .unwrap()
                .iter()
                .filter(|r| {
                    let e = &r["entry"];
                    e["principal"] == "alice"
                        && e["surface"] == "pgwire"
                        && e["outcome"] == outcome
                        && e["statement"]
                            .as_str()
                            .unwrap_or_default()
                            .contains("FROM marts.orders WHERE amount >")
                })
                .count()
        };
        if (count("ok"), count("denied")) == (4, 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice's prepared executions: {} ok, {} denied in {v:#}",
            count("ok"),
            count("denied")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn api_tokens_log_in_and_revocation_ends_open_connections() {
    let (_tmp, dir) = setup();
    let created: serde_json::Value = serde_json::from_str(&ok(
        &dir,
        &["--json", "tokens", "create", "alice", "--name", "bi"],
    ))
    .unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    let s = serve(&dir);
    let out = psql_ok(s.port, "alice", &token, "SELECT count(*) FROM marts.orders");
    assert_eq!(out.trim(), "2");
    // Another user's token does not work as alice's password for admin.
    let err = psql_err(s.port, "admin", &token, "SELECT 1");
    assert!(err.contains("password authentication failed"), "{err}");

    // A connection open before the revocation fails within seconds after it.
    let port = s.port.to_string();
    let mut script = Command::new(python())
        .args([
            "-c",
            r#"
import os, sys, time, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="alice",
                       password=os.environ["TOKEN"], dbname="strata", autocommit=True)
conn.execute("SELECT 1")
print("connected", flush=True)
sys.stdin.readline()
deadline = time.time() + 20
while time.time() < deadline:
    try:
        conn.execute("SELECT 1")
    except psycopg.Error as e:
        print("ended", e.sqlstate, flush=True)
        break
    time.sleep(0.2)
else:
    print("still open", flush=True)
"#,
        ])
        .env("PORT", &port)
        .env("TOKEN", &token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut reader = BufReader::new(script.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "connected");
    ok(&dir, &["tokens", "revoke", &id]);
    let revoked_at = Instant::now();
    use std::io::Write;
    script.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    let _ = script.wait();
    assert!(line.starts_with("ended"), "{line}");
    assert!(revoked_at.elapsed() < Duration::from_secs(10));
    let err = psql_err(s.port, "alice", &token, "SELECT 1");
    assert!(err.contains("password authentication failed"), "{err}");
}

/// In the clear, the Postgres surface logs users in by SCRAM-SHA-256: passwords and API
/// tokens both pass without travelling, a client that insists on a cleartext password is
/// refused, and a password change keeps the user's tokens working. `require_auth` makes
/// libpq (16+, as psycopg ships it) refuse any other method, so the test sees which one ran.
#[test]
fn scram_sha_256_logs_in_passwords_and_tokens_without_sending_them() {
    let (_tmp, dir) = setup();
    let created: serde_json::Value = serde_json::from_str(&ok(
        &dir,
        &["--json", "tokens", "create", "alice", "--name", "laptop"],
    ))
    .unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    let s = serve(&dir);
    let script = r#"
import os, psycopg
def attempt(secret, method):
    try:
        with psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="alice",
                             password=secret, dbname="strata", require_auth=method,
                             connect_timeout=10) as conn:
            return "ok " + str(conn.execute("SELECT count(*) FROM marts.orders").fetchone()[0])
    except psycopg.OperationalError as e:
        text = str(e)
        if "password authentication failed" in text:
            return "refused"
        if "require_auth" in text or "server requested" in text:
            return "method refused by client"
        return "other: " + text
print("password", attempt(os.environ["PASSWORD"], "scram-sha-256"))
print("token", attempt(os.environ["TOKEN"], "scram-sha-256"))
print("wrong", attempt("not the password", "scram-sha-256"))
print("cleartext", attempt(os.environ["PASSWORD"], "password"))
"#;
    let port = s.port.to_string();
    let out = psycopg(
        script,
        &[("PORT", &port), ("PASSWORD", PASSWORD), ("TOKEN", &token)],
    );
    assert_eq!(
        out.trim(),
        "password ok 2\ntoken ok 2\nwrong refused\ncleartext method refused by client",
        "{out}"
    );
    // psql (whatever its libpq) logs in the same way.
    assert_eq!(
        psql_ok(
            s.port,
            "alice",
            PASSWORD,
            "SELECT count(*) FROM marts.orders"
        )
        .trim(),
        "2"
    );

    // A new password: the old one stops working, the new one and the token work.
    ok_env(
        &dir,
        &["users", "passwd", "alice", "--password-env", "PW"],
        &[("PW", "a brand new passphrase")],
    );
    let out = psycopg(
        r#"
import os, psycopg
for label, secret in [("old", os.environ["PASSWORD"]), ("new", "a brand new passphrase"),
                      ("token", os.environ["TOKEN"])]:
    try:
        psycopg.connect(host="127.0.0.1", port=int(os.environ["PORT"]), user="alice",
                        password=secret, dbname="strata", require_auth="scram-sha-256",
                        connect_timeout=10).close()
        print(label, "ok")
    except psycopg.OperationalError as e:
        print(label, "refused" if "password authentication failed" in str(e) else e)
"#,
        &[("PORT", &port), ("PASSWORD", PASSWORD), ("TOKEN", &token)],
    );
    assert_eq!(out.trim(), "old refused\nnew ok\ntoken ok", "{out}");

    // Unknown users get the same SCRAM challenge and the same answer.
    let err = psql_err(s.port, "nobody", PASSWORD, "SELECT 1");
    assert!(
        err.contains("password authentication failed for user \"nobody\""),
        "{err}"
    );
}

#[test]
fn superusers_manage_roles_users_and_grants_in_sql() {
    let (_tmp, dir) = setup();
    let s = serve(&dir);
    psql_ok(s.port, "admin", PASSWORD, "CREATE ROLE viewer");
    psql_ok(
        s.port,
        "admin",
        PASSWORD,
        "CREATE ROLE bob LOGIN PASSWORD 'bobs pw' IN ROLE viewer",
    );
    // PostgreSQL's CREATE USER: a role that logs in.
    psql_ok(
        s.port,
        "admin",
        PASSWORD,
        "CREATE USER carol WITH PASSWORD 'carols pw' IN ROLE viewer",
    );
    psql_ok(
        s.port,
        "admin",
        PASSWORD,
        "GRANT SELECT ON marts.orders, raw.secret TO viewer",
    );
    let out = psql_ok(s.port, "carol", "carols pw", "SELECT x FROM raw.secret");
    assert_eq!(out.trim(), "42");
    // Role membership in PostgreSQL's spelling.
    psql_ok(
        s.port,
        "admin",
        PASSWORD,
        "CREATE USER dave PASSWORD 'daves pw'",
    );
    let err = psql_err(s.port, "dave", "daves pw", "SELECT x FROM raw.secret");
    assert!(err.contains("not granted"), "{err}");
    let out = psql_ok(s.port, "admin", PASSWORD, "GRANT viewer TO dave");
    assert!(out.contains("GRANT ROLE"), "{out}");
    let out = psql_ok(s.port, "dave", "daves pw", "SELECT x FROM raw.secret");
    assert_eq!(out.trim(), "42");
    psql_ok(s.port, "admin", PASSWORD, "REVOKE viewer FROM dave");
    let deadline = Instant::now() + Duration::from_secs(10);
    while psql(s.port, "dave", "daves pw", "SELECT x FROM raw.secret")
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the role revoke did not take effect"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // marts.orders has row policies and none applies to viewers: no rows (default deny).
    let out = psql_ok(
        s.port,
        "bob",
        "bobs pw",
        "SELECT count(*) FROM marts.orders",
    );
    assert_eq!(out.trim(), "0");
    let out = psql_ok(s.port, "bob", "bobs pw", "SELECT x FROM raw.secret");
    assert_eq!(out.trim(), "42");
    // Row filters in PostgreSQL's policy syntax.
    let count_eventually = |expected: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = psql_ok(
                s.port,
                "bob",
                "bobs pw",
                "SELECT count(*) FROM marts.orders",
            );
            if out.trim() == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "bob counts {out}, not {expected}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let out = psql_ok(
        s.port,
        "admin",
        PASSWORD,
        "CREATE POLICY small ON marts.orders FOR SELECT TO viewer USING (amount < 25)",
    );
    assert!(out.contains("CREATE POLICY"), "{out}");
    count_eventually("2");
    let err = psql_err(
        s.port,
        "admin",
        PASSWORD,
        "CREATE POLICY small ON marts.orders TO viewer USING (true)",
    );
    assert!(err.contains("already exists"), "{err}");
    let err = psql_err(
        s.port,
        "alice",
        PASSWORD,
        "DROP POLICY own_region ON marts.orders",
    );
    assert!(err.contains("only superusers"), "{err}");
    psql_ok(
        s.port,
        "admin",
        PASSWORD,
        "DROP POLICY small ON marts.orders",
    );
    count_eventually("0");
    let policies = ok(&dir, &["--json", "policies", "list"]);
    assert!(!policies.contains("small"), "{policies}");
    psql_ok(
        s.port,
        "admin",
        PASSWORD,
        "REVOKE SELECT ON raw.secret FROM viewer",
    );
    // The server notices within about a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = psql(s.port, "bob", "bobs pw", "SELECT x FROM raw.secret");
        if !o.status.success() {
            assert!(stderr(&o).contains("not granted"), "{}", stderr(&o));
            break;
        }
        assert!(Instant::now() < deadline, "the revoke did not take effect");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Only superusers manage access.
    let err = psql_err(
        s.port,
        "alice",
        PASSWORD,
        "CREATE ROLE sneaky LOGIN PASSWORD 'x'",
    );
    assert!(err.contains("only superusers"), "{err}");
    let err = psql_err(
        s.port,
        "alice",
        PASSWORD,
        "GRANT ALL ON marts.orders TO alice",
    );
    assert!(err.contains("only superusers"), "{err}");
    psql_ok(s.port, "admin", PASSWORD, "DROP ROLE bob");
    let err = psql_err(s.port, "bob", "bobs pw", "SELECT 1");
    assert!(err.contains("password authentication failed"), "{err}");
    let users = ok(&dir, &["--json", "users", "list"]);
    assert!(
        !users.contains("\"bob\"") && !users.contains("sneaky"),
        "{users}"
    );
}

#[test]
fn tls_connections_with_a_given_certificate() {
    let (tmp, dir) = setup();
    let cert = tmp.path().join("server.crt");
    let key = tmp.path().join("server.key");
    let o = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(o.status.success(), "{}", stderr(&o));
    let s = serve_with(
        &dir,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let o = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.port.to_string(),
            "-U",
            "alice",
            "-d",
            "strata",
        ])
        .args([
            "-At",
            "-c",
            "SELECT count(*) FROM marts.orders",
            "-c",
            "\\conninfo",
        ])
        .env("PGPASSWORD", PASSWORD)
        .env("PGSSLMODE", "require")
        .output()
        .expect("psql runs");
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.starts_with("2\n"), "{out}");
    assert!(out.contains("SSL connection"), "{out}");
    // A key that does not match the certificate is refused at start, clearly.
    let other = tmp.path().join("other.key");
    let o = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-out"])
        .arg(&other)
        .output()
        .expect("openssl runs");
    assert!(o.status.success());
    let o = Command::new(strata_bin())
        .args(["serve", "--pg-addr", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&other)
        .current_dir(&dir)
        .output()
        .expect("strata runs");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("do not match"), "{}", stderr(&o));
}

#[test]
fn psql_describes_what_the_user_may_see() {
    let (_tmp, dir) = setup();
    let s = serve(&dir);
    let out = psql_ok(s.port, "alice", PASSWORD, "\\dn");
    let schemas: Vec<&str> = out.lines().map(|l| l.split('|').next().unwrap()).collect();
    assert_eq!(schemas, vec!["marts"], "{out}");
    let out = psql_ok(s.port, "alice", PASSWORD, "\\dt marts.*");
    assert_eq!(
        out.trim().split('|').take(3).collect::<Vec<_>>(),
        vec!["marts", "orders", "table"],
        "{out}"
    );
    let out = psql_ok(s.port, "alice", PASSWORD, "\\d marts.orders");
    for column in ["id|bigint", "email|text", "region|text", "amount|bigint"] {
        assert!(out.contains(column), "{column} in {out}");
    }
    // The verbose forms: storage and description columns, the table's access method.
    let out = psql_ok(s.port, "alice", PASSWORD, "\\d+ marts.orders");
    for column in ["id|bigint", "email|text", "region|text", "amount|bigint"] {
        assert!(out.contains(column), "{column} in {out}");
    }
    let out = psql_ok(s.port, "alice", PASSWORD, "\\dt+ marts.*");
    assert!(out.starts_with("marts|orders|table|"), "{out}");
    let out = psql_ok(s.port, "admin", PASSWORD, "\\dn");
    assert!(out.contains("marts") && out.contains("raw"), "{out}");
}
