//! The REST API of `strata serve` with curl (and pyarrow for the binary formats): the same
//! users, grants, row policies and masks as the Postgres protocol.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::serve::{PASSWORD, python, serve, serve_with, setup};
use crate::{ok, stderr, stdout};

/// A response: status, headers (lower-cased names), body.
struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// `curl` with `args`, against `http://127.0.0.1:port{path}`.
fn curl(port: u16, path: &str, args: &[&str]) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .arg("-w")
        .arg("%{http_code}")
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl runs");
    assert!(o.status.success(), "curl {path} failed: {}", stderr(&o));
    Reply {
        status: stdout(&o).trim().parse().expect("a status code"),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

fn token(dir: &Path, user: &str) -> String {
    let created: serde_json::Value = serde_json::from_str(&ok(
        dir,
        &["--json", "tokens", "create", user, "--name", "rest"],
    ))
    .unwrap();
    created["token"].as_str().unwrap().to_string()
}

/// `POST /api/v1/sql` with a JSON body.
fn sql(port: u16, auth: &str, body: serde_json::Value, extra: &[&str]) -> Reply {
    let body = body.to_string();
    let mut args = vec![
        "-H",
        auth,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body,
    ];
    args.extend_from_slice(extra);
    curl(port, "/api/v1/sql", &args)
}

#[test]
fn rest_api_answers_under_the_same_grants_filters_and_masks() {
    let (_tmp, dir) = setup();
    let alice = token(&dir, "alice");
    let admin = token(&dir, "admin");
    let s = serve(&dir);
    let port = s.http_port;
    let alice = bearer(&alice);
    let admin = bearer(&admin);

    // Health needs no credentials; everything else does.
    let r = curl(port, "/api/v1/health", &[]);
    assert_eq!((r.status, r.json()["status"].clone()), (200, "ok".into()));
    let r = curl(port, "/api/v1/ready", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = curl(port, "/api/v1/tables", &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "28000");
    assert!(r.header("www-authenticate").is_some());
    let r = curl(
        port,
        "/api/v1/tables",
        &["-H", "Authorization: Bearer strata_0000"],
    );
    assert_eq!(r.status, 401);
    let r = curl(port, "/api/v1/tables", &["-u", "alice:wrong"]);
    assert_eq!(r.status, 401);

    // The tables alice may read, and nothing else.
    let r = curl(port, "/api/v1/tables", &["-H", &alice]);
    assert_eq!(r.status, 200, "{}", r.text());
    let names: Vec<String> = r.json()["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}.{}",
                t["namespace"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, vec!["marts.orders"]);

    // Rows: filtered to her region, emails masked, as over pgwire.
    let r = curl(
        port,
        "/api/v1/tables/marts/orders?select=id,email&order=id",
        &["-H", &alice],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["rows"],
        serde_json::json!([
            {"id": 1, "email": "a***@example.com"},
            {"id": 3, "email": "c***@example.com"}
        ])
    );
    assert_eq!(v["columns"][0]["type"], "bigint");
    // Basic auth with the password works the same.
    let r = curl(
        port,
        "/api/v1/tables/marts/orders?amount=gt.15&select=id",
        &["-u", &format!("alice:{PASSWORD}")],
    );
    assert_eq!(r.json()["rows"], serde_json::json!([{"id": 3}]));
    // Filtering on the real value of a masked column finds nothing: predicates see masks.
    let r = curl(
        port,
        "/api/v1/tables/marts/orders?email=eq.alice@example.com",
        &["-H", &alice],
    );
    assert_eq!(r.json()["row_count"], 0, "{}", r.text());
    // Not granted and not existing read the same.
    let r = curl(port, "/api/v1/tables/raw/secret", &["-H", &alice]);
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("does not exist or is not granted"),
        "{}",
        r.text()
    );
    let r = curl(port, "/api/v1/tables/raw/nope", &["-H", &alice]);
    assert_eq!(r.status, 404);

    // Filter mistakes and injection attempts: 400 or plain values; nothing changes.
    for (query, status) in [
        ("id=eq.1;drop%20table%20marts.orders", 400),
        ("id=42", 400),
        ("nope=eq.1", 400),
        ("select=id,(select%201)", 400),
        ("order=id;drop", 400),
        ("%EF%BD%89%EF%BD%84=eq.1", 400),
        ("limit=100000", 400),
        ("cursor=garbage", 400),
        ("region=eq.x'%3B%20drop%20table%20marts.orders%3B%20--", 200),
        ("region=in.(EU,%22x'%20or%20'1'%3D'1%22)", 200),
    ] {
        let r = curl(
            port,
            &format!("/api/v1/tables/marts/orders?{query}"),
            &["-H", &alice],
        );
        assert_eq!(r.status, status, "{query}: {}", r.text());
        if status == 400 {
            assert!(r.json()["error"]["message"].is_string());
        } else {
            // Only her region's rows, whatever the filter says.
            for row in r.json()["rows"].as_array().unwrap() {
                assert_eq!(row["region"], "EU", "{query}: {}", r.text());
            }
        }
    }
    let r = curl(port, "/api/v1/tables/marts/orders", &["-H", &admin]);
    assert_eq!(r.json()["row_count"], 3);

    // Pages: every page of one cursor chain reads the version the first page read.
    let r = curl(
        port,
        "/api/v1/tables/marts/orders?order=id&limit=2&select=id",
        &["-H", &admin],
    );
    let v = r.json();
    assert_eq!(v["rows"], serde_json::json!([{"id": 1}, {"id": 2}]));
    let cursor = v["next_cursor"].as_str().unwrap().to_string();
    assert_eq!(r.header("x-next-cursor").as_deref(), Some(cursor.as_str()));
    let w = sql(
        port,
        &admin,
        serde_json::json!({"sql": "INSERT INTO marts.orders VALUES (0, 'zed@example.com', 'EU', 5)"}),
        &[],
    );
    assert_eq!(w.status, 200, "{}", w.text());
    assert_eq!(w.json()["rows_affected"], 1);
    let r = curl(
        port,
        &format!("/api/v1/tables/marts/orders?order=id&limit=2&select=id&cursor={cursor}"),
        &["-H", &admin],
    );
    let v = r.json();
    assert_eq!(v["rows"], serde_json::json!([{"id": 3}]), "{}", r.text());
    assert!(v.get("next_cursor").is_none());
    // A cursor belongs to its question.
    let r = curl(
        port,
        &format!("/api/v1/tables/marts/orders?order=id.desc&limit=2&cursor={cursor}"),
        &["-H", &admin],
    );
    assert_eq!(r.status, 400);
    // A new first page sees the new row.
    let r = curl(
        port,
        "/api/v1/tables/marts/orders?order=id&limit=1&select=id",
        &["-H", &admin],
    );
    assert_eq!(r.json()["rows"], serde_json::json!([{"id": 0}]));

    // SQL: JSON by default, parameters bound, rows filtered and masked.
    let r = sql(
        port,
        &alice,
        serde_json::json!({"sql": "SELECT id, email FROM marts.orders WHERE amount > $1 ORDER BY id", "params": [6]}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["rows"],
        serde_json::json!([{"id": 1, "email": "a***@example.com"}, {"id": 3, "email": "c***@example.com"}])
    );
    let r = sql(
        port,
        &alice,
        serde_json::json!({"sql": "SELECT id FROM marts.orders ORDER BY id"}),
        &["-H", "Accept: text/csv"],
    );
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/csv; charset=utf-8")
    );
    assert_eq!(r.text(), "id\n0\n1\n3\n");
    let r = sql(
        port,
        &alice,
        serde_json::json!({"sql": "SELECT id FROM marts.orders ORDER BY id", "max_rows": 2}),
        &[],
    );
    assert_eq!(
        (r.json()["row_count"].clone(), r.json()["truncated"].clone()),
        (2.into(), true.into())
    );
    // A plain-text body is the SQL.
    let r = curl(
        port,
        "/api/v1/sql?format=ndjson",
        &[
            "-H",
            &alice,
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            "select 1 as one",
        ],
    );
    assert_eq!(r.text(), "{\"one\":1}\n");

    // Arrow IPC and Parquet read back with pyarrow (which may abort while its threads wind
    // down at interpreter exit: the script leaves with os._exit once it has printed).
    let tmp = tempfile::tempdir().unwrap();
    for (accept, reader) in [
        (
            "application/vnd.apache.arrow.stream",
            "pyarrow.ipc.open_stream(data).read_all()",
        ),
        (
            "application/vnd.apache.parquet",
            "pyarrow.parquet.read_table(pyarrow.BufferReader(data))",
        ),
    ] {
        let out = tmp.path().join("result");
        let r = sql(
            port,
            &alice,
            serde_json::json!({"sql": "SELECT id, email, amount FROM marts.orders ORDER BY id"}),
            &["-H", &format!("Accept: {accept}")],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        std::fs::write(&out, &r.body).unwrap();
        let o = Command::new(python())
            .args([
                "-c",
                &format!(
                    "import os, sys, pyarrow, pyarrow.ipc, pyarrow.parquet\n\
                     data = open(sys.argv[1], 'rb').read()\n\
                     t = {reader}\n\
                     print(t.column('email').to_pylist(), t.num_rows, flush=True)\n\
                     os._exit(0)"
                ),
            ])
            .arg(&out)
            .output()
            .expect("python runs");
        assert!(o.status.success(), "{accept}: {}", stderr(&o));
        assert_eq!(
            stdout(&o).trim(),
            "['z***@example.com', 'a***@example.com', 'c***@example.com'] 3",
            "{accept}"
        );
    }

    // Writes need grants, whatever the spelling; nothing changes.
    for stmt in [
        "INSERT INTO marts.orders VALUES (9, 'x@y.z', 'EU', 1)",
        "DELETE FROM marts.orders",
        "UPDATE marts.orders SET amount = 0",
        "DROP TABLE marts.orders",
        "SELECT 1; DELETE FROM marts.orders",
        "/* read */ TRUNCATE marts.orders",
        "CREATE TABLE marts.copy AS SELECT * FROM marts.orders",
    ] {
        let r = sql(port, &alice, serde_json::json!({"sql": stmt}), &[]);
        assert_eq!(r.status, 403, "{stmt}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "42501", "{stmt}");
    }
    let r = sql(
        port,
        &admin,
        serde_json::json!({"sql": "SELECT count(*) AS n FROM marts.orders"}),
        &[],
    );
    assert_eq!(r.json()["rows"][0]["n"], 4);

    // Bad requests: the right status and SQLSTATE.
    let r = sql(port, &alice, serde_json::json!({"sql": "SELEC 1"}), &[]);
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (400, "42601".into())
    );
    let r = sql(
        port,
        &alice,
        serde_json::json!({"sql": "SELECT nope FROM marts.orders"}),
        &[],
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (400, "42703".into())
    );
    let r = curl(
        port,
        "/api/v1/sql",
        &[
            "-H",
            &alice,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "{\"sql\": ",
        ],
    );
    assert_eq!(r.status, 400);
    let huge = format!("{{\"sql\": \"select '{}'\"}}", "x".repeat(2 << 20));
    let huge_file = tmp.path().join("huge.json");
    std::fs::write(&huge_file, huge).unwrap();
    let r = curl(
        port,
        "/api/v1/sql",
        &[
            "-H",
            &alice,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", huge_file.display()),
        ],
    );
    assert_eq!(r.status, 413, "{}", r.text());
    let r = sql(
        port,
        &alice,
        serde_json::json!({"sql": "select 1"}),
        &["-H", "Accept: image/png"],
    );
    assert_eq!(r.status, 406);
    let r = curl(port, "/api/v1/nope", &["-H", &alice]);
    assert_eq!(r.status, 404);

    // The OpenAPI document lists what the caller may read.
    let r = curl(port, "/api/v1/openapi.json", &["-H", &alice]);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/sql"]["post"].is_object());
    assert!(doc["paths"]["/api/v1/tables/marts/orders"]["get"].is_object());
    assert!(doc["paths"].get("/api/v1/tables/raw/secret").is_none());

    // Every request is in the audit log, with its surface, outcome and rows.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = serde_json::from_str(&ok(
            &dir,
            &["--json", "audit", "--surface", "rest", "--limit", "200"],
        ))
        .unwrap();
        let entries = v.as_array().unwrap();
        let has = |outcome: &str, needle: &str| {
            entries.iter().any(|r| {
                let e = &r["entry"];
                e["outcome"] == outcome
                    && e["statement"].as_str().unwrap_or_default().contains(needle)
            })
        };
        if has("denied", "DROP TABLE marts.orders")
            && has("ok", "FROM \"marts\".\"orders\"")
            && has("denied", "login")
        {
            assert!(entries.iter().any(|r| r["entry"]["rows"] == 2), "{v:#}");
            break;
        }
        assert!(Instant::now() < deadline, "audit entries missing: {v:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A request with `column=eq.value` is answered by a key lookup planned once per question:
/// the same rows, masks and row filters as the paged statement, the latest version, and
/// access changes honoured.
#[test]
fn rest_key_lookups_answer_as_the_paged_statement_does() {
    let (_tmp, dir) = setup();
    let alice = bearer(&token(&dir, "alice"));
    let admin = bearer(&token(&dir, "admin"));
    let s = serve(&dir);
    let port = s.http_port;
    let rows = |query: &str, auth: &str| -> (serde_json::Value, Option<String>) {
        let r = curl(
            port,
            &format!("/api/v1/tables/marts/orders?{query}"),
            &["-H", auth],
        );
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        (r.json()["rows"].clone(), r.header("x-table-version"))
    };

    // The first request plans the lookup, the next ones reuse it; a range that is not a
    // key goes through the paged statement and finds the same row.
    for _ in 0..3 {
        let (got, version) = rows("id=eq.2", &admin);
        assert_eq!(
            got,
            serde_json::json!([{"id": 2, "email": "bob@example.com", "region": "US", "amount": 20}])
        );
        assert!(version.is_some());
        assert_eq!(got, rows("id=gte.2&id=lte.2", &admin).0);
    }
    assert_eq!(rows("id=eq.9", &admin).0, serde_json::json!([]));
    assert_eq!(
        rows("id=eq.2&select=amount", &admin).0,
        serde_json::json!([{"amount": 20}])
    );
    // A key value of the wrong type is the same error as without lookups.
    let r = curl(
        port,
        "/api/v1/tables/marts/orders?id=eq.two",
        &["-H", &admin],
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // The analyst's row filter and mask hold: another region's key finds nothing, her own
    // comes back masked, and the real value of a masked column matches nothing.
    assert_eq!(rows("id=eq.2", &alice).0, serde_json::json!([]));
    for _ in 0..2 {
        assert_eq!(
            rows("id=eq.1&select=id,email", &alice).0,
            serde_json::json!([{"id": 1, "email": "a***@example.com"}])
        );
        assert_eq!(
            rows("email=eq.alice@example.com", &alice).0,
            serde_json::json!([])
        );
    }

    // A key matching several rows: ordered and paged as always, on every request.
    for _ in 0..2 {
        assert_eq!(
            rows("region=eq.EU&select=id&order=id.desc", &admin).0,
            serde_json::json!([{"id": 3}, {"id": 1}])
        );
        let r = curl(
            port,
            "/api/v1/tables/marts/orders?region=eq.EU&select=id&limit=1",
            &["-H", &admin],
        );
        assert_eq!(
            r.json()["rows"],
            serde_json::json!([{"id": 1}]),
            "{}",
            r.text()
        );
        assert!(r.json()["next_cursor"].is_string(), "{}", r.text());
    }

    // Writes are seen at once: a lookup reads the latest version.
    let (_, before) = rows("id=eq.2", &admin);
    let w = sql(
        port,
        &admin,
        serde_json::json!({"sql": "INSERT INTO marts.orders VALUES (7, 'gus@example.com', 'EU', 70)"}),
        &[],
    );
    assert_eq!(w.status, 200, "{}", w.text());
    let (got, after) = rows("id=eq.7&select=id,email", &alice);
    assert_eq!(
        got,
        serde_json::json!([{"id": 7, "email": "g***@example.com"}])
    );
    assert_ne!(before, after);

    // Lookups were answered without the paged statement (no ORDER BY, no LIMIT).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = serde_json::from_str(&ok(
            &dir,
            &["--json", "audit", "--surface", "rest", "--limit", "200"],
        ))
        .unwrap();
        let found = v.as_array().unwrap().iter().any(|r| {
            r["entry"]["statement"].as_str()
                == Some("SELECT \"id\", \"email\" FROM \"marts\".\"orders\" WHERE \"id\" = 7")
                && r["entry"]["rows"] == 1
                && r["entry"]["tables"] == serde_json::json!(["marts.orders"])
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no lookup in the audit log: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A revoked grant ends the lookups planned under it.
    let r = sql(
        port,
        &admin,
        serde_json::json!({"sql": "REVOKE SELECT ON SCHEMA marts FROM analyst"}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = curl(port, "/api/v1/tables/marts/orders?id=eq.1", &["-H", &alice]);
        if r.status == 404 {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            Instant::now() < deadline,
            "the grant still holds: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn rest_rate_limits_each_token() {
    let (_tmp, dir) = setup();
    let alice = bearer(&token(&dir, "alice"));
    let admin = bearer(&token(&dir, "admin"));
    let s = serve_with(&dir, &["--rate-limit", "1"]);
    let statuses: Vec<u16> = (0..4)
        .map(|_| curl(s.http_port, "/api/v1/tables", &["-H", &alice]).status)
        .collect();
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    let r = curl(s.http_port, "/api/v1/tables", &["-H", &alice]);
    if r.status == 429 {
        assert!(r.header("retry-after").is_some());
        assert_eq!(r.json()["error"]["code"], "53400");
    }
    // Another token has its own budget.
    assert_eq!(
        curl(s.http_port, "/api/v1/tables", &["-H", &admin]).status,
        200
    );
}
