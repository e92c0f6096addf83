//! The authorization matrix: principals × objects × operations, each run through the
//! Postgres protocol (psycopg), the REST API and Flight SQL (ADBC). Every surface must give
//! the same answer, no row or value may leak past a grant, row policy or mask, and no
//! spelling of a write may get through a read-only role.

use std::process::Command;

use crate::serve::{PASSWORD, ok_env, python, serve};
use crate::{ok, project, stderr, stdout};

/// Reads run by every principal.
const READS: &[&str] = &[
    "SELECT * FROM marts.orders ORDER BY id",
    "SELECT id, amount FROM marts.orders ORDER BY id",
    "SELECT email FROM marts.orders ORDER BY id",
    "SELECT count(*) AS n FROM marts.orders",
    "SELECT sum(amount) AS s FROM marts.orders",
    "SELECT region, count(*) AS n FROM marts.orders GROUP BY region ORDER BY region",
    "SELECT id FROM marts.orders WHERE region = 'US' ORDER BY id",
    "SELECT id FROM marts.orders WHERE email LIKE 'us-%' ORDER BY id",
    "SELECT o.id, c.name FROM marts.orders o JOIN marts.customers c ON o.id = c.id ORDER BY o.id",
    "SELECT * FROM marts.customers ORDER BY id",
    "SELECT * FROM raw.secret",
    "SELECT * FROM raw.nope",
    "SELECT x FROM raw.secret WHERE x IS NOT NULL",
    "SELECT (SELECT count(*) FROM raw.secret) AS n",
    "SELECT id FROM marts.orders WHERE id IN (SELECT 2) ORDER BY id",
    "WITH o AS (SELECT * FROM marts.orders) SELECT count(*) AS n FROM o",
    "SELECT * FROM marts.big_orders ORDER BY id",
    "SELECT count(*) AS n FROM marts.big_orders",
    "SELECT * FROM sandbox.t ORDER BY id",
    "SELECT 1 AS one",
    "SELECT max(email) AS m FROM marts.orders",
    "SELECT id FROM marts.orders UNION ALL SELECT id FROM marts.customers ORDER BY 1",
    "SELECT count(*) AS n FROM marts.orders WHERE region <> 'EU'",
    "SELECT id, amount FROM marts.orders WHERE amount > 25 ORDER BY id",
    "SELECT lower(email) AS e FROM marts.orders ORDER BY 1",
    "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN ('marts', 'raw', 'sandbox') ORDER BY 1, 2",
    "SELECT id FROM marts.orders WHERE EXISTS (SELECT 1 FROM raw.secret) ORDER BY id",
];

/// Writes, however spelled: refused for every read-only principal.
const WRITES: &[&str] = &[
    "INSERT INTO marts.orders VALUES (9, 'x@y.z', 'EU', 1)",
    "insert into MARTS.ORDERS values (9, 'x@y.z', 'EU', 1)",
    "INSERT INTO \"marts\".\"orders\" VALUES (9, 'x@y.z', 'EU', 1)",
    "INSERT INTO marts.orders SELECT * FROM marts.orders",
    "WITH x AS (SELECT * FROM marts.orders) INSERT INTO marts.orders SELECT * FROM x",
    "INSERT INTO marts.orders (id, amount) VALUES (9, 1)",
    "INSERT OVERWRITE marts.orders SELECT * FROM marts.orders WHERE id = 1",
    "UPDATE marts.orders SET amount = 0",
    "UPDATE marts.orders SET amount = 0 WHERE id = 1",
    "UPDATE marts.orders SET email = (SELECT x FROM raw.secret)",
    "DELETE FROM marts.orders",
    "DELETE FROM marts.orders WHERE region = 'EU'",
    "delete/**/from marts.orders",
    "/* a read */ DELETE FROM marts.orders",
    "-- a comment\nDELETE FROM marts.orders",
    "SELECT 1; DELETE FROM marts.orders",
    "DELETE FROM marts.orders; SELECT 1",
    "TRUNCATE marts.orders",
    "TRUNCATE TABLE marts.orders",
    "DROP TABLE marts.orders",
    "DROP TABLE IF EXISTS marts.orders",
    "DROP VIEW marts.big_orders",
    "DROP SCHEMA marts CASCADE",
    "ALTER TABLE marts.orders ADD COLUMN x INT",
    "ALTER TABLE marts.orders RENAME TO orders2",
    "CREATE TABLE marts.evil AS SELECT 1 AS x",
    "CREATE TABLE marts.evil (x INT)",
    "CREATE VIEW marts.evil AS SELECT 1 AS x",
    "CREATE OR REPLACE VIEW marts.big_orders AS SELECT * FROM marts.orders",
    "CREATE SCHEMA evil",
    "SELECT * INTO marts.evil FROM marts.orders",
    "MERGE INTO marts.orders t USING (SELECT 1 AS id) s ON t.id = s.id WHEN MATCHED THEN DELETE",
    "COPY marts.orders TO 'LEAK_DIR/leak.csv'",
    "COPY (SELECT * FROM marts.orders) TO 'LEAK_DIR/leak.parquet'",
    "GRANT SELECT ON marts.orders TO dave",
    "GRANT SELECT ON raw.secret TO alice",
    "CREATE ROLE evil",
    "EXPLAIN ANALYZE DELETE FROM marts.orders",
];

