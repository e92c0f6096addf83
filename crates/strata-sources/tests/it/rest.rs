//! REST API sources against an HTTP server each test runs on loopback: paginators,
//! authentication, child streams, unnesting, incremental loads, retries, rejected records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use strata_lake::Lake;
use strata_project::{Redactor, SourceDef, load_source};
use strata_sources::ingest::{IngestOptions, Progress, StreamReport, run_stream};

use crate::rows;

/// A request as the test server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: HashMap<String, String>,
    raw_query: String,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(|v| v.to_str().ok())
    }
}

/// A reply of the test server.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    fn json(v: Value) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: v.to_string(),
        }
    }

    fn status(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    fn header(mut self, k: &'static str, v: String) -> Reply {
        self.headers.push((k, v));
        self
    }
}

struct Server {
    base: String,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Requests seen so far on `path`.
    fn seen(&self, path: &str) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

/// Serves `handler` on 127.0.0.1 with an ephemeral port.
async fn serve(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let handler = Arc::new(handler);
    let app = {
        let log = Arc::clone(&log);
        axum::Router::new().fallback(move |req: axum::extract::Request| {
            let log = Arc::clone(&log);
            let handler = Arc::clone(&handler);
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let raw_query = parts.uri.query().unwrap_or("").to_string();
                let seen = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: url::form_urlencoded::parse(raw_query.as_bytes())
                        .into_owned()
                        .collect(),
                    raw_query,
                    headers: parts.headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                log.lock().unwrap().push(seen.clone());
                let reply = handler(&seen);
                let mut resp = Response::new(Body::from(reply.body));
                *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                for (k, v) in reply.headers {
                    resp.headers_mut().append(k, v.parse().unwrap());
                }
                resp.into_response()
            }
        })
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        base: format!("http://{addr}"),
        log,
    }
}

async fn lake(tmp: &tempfile::TempDir) -> Lake {
    Lake::open(
        &url::Url::from_directory_path(tmp.path().join("lake")).unwrap(),
        Default::default(),
    )
    .await
    .unwrap()
}

fn source(dir: &std::path::Path, name: &str, yml: &str) -> SourceDef {
    let p = dir.join(format!("{name}.yml"));
    std::fs::write(&p, yml).unwrap();
    load_source(&p, &Redactor::new()).unwrap_or_else(|e| panic!("{e}"))
}

async fn run(lake: &Lake, def: &SourceDef, stream: &str) -> strata_sources::Result<StreamReport> {
    let src = strata_sources::connect(def)?;
    let s = def.streams.iter().find(|s| s.name == stream).unwrap();
    run_stream(
        lake,
        src.as_ref(),
        def,
        s,
        &IngestOptions::default(),
        Arc::new(Progress::default()),
    )
    .await
}

async fn run_ok(lake: &Lake, def: &SourceDef, stream: &str) -> StreamReport {
    run(lake, def, stream)
        .await
        .unwrap_or_else(|e| panic!("stream {stream}: {e}"))
}

fn customers() -> Vec<Value> {
    (1..=5)
        .map(|i| json!({"id": i, "name": format!("c{i}")}))
        .collect()
}

fn slice(from: usize, n: usize) -> Vec<Value> {
    customers().into_iter().skip(from).take(n).collect()
}

