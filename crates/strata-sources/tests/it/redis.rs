//! Redis (the machine's server, `STRATA_IT_REDIS`, set by scripts/test.sh): hashes and
//! JSON strings into a table, a Redis stream read in runs with entries added between
//! (each entry exactly once), plain connection errors. Each test uses its own key prefix
//! and deletes its keys.

use redis::aio::MultiplexedConnection;
use strata_lake::Lake;

use crate::rows;
use strata_project::{Redactor, load_source};
use strata_sources::ingest::{IngestOptions, StreamReport, load_state};

struct Redis {
    conn: MultiplexedConnection,
    url: String,
    prefix: String,
    dir: tempfile::TempDir,
}

impl Redis {
    async fn new(test: &str) -> Option<Self> {
        let Ok(url) = std::env::var("STRATA_IT_REDIS") else {
            eprintln!("SKIP {test}: STRATA_IT_REDIS is not set");
            return None;
        };
        let conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("Redis is reachable");
        Some(Self {
            conn,
            url,
            prefix: format!("strata_it:{}:", uuid::Uuid::new_v4().simple()),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    async fn cmd(&mut self, args: &[&str]) -> redis::Value {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query_async(&mut self.conn)
            .await
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// XADD with an automatic id; returns the id.
    async fn xadd(&mut self, key: &str, fields: &[(&str, &str)]) -> String {
        let mut c = redis::cmd("XADD");
        c.arg(key).arg("*");
        for (f, v) in fields {
            c.arg(*f).arg(*v);
        }
        c.query_async(&mut self.conn).await.unwrap()
    }

    async fn lake(&self) -> Lake {
        crate::lake_in(self.dir.path()).await
    }

    fn source(&self, streams: &str) -> strata_project::SourceDef {
        let p = self.dir.path().join("cache.yml");
        std::fs::write(
            &p,
            format!("type: redis\nurl: {}\nstreams:\n{streams}", self.url),
        )
        .unwrap();
        load_source(&p, &Redactor::new()).unwrap()
    }

    async fn load(&self, lake: &Lake, streams: &str) -> Vec<StreamReport> {
        crate::ingest_all(lake, &self.source(streams), &IngestOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn cleanup(mut self) {
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn)
                .await
                .unwrap();
            for k in keys {
                let _: redis::RedisResult<i64> =
                    redis::cmd("DEL").arg(&k).query_async(&mut self.conn).await;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hashes_and_json_strings_into_a_table() {
    let Some(mut r) = Redis::new("redis_hashes_and_json_strings_into_a_table").await else {
        return;
    };
    let p = r.prefix.clone();
    r.cmd(&[
        "HSET",
        &format!("{p}customer:1"),
        "name",
        "Ann",
        "city",
        "Oslo",
    ])
    .await;
    r.cmd(&["HSET", &format!("{p}customer:2"), "name", "Bob"])
        .await;
    r.cmd(&[
        "SET",
        &format!("{p}customer:3"),
        r#"{"name": "Cy", "age": 41, "vip": true, "address": {"zip": "0150"}}"#,
    ])
    .await;
    r.cmd(&["SET", &format!("{p}customer:4"), "plain text"])
        .await;
    r.cmd(&["RPUSH", &format!("{p}customer:5"), "a", "b"]).await;
    r.cmd(&["SET", &format!("{p}other:1"), "not matched"]).await;
    r.xadd(&format!("{p}customer:events"), &[("k", "v")]).await;

    let lake = r.lake().await;
    let streams = format!(
        "  - name: customers\n    options:\n      keys: \"{p}customer:*\"\n      page_size: \"2\"\n"
    );
    let rep = r.load(&lake, &streams).await;
    assert_eq!(rep[0].rows, 5);
    assert_eq!(
        rep[0].rejected, 1,
        "the stream key is rejected, not silently skipped"
    );
    let info = lake
        .table_info(&"raw.cache_customers".parse().unwrap())
        .await
        .unwrap();
    let mut types: Vec<String> = info
        .schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    assert_eq!(types[0], "_key:Utf8");
    types.sort();
    assert_eq!(
        types,
        [
            "_key:Utf8",
            "address__zip:Utf8",
            "age:Int64",
            "city:Utf8",
            "name:Utf8",
            "value:Utf8",
            "vip:Boolean"
        ]
    );
    let got = rows(
        &lake,
        "raw.cache_customers",
        "_key, name, city, age, vip, address__zip, value",
    )
    .await;
    let want: Vec<String> = [
        "customer:1|Ann|Oslo|NULL|NULL|NULL|NULL",
        "customer:2|Bob|NULL|NULL|NULL|NULL|NULL",
        "customer:3|Cy|NULL|41|true|0150|NULL",
        "customer:4|NULL|NULL|NULL|NULL|NULL|plain text",
        "customer:5|NULL|NULL|NULL|NULL|NULL|[\"a\",\"b\"]",
    ]
    .iter()
    .map(|s| format!("{p}{s}"))
    .collect();
    assert_eq!(got, want);
    let rejected = rows(&lake, "raw.cache_customers__rejected", "location, reason").await;
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].contains(&format!("{p}customer:events")) && rejected[0].contains("stream:"),
        "{rejected:?}"
    );

    // Full refresh: a key deleted in Redis leaves the table on the next load.
    r.cmd(&["DEL", &format!("{p}customer:2")]).await;
    let rep = r.load(&lake, &streams).await;
    assert_eq!(rep[0].rows, 4);
    assert_eq!(
        rows(&lake, "raw.cache_customers", "count(*)").await,
        vec!["4"]
    );
    r.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stream_entries_are_loaded_exactly_once() {
    let Some(mut r) = Redis::new("redis_stream_entries_are_loaded_exactly_once").await else {
        return;
    };
    let key = format!("{}events", r.prefix);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            r.xadd(&key, &[("kind", "click"), ("n", &i.to_string())])
                .await,
        );
    }
    let lake = r.lake().await;
    let streams = format!(
        "  - name: events\n    mode: incremental\n    options:\n      stream: \"{key}\"\n      page_size: \"2\"\n"
    );
    let rep = r.load(&lake, &streams).await;
    assert_eq!(rep[0].rows, 3);
    let def = r.source(&streams);
    let state = load_state(&lake, "cache", &def.streams[0]).await.unwrap();
    assert_eq!(
        state.saved,
        Some(serde_json::json!({"last_id": ids[2]})),
        "the committed state names the last entry loaded"
    );

    // A read whose rows are never committed (the process dies before the commit) does
    // not move the position: the next run reads the same entries.
    let src = strata_sources::connect(&def).unwrap();
    let ctx = strata_sources::ReadContext {
        since: None,
        saved: state.saved.clone(),
        report: Default::default(),
    };
    for i in 3..5 {
        ids.push(
            r.xadd(
                &key,
                &[("kind", "view"), ("n", &i.to_string()), ("page", "/home")],
            )
            .await,
        );
    }
    let (_, batches) = src.read(&def.streams[0], &ctx).await.unwrap();
    let read: usize = futures::StreamExt::collect::<Vec<_>>(batches)
        .await
        .into_iter()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(read, 2);
    assert_eq!(
        ctx.report.state(),
        Some(serde_json::json!({"last_id": ids[4]}))
    );

    let rep = r.load(&lake, &streams).await;
    assert_eq!(
        rep[0].rows, 2,
        "only the entries added since the last commit"
    );
    let want: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (ms, seq) = id.split_once('-').unwrap();
            let (kind, page) = if i < 3 {
                ("click", "NULL")
            } else {
                ("view", "/home")
            };
            format!("{id}|{ms}|{seq}|{kind}|{i}|{page}")
        })
        .collect();
    assert_eq!(
        rows(&lake, "raw.cache_events", "_id, _ms, _seq, kind, n, page").await,
        want
    );

    // Nothing new: no commit, nothing duplicated.
    let rep = r.load(&lake, &streams).await;
    assert_eq!(rep[0].rows, 0);
    assert_eq!(rep[0].version, None);
    assert_eq!(rows(&lake, "raw.cache_events", "count(*)").await, vec!["5"]);
    r.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_check_on_a_closed_port_is_plain() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = dir.path().join("cache.yml");
    std::fs::write(
        &p,
        format!("type: redis\nurl: redis://127.0.0.1:{port}/0\n"),
    )
    .unwrap();
    let def = load_source(&p, &Redactor::new()).unwrap();
    let err = strata_sources::connect(&def)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("source `cache`"), "{text}");
    assert!(
        text.contains("nothing listens on that host and port") && text.contains(&port.to_string()),
        "{text}"
    );
    assert!(strata_types::Classify::retryable(&err), "{text}");

    // A stream that says nothing about what to read is a configuration error.
    let Some(r) = Redis::new("redis_check_on_a_closed_port_is_plain").await else {
        return;
    };
    let def = r.source("  - name: stuff\n");
    let err = match strata_sources::connect(&def)
        .unwrap()
        .read(&def.streams[0], &Default::default())
        .await
    {
        Ok(_) => panic!("a stream without keys or stream must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("say what to read"), "{err}");
    let def = r.source("  - name: stuff\n    mode: append\n    options: {stream: x}\n");
    let err = match strata_sources::connect(&def)
        .unwrap()
        .read(&def.streams[0], &Default::default())
        .await
    {
        Ok(_) => panic!("appending a Redis stream must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("not `append`"), "{err}");
    r.cleanup().await;
}