/// The client script: runs every case through the three surfaces and prints one JSON
/// object `{case: {"pg": answer, "rest": answer, "flight": answer}}`.
const SCRIPT: &str = r#"
import base64, decimal, json, os, re, sys, urllib.request, urllib.error
import psycopg
import adbc_driver_flightsql.dbapi as flight

PG, HTTP, FLIGHT, PW = os.environ["PG"], os.environ["HTTP"], os.environ["FLIGHT"], os.environ["PW"]
cases = json.load(open(sys.argv[1]))

def norm(v):
    if v is None: return "NULL"
    if isinstance(v, bool): return str(v).lower()
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else "%.6g" % v
    if isinstance(v, decimal.Decimal):
        return str(int(v)) if v == v.to_integral_value() else "%.6g" % float(v)
    return str(v)

def rows_answer(rows):
    return {"rows": [[norm(v) for v in r] for r in rows]}

def err_answer(code):
    return {"error": code}

pg = {}
def pg_run(user, sql):
    if user not in pg:
        pg[user] = psycopg.connect(host="127.0.0.1", port=int(PG), user=user, password=PW,
                                   dbname="strata", autocommit=True, cursor_factory=psycopg.ClientCursor)
    conn = pg[user]
    try:
        cur = conn.cursor()
        cur.execute(sql)
        last = None
        while True:
            if cur.description is not None:
                last = rows_answer(cur.fetchall())
            else:
                last = {"done": cur.rowcount if cur.rowcount >= 0 else None}
            if not cur.nextset():
                break
        return last
    except psycopg.Error as e:
        return err_answer(e.sqlstate or "?")

def rest_run(user, sql):
    req = urllib.request.Request("http://127.0.0.1:%s/api/v1/sql" % HTTP,
        data=json.dumps({"sql": sql}).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, PW)).encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        return err_answer(json.load(e)["error"]["code"])
    if "rows" in body:
        cols = [c["name"] for c in body["columns"]]
        return rows_answer([[row[c] for c in cols] for row in body["rows"]])
    return {"done": body.get("rows_affected")}

fl = {}
def flight_run(user, sql):
    if user not in fl:
        fl[user] = flight.connect("grpc://127.0.0.1:%s" % FLIGHT,
                                  db_kwargs={"username": user, "password": PW}, autocommit=True)
    try:
        cur = fl[user].cursor()
        cur.execute(sql)
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
        cur.close()
        if names == ["command", "rows_affected"]:
            return {"done": rows[0][1]}
        return rows_answer(rows)
    except Exception as e:
        m = re.search(r"\[([0-9A-Z]{5})\]", str(e))
        return err_answer(m.group(1) if m else "?: " + str(e)[:200])

out = {}
for key, (user, sql) in cases.items():
    out[key] = {"pg": pg_run(user, sql), "rest": rest_run(user, sql), "flight": flight_run(user, sql)}
print(json.dumps(out))
"#;