fn num(s: &Seen, k: &str, default: usize) -> usize {
    s.q(k).map(|v| v.parse().unwrap()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_paginator_reads_every_page() {
    let server = serve(|s| match s.path.as_str() {
        "/offset" => {
            let (o, l) = (num(s, "skip", 0), num(s, "take", 100));
            Reply::json(json!({"data": slice(o, l)}))
        }
        "/offset_total" => {
            let (o, l) = (num(s, "offset", 0), num(s, "limit", 100));
            Reply::json(json!({"data": slice(o, l), "meta": {"total": 5}}))
        }
        "/pages" => {
            let p = num(s, "p", 1);
            Reply::json(json!({"results": slice((p - 1) * 2, 2), "total_pages": 3}))
        }
        "/cursor" => {
            let after = num(s, "after", 0);
            let next = if after + 2 < 5 {
                json!((after + 2).to_string())
            } else {
                Value::Null
            };
            Reply::json(json!({"items": slice(after, 2), "cursors": {"next": next}}))
        }
        "/json_link" => {
            let from = num(s, "from", 0);
            let next = (from + 2 < 5).then(|| format!("/json_link?from={}", from + 2));
            Reply::json(json!({"paging": {"next": next}, "records": slice(from, 2)}))
        }
        "/header_link" | "/auto" => {
            let from = num(s, "from", 0);
            let mut r = Reply::json(json!(slice(from, 2)));
            if from + 2 < 5 {
                r = r.header(
                    "link",
                    format!(
                        "<http://{}{}?from={}>; rel=\"next\"",
                        s.header("host").unwrap(),
                        s.path,
                        from + 2
                    ),
                );
            }
            r
        }
        "/single" => Reply::json(json!({"count": 5, "customers": customers()})),
        _ => Reply::status(404, "no such endpoint"),
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(&tmp).await;
    let yml = format!(
        r#"type: rest
url: {base}/
streams:
  - name: offset
    options:
      paginator: offset
      limit: "2"
      limit_param: take
      offset_param: skip
      data_selector: $.data[*]
  - name: offset_total
    options: {{paginator: offset, limit: "2", total_path: meta.total}}
  - name: page_number
    options: {{path: /pages, paginator: page_number, page_param: p, total_path: total_pages}}
  - name: cursor
    options: {{paginator: cursor, cursor_param: after}}
  - name: json_link
    options: {{paginator: json_link, next_url_path: paging.next}}
  - name: header_link
    options: {{paginator: header_link}}
  - name: auto
  - name: single
    options: {{paginator: single_page, data_selector: customers}}
"#,
        base = server.base
    );
    let def = source(tmp.path(), "api", &yml);
    let all: Vec<String> = (1..=5).map(|i| format!("{i}|c{i}")).collect();
    for s in [
        "offset",
        "offset_total",
        "page_number",
        "cursor",
        "json_link",
        "header_link",
        "auto",
        "single",
    ] {
        let r = run_ok(&lake, &def, s).await;
        assert_eq!(r.rows, 5, "{s}");
        assert_eq!(
            rows(&lake, &format!("raw.api_{s}"), "id, name").await,
            all,
            "{s}"
        );
    }
    let queries =
        |p: &str| -> Vec<String> { server.seen(p).iter().map(|s| s.raw_query.clone()).collect() };
    // Offset: stops at the first empty page without a total, at the total with one.
    assert_eq!(
        queries("/offset"),
        [
            "take=2&skip=0",
            "take=2&skip=2",
            "take=2&skip=4",
            "take=2&skip=6"
        ]
    );
    assert_eq!(
        queries("/offset_total"),
        ["limit=2&offset=0", "limit=2&offset=2", "limit=2&offset=4"]
    );
    assert_eq!(queries("/pages"), ["p=1", "p=2", "p=3"]);
    assert_eq!(queries("/cursor"), ["", "after=2", "after=4"]);
    assert_eq!(queries("/json_link"), ["", "from=2", "from=4"]);
    assert_eq!(queries("/header_link"), ["", "from=2", "from=4"]);
    assert_eq!(queries("/auto"), ["", "from=2", "from=4"]);
    assert_eq!(queries("/single"), [""]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_type_is_sent_and_checked() {
    let server = serve(|s| {
        let auth = s.header("authorization").unwrap_or("");
        let ok = match s.path.as_str() {
            "/token" => {
                let form: HashMap<String, String> =
                    url::form_urlencoded::parse(s.body.as_bytes())
                        .into_owned()
                        .collect();
                let ok = s.method == "POST"
                    && form.get("grant_type").map(String::as_str) == Some("client_credentials")
                    && form.get("client_id").map(String::as_str) == Some("app")
                    && form.get("client_secret").map(String::as_str) == Some("app-secret-9")
                    && form.get("scope").map(String::as_str) == Some("read");
                return if ok {
                    Reply::json(json!({"access_token": "oauth-tok-1", "token_type": "bearer", "expires_in": 3600}))
                } else {
                    Reply::status(401, r#"{"error": "invalid_client"}"#)
                };
            }
            "/bearer" => auth == "Bearer bearer-tok-123",
            // user:pa55word
            "/basic" => auth == "Basic dXNlcjpwYTU1d29yZA==",
            "/key_header" => s.header("x-api-key") == Some("hdr-key-456"),
            "/key_query" => s.q("api_key") == Some("qry-key-789"),
            "/oauth" => auth == "Bearer oauth-tok-1",
            _ => false,
        };
        if !ok {
            return Reply::status(401, r#"{"error": "unauthorized"}"#);
        }
        // Two pages, so that credentials must go with every request.
        let page = num(s, "page", 1);
        Reply::json(json!(slice((page - 1) * 3, 3)))
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(&tmp).await;
    let all: Vec<String> = (1..=5).map(|i| format!("{i}|c{i}")).collect();
    let oauth = format!(
        "auth: oauth2_client_credentials\n  token_url: {}/token\n  client_id: app\n  client_secret: app-secret-9\n  scope: read",
        server.base
    );
    let cases = [
        ("bearer", "auth: bearer\n  token: bearer-tok-123"),
        (
            "basic",
            "auth: http_basic\n  username: user\n  password: pa55word",
        ),
        (
            "key_header",
            "auth: api_key\n  api_key_name: X-Api-Key\n  api_key: hdr-key-456",
        ),
        (
            "key_query",
            "auth: api_key\n  api_key_location: query\n  api_key_name: api_key\n  api_key: qry-key-789",
        ),
        ("oauth", oauth.as_str()),
    ];
    for (name, auth) in &cases {
        let yml = format!(
            "type: rest\nurl: {}\noptions:\n  {auth}\n  paginator: page_number\nstreams:\n  - name: {name}\n",
            server.base
        );
        let def = source(tmp.path(), name, &yml);
        let src = strata_sources::connect(&def).unwrap();
        src.check().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let r = run_ok(&lake, &def, name).await;
        assert_eq!(r.rows, 5, "{name}");
        assert_eq!(
            rows(&lake, &format!("raw.{name}_{name}"), "id, name").await,
            all,
            "{name}"
        );
        assert_eq!(
            server.seen(&format!("/{name}")).len(),
            4,
            "{name}: 3 pages + check"
        );
    }
    // The OAuth2 token is fetched once per opened source (the check and the load each
    // open one) and kept for every later request: 2 fetches for 4 API calls.
    assert_eq!(server.seen("/token").len(), 2);
    // Wrong credentials fail with a plain message that holds no secret.
    let yml = format!(
        "type: rest\nurl: {}\noptions:\n  auth: bearer\n  token: wrong-secret-token\nstreams:\n  - name: bearer\n",
        server.base
    );
    let def = source(tmp.path(), "wrong", &yml);
    let err = strata_sources::connect(&def)
        .unwrap()
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 401") && err.contains("authentication failed"),
        "{err}"
    );
    assert!(!err.contains("wrong-secret-token"), "{err}");
    let err = run(&lake, &def, "bearer").await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("GET {}/bearer failed with HTTP 401", server.base))
            && err.contains("unauthorized"),
        "{err}"
    );
    assert!(!err.contains("wrong-secret-token"), "{err}");
    let yml = format!(
        "type: rest\nurl: {}\noptions:\n  auth: api_key\n  api_key_location: query\n  api_key_name: api_key\n  api_key: wrong-query-key\nstreams:\n  - name: key_query\n",
        server.base
    );
    let def = source(tmp.path(), "wrongq", &yml);
    let err = run(&lake, &def, "key_query").await.unwrap_err().to_string();
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(!err.contains("wrong-query-key"), "{err}");
    let yml = format!(
        "type: rest\nurl: {base}\noptions:\n  auth: oauth2_client_credentials\n  token_url: {base}/token\n  client_id: app\n  client_secret: not-the-secret\nstreams:\n  - name: oauth\n",
        base = server.base
    );
    let def = source(tmp.path(), "wrongo", &yml);
    let err = run(&lake, &def, "oauth").await.unwrap_err().to_string();
    assert!(
        err.contains("OAuth2 token request") && err.contains("HTTP 401"),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"), "{err}");
}

fn shop() -> Vec<Value> {
    vec![
        json!({"id": 1, "name": "Ann", "address": {"city": "Oslo", "geo": {"lat": 59.9}}, "tags": ["vip", "eu"]}),
        json!({"id": 2, "name": "Bob", "address": {"city": "Lima", "geo": {"lat": -12}}, "tags": []}),
        json!({"id": 3, "name": "Cy", "address": null, "tags": null}),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_streams_unnest_and_flattening() {
    let server = serve(|s| {
        let parts: Vec<&str> = s.path.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            ["customers"] => Reply::json(json!({"data": shop()})),
            ["customers", id, "orders"] => {
                let id: i64 = id.parse().unwrap();
                let orders: Vec<Value> = (1..=id)
                    .map(|n| json!({"order_id": id * 100 + n, "total": n as f64 * 1.5}))
                    .collect();
                Reply::json(json!(orders))
            }
            _ => Reply::status(404, "no"),
        }
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(&tmp).await;
    let yml = format!(
        r#"type: rest
url: {}
streams:
  - name: customers
    primary_key: [id]
  - name: orders
    primary_key: [order_id]
    options:
      parent: customers
      path: customers/{{resources.customers.id}}/orders
      include_from_parent: name
  - name: tags
    options:
      parent: customers
      unnest: tags
"#,
        server.base
    );
    let def = source(tmp.path(), "shop", &yml);
    run_ok(&lake, &def, "customers").await;
    let info = lake
        .table_info(&"raw.shop_customers".parse().unwrap())
        .await
        .unwrap();
    let types: Vec<String> = info
        .schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    assert_eq!(
        types,
        [
            "address__city:Utf8",
            "address__geo__lat:Float64",
            "id:Int64",
            "name:Utf8",
            "tags:Utf8"
        ]
    );
    assert_eq!(
        rows(
            &lake,
            "raw.shop_customers",
            "id, name, address__city, address__geo__lat, tags"
        )
        .await,
        [
            "1|Ann|Oslo|59.9|[\"vip\",\"eu\"]",
            "2|Bob|Lima|-12.0|[]",
            "3|Cy|NULL|NULL|NULL"
        ]
    );
    let r = run_ok(&lake, &def, "orders").await;
    assert_eq!(r.rows, 6);
    assert_eq!(
        rows(
            &lake,
            "raw.shop_orders",
            "order_id, total, _customers_id, _customers_name"
        )
        .await,
        [
            "101|1.5|1|Ann",
            "201|1.5|2|Bob",
            "202|3.0|2|Bob",
            "301|1.5|3|Cy",
            "302|3.0|3|Cy",
            "303|4.5|3|Cy"
        ]
    );
    let r = run_ok(&lake, &def, "tags").await;
    assert_eq!(r.rows, 2);
    assert_eq!(
        rows(&lake, "raw.shop_tags", "_customers_id, _index, value").await,
        ["1|0|vip", "1|1|eu"]
    );
    let orders: Vec<String> = server
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .filter(|p| p.ends_with("/orders"))
        .collect();
    assert_eq!(
        orders,
        [
            "/customers/1/orders",
            "/customers/2/orders",
            "/customers/3/orders"
        ]
    );
    // Discovery reads the first page of each stream.
    let src = strata_sources::connect(&def).unwrap();
    let found = src.discover().await.unwrap();
    let summary: Vec<String> = found
        .iter()
        .map(|d| {
            format!(
                "{}: {}",
                d.table,
                d.schema
                    .fields()
                    .iter()
                    .zip(&d.source_types)
                    .map(|(f, t)| format!("{} {t}", f.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "customers: address__city string, address__geo__lat number, id integer, name string, tags string",
            "orders: _customers_id integer, _customers_name string, order_id integer, total number",
            "tags: _customers_id integer, _index integer, value string"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_sends_the_cursor_and_merges_ties() {
    let data: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(vec![
        json!({"id": 1, "v": "a", "updated_at": "2024-01-02T00:00:00Z"}),
        json!({"id": 2, "v": "b", "updated_at": "2024-01-03T00:00:00Z"}),
        json!({"id": 4, "v": "old", "updated_at": "2023-12-01T00:00:00Z"}),
    ]));
    let server = {
        let data = Arc::clone(&data);
        serve(move |s| {
            let since = s.q("updated_since").unwrap_or("").to_string();
            let page = num(s, "page", 1);
            let mut hits: Vec<Value> = data
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r["updated_at"].as_str().unwrap() >= since.as_str())
                .cloned()
                .collect();
            hits.sort_by_key(|r| r["id"].as_i64());
            let page_rows: Vec<Value> = hits.into_iter().skip((page - 1) * 2).take(2).collect();
            Reply::json(json!({"data": page_rows}))
        })
        .await
    };
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(&tmp).await;
    let yml = format!(
        r#"type: rest
url: {}
options:
  paginator: page_number
streams:
  - name: items
    mode: incremental
    primary_key: [id]
    cursor: updated_at
    options:
      incremental_param: updated_since
      initial_value: "2024-01-01T00:00:00Z"
"#,
        server.base
    );
    let def = source(tmp.path(), "inc", &yml);
    let r = run_ok(&lake, &def, "items").await;
    assert_eq!(r.rows, 2);
    assert_eq!(r.cursor.as_deref(), Some("2024-01-03T00:00:00Z"));
    assert_eq!(
        rows(&lake, "raw.inc_items", "id, v, updated_at").await,
        ["1|a|2024-01-02T00:00:00Z", "2|b|2024-01-03T00:00:00Z"]
    );
    // A record arriving late at the last cursor value, and an update.
    {
        let mut d = data.lock().unwrap();
        d.push(json!({"id": 3, "v": "tie", "updated_at": "2024-01-03T00:00:00Z"}));
        d[0] = json!({"id": 1, "v": "a2", "updated_at": "2024-01-05T00:00:00Z"});
    }
    let r = run_ok(&lake, &def, "items").await;
    assert_eq!(r.rows, 3);
    assert_eq!(r.cursor.as_deref(), Some("2024-01-05T00:00:00Z"));
    assert_eq!(
        rows(&lake, "raw.inc_items", "id, v, updated_at").await,
        [
            "1|a2|2024-01-05T00:00:00Z",
            "2|b|2024-01-03T00:00:00Z",
            "3|tie|2024-01-03T00:00:00Z"
        ]
    );
    let sent: Vec<String> = server
        .seen("/items")
        .iter()
        .map(|s| s.raw_query.clone())
        .collect();
    assert_eq!(
        sent,
        [
            "updated_since=2024-01-01T00%3A00%3A00Z&page=1",
            "updated_since=2024-01-01T00%3A00%3A00Z&page=2",
            "updated_since=2024-01-03T00%3A00%3A00Z&page=1",
            "updated_since=2024-01-03T00%3A00%3A00Z&page=2",
            "updated_since=2024-01-03T00%3A00%3A00Z&page=3"
        ]
    );
    // Nothing new: the record at the cursor is read again and merged, nothing duplicates.
    let r = run_ok(&lake, &def, "items").await;
    assert_eq!(r.rows, 1, "the record at the cursor is read again");
    assert_eq!(r.cursor.as_deref(), Some("2024-01-05T00:00:00Z"));
    assert_eq!(rows(&lake, "raw.inc_items", "id").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_honour_retry_after_then_give_up_clearly() {
    let hits = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let server = {
        let hits = Arc::clone(&hits);
        serve(move |s| {
            let n = {
                let mut h = hits.lock().unwrap();
                let n = h.entry(format!("{}?{}", s.path, s.raw_query)).or_default();
                *n += 1;
                *n
            };
            match (s.path.as_str(), n) {
                ("/limited", 1) => {
                    Reply::status(429, "slow down").header("retry-after", "1".into())
                }
                ("/limited", 2) => Reply::status(503, "busy").header(
                    "retry-after",
                    (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc2822(),
                ),
                ("/limited", _) => Reply::json(json!([{"id": 1}, {"id": 2}])),
                ("/broken", _) if s.q("page") == Some("1") => {
                    Reply::json(json!([{"id": 1}, {"id": 2}]))
                }
                ("/broken", _) => Reply::status(503, "the backend is down for maintenance"),
                ("/missing", _) => Reply::status(
                    404,
                    &format!(
                        "{{\"error\": \"no such thing\", \"pad\": \"{}\"}}",
                        "x".repeat(400)
                    ),
                ),
                _ => Reply::status(500, "?"),
            }
        })
        .await
    };
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(&tmp).await;
    let yml = format!(
        r#"type: rest
url: {}
options:
  max_retries: "2"
  retry_backoff: "0.01"
  max_requests_per_second: "50"
streams:
  - name: limited
  - name: broken
    options: {{paginator: page_number}}
  - name: missing
"#,
        server.base
    );
    let def = source(tmp.path(), "flaky", &yml);
    let started = Instant::now();
    let r = run_ok(&lake, &def, "limited").await;
    assert_eq!(r.rows, 2);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "Retry-After (1 s, then an HTTP date) was honoured: {:?}",
        started.elapsed()
    );
    assert_eq!(server.seen("/limited").len(), 3);
    assert_eq!(rows(&lake, "raw.flaky_limited", "id").await, ["1", "2"]);

    // Page 1 loads, page 2 keeps failing: the stream fails and nothing is committed.
    let err = run(&lake, &def, "broken").await.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "GET {}/broken?page=2 failed with HTTP 503 Service Unavailable after 2 retries: the backend is down for maintenance",
            server.base
        )),
        "{err}"
    );
    assert_eq!(
        server.seen("/broken").len(),
        4,
        "page 1, then page 2 three times"
    );
    assert!(
        !lake
            .table_exists(&"raw.flaky_broken".parse().unwrap())
            .await
            .unwrap()
    );

    // Other 4xx fail at once with the start of the body.
    let err = run(&lake, &def, "missing").await.unwrap_err().to_string();
    assert!(
        err.contains("HTTP 404 Not Found") && err.contains("no such thing"),
        "{err}"
    );
    assert!(
        !err.contains(&"x".repeat(200)),
        "body cut to 200 characters: {err}"
    );
    assert_eq!(server.seen("/missing").len(), 1);
    // The check requests the first stream's path, which answers by now.
    let src = strata_sources::connect(&def).unwrap();
    src.check().await.unwrap();

    // Nothing listens: check says so.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let def = source(
        tmp.path(),
        "down",
        &format!("type: rest\nurl: http://127.0.0.1:{closed}/api\n"),
    );
    let err = strata_sources::connect(&def)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("cannot reach http://127.0.0.1:{closed}/api")),
        "{err}"
    );
    assert!(strata_types::Classify::retryable(&err));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_do_not_fit_are_rejected() {
    let server = serve(|s| match num(s, "page", 1) {
        1 => Reply::json(json!([
            {"id": 1, "name": "ok", "price": 1},
            "not an object",
            {"id": 2, "name": "ok too", "price": 2.5}
        ])),
        2 => Reply::json(json!([
            {"id": "three", "name": "bad id", "price": 3},
            {"id": 4, "name": "fine", "price": 4, "new_field": null}
        ])),
        3 => Reply::json(json!([{"id": 5, "name": "new", "price": 5, "extra": true}])),
        _ => Reply::json(json!([])),
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(&tmp).await;
    let yml = format!(
        "type: rest\nurl: {}\nstreams:\n  - name: things\n    options: {{paginator: page_number, batch_size: \"2\"}}\n",
        server.base
    );
    let def = source(tmp.path(), "odd", &yml);
    let r = run_ok(&lake, &def, "things").await;
    assert_eq!(r.rows, 3);
    assert_eq!(r.rejected, 3);
    assert_eq!(
        rows(&lake, "raw.odd_things", "id, name, price").await,
        ["1|ok|1.0", "2|ok too|2.5", "4|fine|4.0"]
    );
    let b = &server.base;
    assert_eq!(
        rows(
            &lake,
            "raw.odd_things__rejected",
            "location, line, reason, raw"
        )
        .await,
        [
            format!(
                "{b}/things?page=1|2|the record is a string, not a JSON object|\"not an object\""
            ),
            format!(
                "{b}/things?page=2|1|field `id` is a string, but its column is Int64|{{\"id\":\"three\",\"name\":\"bad id\",\"price\":3}}"
            ),
            format!(
                "{b}/things?page=3|1|field `extra` is not among the columns inferred at the start of this read; the next load adds it|{{\"extra\":true,\"id\":5,\"name\":\"new\",\"price\":5}}"
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_name_the_option() {
    let tmp = tempfile::tempdir().unwrap();
    let err = |yml: &str| {
        let def = source(tmp.path(), "conf", yml);
        match strata_sources::connect(&def) {
            Ok(_) => panic!("accepted: {yml}"),
            Err(e) => e.to_string(),
        }
    };
    let e = err(
        "type: rest\nurl: http://127.0.0.1:9/\nstreams:\n  - name: a\n    options: {paginatr: offset}\n",
    );
    assert!(e.contains("stream `a`: unknown option `paginatr`"), "{e}");
    let e = err(
        "type: rest\nurl: http://127.0.0.1:9/\nstreams:\n  - name: a\n    options: {paginator: pages}\n",
    );
    assert!(
        e.contains("option `paginator`: `pages` is not one of"),
        "{e}"
    );
    let e = err(
        "type: rest\nurl: http://127.0.0.1:9/\nstreams:\n  - name: a\n    options:\n      path: /c/{id}/o\n",
    );
    assert!(
        e.contains("placeholder `{id}`") && e.contains("no `parent:`"),
        "{e}"
    );
    let e = err("type: rest\nurl: http://127.0.0.1:9/\noptions: {auth: bearer}\n");
    assert!(e.contains("`auth: bearer` needs the option `token`"), "{e}");
    let e = err(
        "type: rest\nurl: http://127.0.0.1:9/\nstreams:\n  - name: a\n  - name: b\n    options: {parent: a, unnest: tags}\n",
    );
    assert!(e.contains("give stream `a` a `primary_key:`"), "{e}");
    let e = err(
        "type: rest\nurl: http://127.0.0.1:9/\nstreams:\n  - name: a\n    options: {timeout: \"5\"}\n",
    );
    assert!(
        e.contains("option `timeout` belongs in the source's `options:`"),
        "{e}"
    );
    let e = err("type: rest\nstreams:\n  - name: a\n");
    assert!(e.contains("needs `url:`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_timeout_and_empty_answers() {
    let server = serve(|s| match s.path.as_str() {
        "/none" => Reply::json(json!({"data": []})),
        "/slow" => {
            // Blocks one server thread longer than the client waits.
            std::thread::sleep(Duration::from_millis(800));
            Reply::json(json!([{"id": 1}]))
        }
        _ => {
            let page = num(s, "page", 1);
            Reply::json(json!(slice(page - 1, 1)))
        }
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(&tmp).await;
    let yml = format!(
        "type: rest\nurl: {}\noptions:\n  max_requests_per_second: \"20\"\nstreams:\n  - name: paced\n    options: {{paginator: page_number}}\n  - name: none\n",
        server.base
    );
    let def = source(tmp.path(), "rl", &yml);
    let started = Instant::now();
    let r = run_ok(&lake, &def, "paced").await;
    assert_eq!(r.rows, 5);
    // 6 requests (5 pages and the empty one) at most 20 per second: 5 gaps of 50 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.seen("/paced").len(), 6);
    // No records and no columns known yet: a clear error, nothing written.
    let err = run(&lake, &def, "none").await.unwrap_err().to_string();
    assert!(
        err.contains("the API returned no records (path `none`)")
            && err.contains("nothing was written"),
        "{err}"
    );
    assert!(
        !lake
            .table_exists(&"raw.rl_none".parse().unwrap())
            .await
            .unwrap()
    );

    // A request slower than `timeout` fails (here without retries) and names the URL.
    let yml = format!(
        "type: rest\nurl: {}\noptions:\n  timeout: \"0.2\"\n  max_retries: \"0\"\nstreams:\n  - name: slow\n",
        server.base
    );
    let def = source(tmp.path(), "to", &yml);
    let err = run(&lake, &def, "slow").await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("cannot reach {}/slow", server.base)) && err.contains("timed out"),
        "{err}"
    );
}
