//! Arrow Flight SQL with a real client: the ADBC Flight SQL driver (Python DB-API), as
//! users with grants, row policies and masks, logging in with a password or an API token.

use std::process::Command;

use crate::serve::{PASSWORD, python, serve, setup};
use crate::{labelled, ok, stderr, stdout};

/// Runs an ADBC script with `URI`, `PASSWORD` and `TOKEN` in its environment.
#[track_caller]
fn adbc(script: &str, env: &[(&str, &str)]) -> String {
    let o = Command::new(python())
        .args(["-c", script])
        .envs(env.iter().copied())
        .output()
        .expect("python runs");
    assert!(
        o.status.success(),
        "ADBC script failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

const PRELUDE: &str = r#"
import os
import adbc_driver_flightsql.dbapi as flight
from adbc_driver_flightsql import DatabaseOptions
uri = os.environ["URI"]
def connect(user, password=None, token=None):
    kw = {}
    if token:
        kw[DatabaseOptions.AUTHORIZATION_HEADER.value] = "Bearer " + token
    else:
        kw["username"] = user
        kw["password"] = password
    return flight.connect(uri, db_kwargs=kw, autocommit=True)
def error_of(conn, sql):
    cur = conn.cursor()
    try:
        cur.execute(sql)
        cur.fetchall()
    except Exception as e:
        return str(e)
    return "no error"
"#;

#[test]
fn adbc_fetches_arrow_under_grants_filters_and_masks() {
    let (_tmp, dir) = setup();
    let created: serde_json::Value = serde_json::from_str(&ok(
        &dir,
        &["--json", "tokens", "create", "alice", "--name", "adbc"],
    ))
    .unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    let s = serve(&dir);
    let uri = format!("grpc://127.0.0.1:{}", s.flight_port);
    let env = [
        ("URI", uri.as_str()),
        ("PASSWORD", PASSWORD),
        ("TOKEN", token.as_str()),
    ];
    let out = adbc(
        &format!(
            "{PRELUDE}{}",
            r#"
alice = connect("alice", password=os.environ["PASSWORD"])
cur = alice.cursor()
cur.execute("SELECT id, email, amount FROM marts.orders ORDER BY id")
t = cur.fetch_arrow_table()
print("rows", t.column("id").to_pylist(), t.column("email").to_pylist())
print("types", t.schema.field("id").type, t.schema.field("email").type, t.schema.field("amount").type)

# Prepared statement with a bound parameter.
cur.execute("SELECT id FROM marts.orders WHERE amount > $1 ORDER BY id", parameters=(15,))
print("bound", [r[0] for r in cur.fetchall()])

# Catalog metadata: only what alice may read.
objs = alice.adbc_get_objects(depth="tables").read_all().to_pylist()
names = sorted(f'{s["db_schema_name"]}.{t["table_name"]}' for c in objs for s in (c["catalog_db_schemas"] or []) for t in (s["db_schema_tables"] or []))
print("objects", names)
print("schema", alice.adbc_get_table_schema("orders", db_schema_filter="marts").names)

# Denials and errors.
print("secret", error_of(alice, "SELECT * FROM raw.secret"))
print("insert", error_of(alice, "INSERT INTO marts.orders VALUES (9, 'x@y.z', 'EU', 1)"))
print("syntax", error_of(alice, "SELEC 1"))

# An API token works as the bearer header.
tok = connect("alice", token=os.environ["TOKEN"])
c2 = tok.cursor()
c2.execute("SELECT count(*) AS n FROM marts.orders")
print("token", c2.fetchone()[0])

# Wrong password.
try:
    bad = connect("alice", password="wrong")
    bad.cursor().execute("SELECT 1")
    print("wrong", "accepted")
except Exception as e:
    print("wrong", "refused" if "nauthenticated" in str(e) or "invalid credentials" in str(e) else str(e))

# A superuser writes through the engine.
admin = connect("admin", password=os.environ["PASSWORD"])
a = admin.cursor()
a.execute("INSERT INTO marts.orders VALUES (4, 'dan@example.com', 'EU', 40)")
a.fetchall()
a.execute("SELECT count(*) FROM marts.orders")
print("admin", a.fetchone()[0])
cur.execute("SELECT id FROM marts.orders ORDER BY id")
print("after", [r[0] for r in cur.fetchall()])
"#
        ),
        &env,
    );
    let line = |key: &str| labelled(&out, key);
    assert_eq!(
        line("rows"),
        "[1, 3] ['a***@example.com', 'c***@example.com']"
    );
    // Text travels as plain strings (not 16-byte views), which every Arrow client reads.
    assert_eq!(line("types"), "int64 string int64");
    assert_eq!(line("bound"), "[3]");
    assert_eq!(line("objects"), "['marts.orders']");
    assert_eq!(line("schema"), "['id', 'email', 'region', 'amount']");
    assert!(
        line("secret").contains("does not exist or is not granted"),
        "{out}"
    );
    assert!(line("insert").contains("permission denied"), "{out}");
    assert!(line("syntax").contains("42601"), "{out}");
    assert_eq!(line("token"), "2");
    assert_eq!(line("wrong"), "refused");
    assert_eq!(line("admin"), "4");
    assert_eq!(line("after"), "[1, 3, 4]");
}

/// The rows a `GetFlightInfo` started are fetched by its principal's `DoGet` without running
/// the statement again (one audit entry); a ticket redeemed by someone else, or a second
/// time, runs the statement again under the redeemer's own grants and masks.
#[test]
fn tickets_fetch_the_rows_their_flight_info_started_once() {
    let (_tmp, dir) = setup();
    let s = serve(&dir);
    let script = r#"
import base64, os
import pyarrow.flight as fl

# Protocol buffers by hand: length-delimited fields of an Any holding the Flight SQL command.
def field(number, data):
    n, out = len(data), bytes([number << 3 | 2])
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out + data

def command(sql):
    kind = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    query = field(1, sql.encode())
    return fl.FlightDescriptor.for_command(field(1, kind) + field(2, query))

def options(user):
    basic = base64.b64encode(f"{user}:{os.environ['PASSWORD']}".encode())
    return fl.FlightCallOptions(headers=[(b"authorization", b"Basic " + basic)])

client = fl.FlightClient(os.environ["URI"])
info = client.get_flight_info(command("SELECT id, email FROM marts.orders ORDER BY id"), options("alice"))
ticket = info.endpoints[0].ticket
def emails(user):
    return client.do_get(ticket, options(user)).read_all().column("email").to_pylist()
print("admin", emails("admin"))
print("alice", emails("alice"))
print("again", emails("alice"))
"#;
    let out = adbc(
        script,
        &[
            ("URI", &format!("grpc://127.0.0.1:{}", s.flight_port)),
            ("PASSWORD", PASSWORD),
        ],
    );
    let line = |key: &str| labelled(&out, key);
    // Another principal's redemption runs as that principal: no masks for the superuser.
    assert_eq!(
        line("admin"),
        "['alice@example.com', 'bob@example.com', 'carol@example.com']"
    );
    assert_eq!(line("alice"), "['a***@example.com', 'c***@example.com']");
    assert_eq!(line("again"), "['a***@example.com', 'c***@example.com']");

    // alice's statement ran twice (the flight info, then the second redemption), not three
    // times; the superuser's once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v: serde_json::Value = serde_json::from_str(&ok(
            &dir,
            &["--json", "audit", "--surface", "flight", "--limit", "100"],
        ))
        .unwrap();
        let runs = |user: &str| {
            v.as_array()
                .unwrap()
                .iter()
                .filter(|r| {
                    r["entry"]["principal"] == user
                        && r["entry"]["statement"]
                            == "SELECT id, email FROM marts.orders ORDER BY id"
                })
                .count()
        };
        if (runs("alice"), runs("admin")) == (2, 1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alice ran {} times, admin {}: {v:#}",
            runs("alice"),
            runs("admin")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