/// A project with orders in three regions, customers, a secret table, a sandbox, a view,
/// and five principals.
fn project_with_principals() -> (tempfile::TempDir, std::path::PathBuf) {
    let (tmp, dir) = project();
    for sql in [
        "CREATE TABLE marts.orders AS SELECT * FROM (VALUES \
           (1, 'eu-hidden-1@example.com', 'EU', 10), (2, 'us-SECRET-2@example.com', 'US', 20), \
           (3, 'eu-hidden-3@example.com', 'EU', 30), (4, 'br-SECRET-4@example.com', 'BR', 40), \
           (5, 'eu-hidden-5@example.com', 'EU', 50), (6, NULL, 'US', 60)) AS v(id, email, region, amount)",
        "CREATE TABLE marts.customers AS SELECT * FROM (VALUES \
           (1, 'Ann', 'eu-hidden-a@example.com', 'EU'), (2, 'SECRET Bob', 'us-SECRET-b@example.com', 'US')) \
           AS v(id, name, email, region)",
        "CREATE VIEW marts.big_orders AS SELECT * FROM marts.orders WHERE amount > 15",
        "CREATE TABLE raw.secret AS SELECT 'TOP SECRET' AS x",
        "CREATE TABLE sandbox.t AS SELECT 1 AS id",
    ] {
        ok(&dir, &["sql", sql]);
    }
    let pw = [("PW", PASSWORD)];
    for (user, extra) in [
        ("admin", vec!["--superuser"]),
        ("alice", vec!["--attr", "region=EU"]),
        ("bob", vec![]),
        ("carl", vec![]),
        ("dave", vec![]),
    ] {
        let mut args = vec!["users", "add", user, "--password-env", "PW"];
        args.extend(extra);
        ok_env(&dir, &args, &pw);
    }
    for args in [
        vec!["roles", "add", "analysts"],
        vec!["roles", "grant", "analysts", "alice"],
        vec!["grants", "add", "select", "marts", "analysts"],
        vec![
            "grants",
            "add",
            "select",
            "marts.orders",
            "bob",
            "--columns",
            "id,amount",
        ],
        vec!["grants", "add", "select", "sandbox", "carl"],
        vec!["grants", "add", "insert", "sandbox.t", "carl"],
        vec![
            "policies",
            "add-filter",
            "marts.orders",
            "own_region",
            "--using",
            "region = current_user_attribute('region')",
            "--to",
            "analysts",
        ],
        vec![
            "policies",
            "add-filter",
            "marts.customers",
            "own_region",
            "--using",
            "region = current_user_attribute('region')",
            "--to",
            "analysts",
        ],
        vec![
            "policies",
            "add-mask",
            "marts.orders.email",
            "--mask",
            "email",
        ],
        vec![
            "policies",
            "add-mask",
            "marts.customers.email",
            "--mask",
            "email",
        ],
    ] {
        ok(&dir, &args);
    }
    (tmp, dir)
}

#[test]
fn every_surface_gives_the_same_answer_and_nothing_leaks() {
    let (_tmp, dir) = project_with_principals();
    let leak_dir = dir.join("leaks");
    std::fs::create_dir_all(&leak_dir).unwrap();
    let leak = leak_dir.display().to_string();

    // principal × operation; the key orders the cases.
    let mut cases = serde_json::Map::new();
    let mut n = 0;
    let mut add = |user: &str, sql: &str| {
        n += 1;
        cases.insert(
            format!("{n:03} {user}: {sql}"),
            serde_json::json!([user, sql.replace("LEAK_DIR", &leak)]),
        );
    };
    for sql in READS {
        for user in ["admin", "alice", "bob", "carl", "dave"] {
            add(user, sql);
        }
    }
    for sql in WRITES {
        for user in ["alice", "bob", "dave"] {
            add(user, sql);
        }
    }
    for sql in [
        "INSERT INTO sandbox.t VALUES (100)",
        "DELETE FROM sandbox.t",
        "UPDATE sandbox.t SET id = 0",
        "INSERT INTO marts.orders VALUES (9, 'x@y.z', 'EU', 1)",
        "DROP TABLE sandbox.t",
    ] {
        add("carl", sql);
    }
    add("admin", "INSERT INTO sandbox.t VALUES (200)");
    add("admin", "SELECT count(*) AS n FROM sandbox.t");
    let total = cases.len();
    assert!(total >= 200, "{total} cases");

    let cases_file = dir.join("cases.json");
    std::fs::write(&cases_file, serde_json::Value::Object(cases).to_string()).unwrap();
    let s = serve(&dir);
    let o = Command::new(python())
        .arg("-c")
        .arg(SCRIPT)
        .arg(&cases_file)
        .env("PG", s.port.to_string())
        .env("HTTP", s.http_port.to_string())
        .env("FLIGHT", s.flight_port.to_string())
        .env("PW", PASSWORD)
        .output()
        .expect("python runs");
    assert!(o.status.success(), "matrix script failed:\n{}", stderr(&o));
    let answers: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(stdout(&o).trim()).expect("the script prints JSON");
    assert_eq!(answers.len(), total);

    let mut mismatches = Vec::new();
    let mut leaks = Vec::new();
    let mut writes_through = Vec::new();
    for (case, a) in &answers {
        let (pg, rest, flight) = (&a["pg"], &a["rest"], &a["flight"]);
        if pg != rest || rest != flight {
            mismatches.push(format!(
                "{case}\n   pg:     {pg}\n   rest:   {rest}\n   flight: {flight}"
            ));
        }
        let user = case
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .trim_end_matches(':');
        if user != "admin" {
            for answer in [pg, rest, flight] {
                let text = answer.to_string();
                if text.contains("SECRET") || text.contains("hidden") {
                    leaks.push(format!("{case}: {text}"));
                }
            }
        }
        let is_write = WRITES
            .iter()
            .any(|w| case.ends_with(&w.replace("LEAK_DIR", &leak)));
        if is_write && ["alice", "bob", "dave"].contains(&user) {
            for answer in [pg, rest, flight] {
                if answer.get("error").is_none() {
                    writes_through.push(format!("{case}: {answer}"));
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {total} cases differ between surfaces:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert!(leaks.is_empty(), "values leaked:\n{}", leaks.join("\n"));
    assert!(
        writes_through.is_empty(),
        "writes got through a read-only role:\n{}",
        writes_through.join("\n")
    );

    // What each principal sees, pinned for a few cases.
    let answer = |user: &str, sql: &str| -> serde_json::Value {
        answers
            .iter()
            .find(|(k, _)| k.ends_with(&format!(" {user}: {sql}")))
            .map(|(_, v)| v["rest"].clone())
            .unwrap_or_else(|| panic!("no case {user}: {sql}"))
    };
    let rows = |v: serde_json::Value| v["rows"].clone();
    if std::env::var("STRATA_MATRIX_DUMP").is_ok() {
        for (k, v) in &answers {
            eprintln!("{k} => {}", v["rest"]);
        }
    }
    assert_eq!(
        rows(answer("admin", "SELECT sum(amount) AS s FROM marts.orders")),
        serde_json::json!([["210"]])
    );
    assert_eq!(
        rows(answer("alice", "SELECT sum(amount) AS s FROM marts.orders")),
        serde_json::json!([["90"]])
    );
    // A table with row policies shows no row to a principal no policy applies to (as in
    // PostgreSQL): bob may read two columns, of no row.
    assert_eq!(
        rows(answer("bob", "SELECT count(*) AS n FROM marts.orders")),
        serde_json::json!([["0"]])
    );
    assert_eq!(
        rows(answer(
            "alice",
            "SELECT email FROM marts.orders ORDER BY id"
        )),
        serde_json::json!([
            ["e***@example.com"],
            ["e***@example.com"],
            ["e***@example.com"]
        ])
    );
    assert_eq!(
        rows(answer(
            "alice",
            "SELECT * FROM marts.big_orders ORDER BY id"
        )),
        serde_json::json!([
            ["3", "e***@example.com", "EU", "30"],
            ["5", "e***@example.com", "EU", "50"]
        ])
    );
    // Columns not granted do not exist for the principal, as tables not granted do not.
    assert_eq!(
        answer("bob", "SELECT email FROM marts.orders ORDER BY id")["error"],
        "42703"
    );
    assert_eq!(
        answer("dave", "SELECT * FROM marts.orders ORDER BY id")["error"],
        "42501"
    );
    // Not granted reads like not existing: names do not leak.
    assert_eq!(
        answer("alice", "SELECT * FROM raw.secret")["error"],
        "42501"
    );
    assert_eq!(
        answer("alice", "SELECT * FROM raw.secret"),
        answer("alice", "SELECT * FROM raw.nope")
    );
    assert_eq!(
        rows(answer("dave", "SELECT 1 AS one")),
        serde_json::json!([["1"]])
    );
    assert_eq!(
        answer("carl", "INSERT INTO sandbox.t VALUES (100)")["done"],
        1
    );
    assert_eq!(answer("carl", "DELETE FROM sandbox.t")["error"], "42501");
    // One row at the start, three from carl (one per surface), three from admin.
    assert_eq!(
        rows(answer("admin", "SELECT count(*) AS n FROM sandbox.t")),
        serde_json::json!([["7"]])
    );

    // Nothing changed where nothing was allowed to.
    let check = ok(
        &dir,
        &[
            "sql",
            "SELECT count(*) AS n, sum(amount) AS s FROM marts.orders",
            "--format",
            "csv",
        ],
    );
    assert!(check.contains("6,210"), "{check}");
    let tables = ok(&dir, &["sql", "SHOW TABLES", "--format", "csv"]);
    assert!(!tables.contains("evil"), "{tables}");
    assert_eq!(
        std::fs::read_dir(&leak_dir).unwrap().count(),
        0,
        "COPY wrote a file"
    );
}
