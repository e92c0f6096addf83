//! Redis: keys matching a pattern, or the entries of a Redis stream, as rows.
//!
//! `url: redis://[:password@]host:6379/0` (the number is the database). Each stream says
//! what it reads in its `options:`:
//!
//! ```yaml
//! type: redis
//! url: redis://127.0.0.1:6379/0
//! streams:
//!   - name: customers
//!     options: {keys: "customer:*"}       # one row per key
//!   - name: events
//!     mode: incremental
//!     options: {stream: events}           # one row per stream entry, each read once
//! ```
//!
//! **Key patterns** (`keys:`) are listed with `SCAN … MATCH` (never `KEYS`, which blocks
//! the server), then read by type, in pipelined pages of `page_size` (option, 1000 by
//! default). Every row has a `_key` column, then:
//!
//! | key type | columns |
//! |---|---|
//! | string holding a JSON object | one column per field (nested objects flattened to `parent__child`) |
//! | other string | `value` (text) |
//! | hash | one text column per field (Redis stores strings; cast in SQL) |
//! | list, set | `value`: the members as a JSON array (sets sorted) |
//! | sorted set | `value`: `[[member, score], …]` as JSON, by score |
//! | stream | rejected: read it with `stream:` |
//!
//! Column types are inferred over all the keys read (see [`crate::json`]): JSON numbers
//! become Int64 / Float64, booleans Boolean, anything mixed text. A field of the row's own
//! named `_key` is overwritten by the key. A value that is not UTF-8 text rejects its key
//! (it lands in `<destination>__rejected` with the key). The rows are held in memory to
//! infer their schema, as Redis holds them in memory too. Key patterns are `full_refresh` by
//! default; `mode: incremental` with `primary_key: [_key]` upserts instead (keys deleted in
//! Redis then stay in the table).
//!
//! **Redis streams** (`stream:`) are read with `XRANGE` in pages, from the entry after the
//! last id committed with the previous load (the connector's saved state,
//! `{"last_id": "1700000000000-3"}`) up to the last entry present when the read starts.
//! Rows have `_id` (text), `_ms` (Int64, the id's milliseconds) and `_seq` (Int64), then one
//! text column per field. The state reported with each batch names the last entry that
//! batch holds, and it is committed with the rows, so a process killed at any instant
//! loads every entry exactly once over the runs. Use `mode: incremental` (add
//! `primary_key: [_id]` to merge rather than append); `full_refresh` reads the whole stream
//! again and replaces the table. `append` is refused: the pipeline fixes an appended load's
//! state before its entries are read, so the position reached would be lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use futures::StreamExt as _;
use redis::Value as RValue;
use redis::aio::MultiplexedConnection;
use serde_json::{Map, Value};
use strata_project::{SourceDef, StreamDef, SyncMode};

use crate::{BatchStream, DiscoveredStream, Error, ReadContext, RejectedRow, Result, Source};

/// Rows per Arrow batch.
const BATCH_ROWS: usize = 65_536;
/// Keys or entries asked for per round trip, unless `page_size:` says otherwise.
const DEFAULT_PAGE: usize = 1000;
/// Keys sampled per group by `discover`.
const DISCOVER_SAMPLE: usize = 100;
/// Keys `discover` looks at, at most.
const DISCOVER_MAX_KEYS: usize = 100_000;

/// A Redis server (one database).
pub struct RedisSource {
    name: String,
    url: String,
    client: redis::Client,
}

/// What a stream reads.
enum Target {
    Keys(String),
    Stream(String),
}

impl RedisSource {
    /// From a validated definition (`url: redis://host:6379/0`).
    pub fn new(def: &SourceDef) -> Result<Self> {
        let url = def.url.clone().ok_or_else(|| {
            Error::config(&def.name, "a redis source needs `url: redis://host:6379/0`")
        })?;
        let client = redis::Client::open(url.as_str()).map_err(|e| {
            Error::config(
                &def.name,
                &format!(
                    "invalid url {}: {e} (expected redis://[:password@]host:6379/0)",
                    strata_types::redact_url_password(&url)
                ),
            )
        })?;
        Ok(Self {
            name: def.name.clone(),
            url,
            client,
        })
    }

    async fn connect(&self) -> Result<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(10)))
            .set_response_timeout(Some(Duration::from_secs(60)));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.connection_error(&e))?;
        // The connection is made lazily by some servers' proxies: a PING proves it works
        // (and that the password, if any, was accepted).
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| self.connection_error(&e))?;
        Ok(conn)
    }

    /// Explains a connection failure in plain words.
    fn connection_error(&self, e: &redis::RedisError) -> Error {
        let url = strata_types::redact_url_password(&self.url);
        let text = e.to_string();
        let (what, retryable) = if e.is_connection_refusal() {
            (
                "nothing listens on that host and port (connection refused): is the Redis server running?",
                true,
            )
        } else if e.is_timeout() {
            ("the connection timed out", true)
        } else if e.kind() == redis::ErrorKind::AuthenticationFailed
            || text.contains("WRONGPASS")
            || text.contains("NOAUTH")
            || text.contains("invalid password")
        {
            (
                "authentication failed: check the user and password in the url",
                false,
            )
        } else if text.contains("DB index is out of range") {
            ("the database number in the url does not exist", false)
        } else {
            ("cannot connect", true)
        };
        Error::Connect {
            source_name: self.name.clone(),
            message: format!("{what}: {url} ({text})"),
            retryable,
        }
    }

    fn read_error(&self, stream: Option<&str>, what: &str, e: redis::RedisError) -> Error {
        Error::Read {
            source_name: self.name.clone(),
            stream: stream.map(str::to_string),
            message: format!("{what}: {e}"),
        }
    }

    /// Lists keys matching `pattern` with SCAN, in pages, each key once.
    async fn scan(
        &self,
        conn: &mut MultiplexedConnection,
        stream: Option<&str>,
        pattern: &str,
        page: usize,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let mut cursor: u64 = 0;
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(page)
                .query_async(conn)
                .await
                .map_err(|e| self.read_error(stream, "listing keys (SCAN)", e))?;
            for k in batch {
                // SCAN may return a key twice while the server rehashes.
                if seen.insert(k.clone()) {
                    keys.push(k);
                }
            }
            cursor = next;
            if cursor == 0 || keys.len() >= limit {
                break;
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Reads the keys as JSON records (`_key` + fields); keys that cannot be read are
    /// returned apart with the reason.
    async fn read_keys(
        &self,
        conn: &mut MultiplexedConnection,
        stream: Option<&str>,
        keys: &[Vec<u8>],
        page: usize,
    ) -> Result<(Vec<Value>, Vec<(String, String)>)> {
        let mut records = Vec::with_capacity(keys.len());
        let mut bad = Vec::new();
        for chunk in keys.chunks(page.max(1)) {
            let mut types_pipe = redis::pipe();
            for k in chunk {
                types_pipe.cmd("TYPE").arg(k);
            }
            let types: Vec<String> = types_pipe
                .query_async(conn)
                .await
                .map_err(|e| self.read_error(stream, "reading key types (TYPE)", e))?;
            let mut pipe = redis::pipe();
            for (k, t) in chunk.iter().zip(&types) {
                match t.as_str() {
                    "string" => pipe.cmd("GET").arg(k),
                    "hash" => pipe.cmd("HGETALL").arg(k),
                    "list" => pipe.cmd("LRANGE").arg(k).arg(0).arg(-1),
                    "set" => pipe.cmd("SMEMBERS").arg(k),
                    "zset" => pipe.cmd("ZRANGE").arg(k).arg(0).arg(-1).arg("WITHSCORES"),
                    // Nothing to fetch: a placeholder keeps the replies aligned.
                    _ => pipe.cmd("ECHO").arg(""),
                };
            }
            let values: Vec<RValue> = pipe
                .query_async(conn)
                .await
                .map_err(|e| self.read_error(stream, "reading values", e))?;
            for ((k, t), v) in chunk.iter().zip(&types).zip(values) {
                let key = match String::from_utf8(k.clone()) {
                    Ok(s) => s,
                    Err(_) => {
                        bad.push((
                            String::from_utf8_lossy(k).into_owned(),
                            "the key is not UTF-8 text".to_string(),
                        ));
                        continue;
                    }
                };
                match record_of(&key, t, v) {
                    Ok(Some(r)) => records.push(r),
                    Ok(None) => {} // deleted or expired since SCAN listed it
                    Err(reason) => bad.push((key, reason)),
                }
            }
        }
        Ok((records, bad))
    }

    async fn read_keys_stream(
        &self,
        stream: &StreamDef,
        ctx: &ReadContext,
        pattern: &str,
        page: usize,
    ) -> Result<(SchemaRef, BatchStream)> {
        let mut conn = self.connect().await?;
        let keys = self
            .scan(&mut conn, Some(&stream.name), pattern, page, usize::MAX)
            .await?;
        let (records, bad) = self
            .read_keys(&mut conn, Some(&stream.name), &keys, page)
            .await?;
        for (key, reason) in bad {
            self.reject(stream, ctx, &key, reason, String::new())?;
        }
        let schema = key_schema(&records);
        let schema = self.select_columns(stream, schema, &["_key"])?;
        let batches = self.to_batches(stream, ctx, &schema, &records, |r| {
            r.get("_key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        })?;
        let items: Vec<Result<RecordBatch>> = batches.into_iter().map(Ok).collect();
        Ok((schema, Box::pin(futures::stream::iter(items))))
    }

    async fn read_redis_stream(
        &self,
        stream: &StreamDef,
        ctx: &ReadContext,
        key: &str,
        page: usize,
    ) -> Result<(SchemaRef, BatchStream)> {
        let mut conn = self.connect().await?;
        let err = |what: &str, e| self.read_error(Some(&stream.name), what, e);
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|e| err("reading the key's type", e))?;
        if kind != "stream" && kind != "none" {
            return Err(self.read_error_msg(
                stream,
                format!("key `{key}` holds a {kind}, not a stream: read it with `options: {{keys: \"{key}\"}}`"),
            ));
        }
        // Resume after the last entry committed, unless the whole stream is reloaded.
        let last_saved = match stream.mode {
            SyncMode::FullRefresh => None,
            _ => match &ctx.saved {
                None => None,
                Some(s) => Some(
                    s.get("last_id")
                        .and_then(Value::as_str)
                        .and_then(parse_id)
                        .map(|_| s["last_id"].as_str().unwrap_or_default().to_string())
                        .ok_or_else(|| {
                            self.read_error_msg(
                                stream,
                                format!("the saved state {s} has no valid `last_id`; reload with --full-refresh"),
                            )
                        })?,
                ),
            },
        };
        // The last entry present now bounds the read, so that a stream written to without
        // pause still ends.
        let tail: Vec<RValue> = redis::cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|e| err("reading the stream's last entry (XREVRANGE)", e))?;
        let end = match tail.first().map(parse_entry) {
            Some(Ok((id, _))) => Some(id),
            Some(Err(m)) => return Err(self.read_error_msg(stream, m)),
            None => None,
        };
        let mut entries: Vec<(String, Vec<(String, String)>)> = Vec::new();
        let mut rejected: Vec<(String, String, String)> = Vec::new();
        // Nothing past the saved entry: no read at all.
        let pending = end.as_ref().filter(|end| {
            last_saved
                .as_deref()
                .and_then(parse_id)
                .zip(parse_id(end))
                .is_none_or(|(saved, end)| saved < end)
        });
        if let Some(end) = pending {
            let mut start = match &last_saved {
                Some(id) => format!("({id}"),
                None => "-".to_string(),
            };
            loop {
                let page_entries: Vec<RValue> = redis::cmd("XRANGE")
                    .arg(key)
                    .arg(&start)
                    .arg(end)
                    .arg("COUNT")
                    .arg(page)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| err("reading entries (XRANGE)", e))?;
                let n = page_entries.len();
                let mut last = None;
                for v in &page_entries {
                    let (id, fields) =
                        parse_entry(v).map_err(|m| self.read_error_msg(stream, m))?;
                    last = Some(id.clone());
                    match fields {
                        Ok(f) => entries.push((id, f)),
                        Err((reason, raw)) => {
                            // Kept in order: the state must move past rejected entries too.
                            entries.push((id.clone(), Vec::new()));
                            rejected.push((id, reason, raw));
                        }
                    }
                }
                match last {
                    Some(l) if n >= page && l != *end => start = format!("({l}"),
                    _ => break,
                }
            }
        }
        let rejected_ids: HashSet<String> = rejected.iter().map(|r| r.0.clone()).collect();
        for (id, reason, raw) in rejected {
            self.reject(stream, ctx, &format!("{key} entry {id}"), reason, raw)?;
        }
        // Schema: the id columns, then each field in the order it first appears.
        let mut fields: Vec<Field> = vec![
            Field::new("_id", DataType::Utf8, false),
            Field::new("_ms", DataType::Int64, false),
            Field::new("_seq", DataType::Int64, false),
        ];
        let mut names: HashSet<String> = fields.iter().map(|f| f.name().clone()).collect();
        for (_, fs) in &entries {
            for (f, _) in fs {
                if names.insert(f.clone()) {
                    fields.push(Field::new(f, DataType::Utf8, true));
                }
            }
        }
        let schema = self.select_columns(
            stream,
            Arc::new(Schema::new(fields)),
            &["_id", "_ms", "_seq"],
        )?;
        let report = Arc::clone(&ctx.report);
        let mut items: Vec<(RecordBatch, String)> = Vec::new();
        for chunk in entries.chunks(BATCH_ROWS) {
            let last_id = chunk.last().map(|e| e.0.clone()).unwrap_or_default();
            let records: Vec<Value> = chunk
                .iter()
                .filter(|(id, _)| !rejected_ids.contains(id))
                .map(|(id, fs)| {
                    let (ms, seq) = parse_id(id).unwrap_or((0, 0));
                    let mut m = Map::new();
                    for (f, v) in fs {
                        m.insert(f.clone(), Value::String(v.clone()));
                    }
                    m.insert("_id".into(), Value::String(id.clone()));
                    m.insert("_ms".into(), Value::from(ms));
                    m.insert("_seq".into(), Value::from(seq));
                    Value::Object(m)
                })
                .collect();
            let mut b = self.to_batches(stream, ctx, &schema, &records, |r| {
                format!(
                    "{key} entry {}",
                    r.get("_id").and_then(Value::as_str).unwrap_or_default()
                )
            })?;
            // A chunk is at most one batch long; all of it rejected still moves the state.
            let batch = b
                .pop()
                .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&schema)));
            items.push((batch, last_id));
        }
        // The state follows the batches handed over: it always names the last entry of the
        // last batch the pipeline took, never one read ahead.
        let batches = futures::stream::iter(items).map(move |(b, last_id)| {
            report.set_state(serde_json::json!({ "last_id": last_id }));
            Ok(b)
        });
        Ok((schema, Box::pin(batches)))
    }

    fn read_error_msg(&self, stream: &StreamDef, message: String) -> Error {
        Error::Read {
            source_name: self.name.clone(),
            stream: Some(stream.name.clone()),
            message,
        }
    }

    fn reject(
        &self,
        stream: &StreamDef,
        ctx: &ReadContext,
        location: &str,
        reason: String,
        raw: String,
    ) -> Result<()> {
        ctx.report
            .reject(RejectedRow {
                location: format!("redis key {location}"),
                line: None,
                reason,
                raw,
            })
            .map_err(|m| self.read_error_msg(stream, m))
    }

    /// Applies `columns:` / `exclude:` to an inferred schema; `fixed` columns always stay.
    fn select_columns(
        &self,
        stream: &StreamDef,
        schema: SchemaRef,
        fixed: &[&str],
    ) -> Result<SchemaRef> {
        if stream.columns.is_empty() && stream.exclude.is_empty() {
            return Ok(schema);
        }
        for c in stream.exclude.iter() {
            if fixed.contains(&c.as_str()) {
                return Err(self.read_error_msg(
                    stream,
                    format!("column `{c}` cannot be excluded: every row has it"),
                ));
            }
        }
        let keep: Vec<Field> = schema
            .fields()
            .iter()
            .filter(|f| {
                let n = f.name().as_str();
                fixed.contains(&n)
                    || (stream.columns.is_empty() || stream.columns.iter().any(|c| c == n))
                        && !stream.exclude.iter().any(|c| c == n)
            })
            .map(|f| f.as_ref().clone())
            .collect();
        Ok(Arc::new(Schema::new(keep)))
    }

    /// Records → batches of [`BATCH_ROWS`]; a record that does not fit is rejected,
    /// located by `locate`.
    fn to_batches(
        &self,
        stream: &StreamDef,
        ctx: &ReadContext,
        schema: &SchemaRef,
        records: &[Value],
        locate: impl Fn(&Value) -> String,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for chunk in records.chunks(BATCH_ROWS) {
            let mut bad: Vec<(usize, String)> = Vec::new();
            let b = crate::json::to_batch(
                schema,
                chunk,
                |name| schema.field_with_name(name).is_err(),
                |i, reason| bad.push((i, reason)),
            )
            .map_err(|e| self.read_error_msg(stream, format!("building a batch: {e}")))?;
            for (i, reason) in bad {
                self.reject(
                    stream,
                    ctx,
                    &locate(&chunk[i]),
                    reason,
                    chunk[i].to_string(),
                )?;
            }
            out.push(b);
        }
        if out.is_empty() && records.is_empty() {
            // One empty batch keeps the shape explicit for consumers that need a batch.
            out.push(RecordBatch::new_empty(Arc::clone(schema)));
        }
        Ok(out)
    }

    fn target(&self, stream: &StreamDef) -> Result<(Target, usize)> {
        let cfg = |m: String| Error::config(&self.name, &format!("stream `{}`: {m}", stream.name));
        if stream.filter.is_some() {
            return Err(cfg(
                "`filter:` is not supported by redis sources: narrow the `keys:` pattern, or filter in SQL".into(),
            ));
        }
        if stream.cursor.is_some() {
            return Err(cfg(
                "redis sources keep their own position (the last stream entry loaded): remove `cursor:`".into(),
            ));
        }
        if stream.table.is_some() || stream.query.is_some() {
            return Err(cfg(
                "redis streams take `options: {keys: \"pattern:*\"}` or `options: {stream: name}`, not `table:` / `query:`".into(),
            ));
        }
        for k in stream.options.keys() {
            if !matches!(k.as_str(), "keys" | "stream" | "page_size") {
                return Err(cfg(format!(
                    "unknown option `{k}`; redis streams take `keys`, `stream` and `page_size`"
                )));
            }
        }
        let page =
            match stream.options.get("page_size") {
                None => DEFAULT_PAGE,
                Some(p) => p.parse::<usize>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    cfg(format!("`page_size: {p}` is not a positive whole number"))
                })?,
            };
        let target = match (stream.options.get("keys"), stream.options.get("stream")) {
            (Some(k), None) if !k.is_empty() => Target::Keys(k.clone()),
            (None, Some(s)) if !s.is_empty() => Target::Stream(s.clone()),
            (Some(_), Some(_)) => {
                return Err(cfg(
                    "give `keys:` or `stream:` in `options:`, not both".into()
                ));
            }
            _ => {
                return Err(cfg(
                    "say what to read: `options: {keys: \"customer:*\"}` (keys matching a pattern) or `options: {stream: events}` (a Redis stream)".into(),
                ));
            }
        };
        if matches!(target, Target::Stream(_)) && stream.mode == SyncMode::Append {
            return Err(cfg(
                "a Redis stream is read with `mode: incremental` (each entry once) or `full_refresh` (all entries again), not `append`".into(),
            ));
        }
        Ok((target, page))
    }
}

/// `1700000000000-3` → (1700000000000, 3).
fn parse_id(id: &str) -> Option<(i64, i64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn text(v: &RValue) -> Option<std::result::Result<String, Vec<u8>>> {
    match v {
        RValue::BulkString(b) => Some(String::from_utf8(b.clone()).map_err(|e| e.into_bytes())),
        RValue::SimpleString(s) => Some(Ok(s.clone())),
        RValue::VerbatimString { text, .. } => Some(Ok(text.clone())),
        RValue::Int(i) => Some(Ok(i.to_string())),
        RValue::Double(d) => Some(Ok(d.to_string())),
        _ => None,
    }
}

/// Field/value pairs of a reply (a flat array, or a RESP3 map).
fn pairs(v: RValue) -> Vec<(RValue, RValue)> {
    match v {
        RValue::Map(m) => m,
        RValue::Array(a) => {
            let mut out = Vec::with_capacity(a.len() / 2);
            let mut it = a.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        _ => Vec::new(),
    }
}

/// An entry of XRANGE: its id, and its fields (or why they cannot be read, with the raw
/// entry).
#[allow(clippy::type_complexity)]
fn parse_entry(
    v: &RValue,
) -> std::result::Result<
    (
        String,
        std::result::Result<Vec<(String, String)>, (String, String)>,
    ),
    String,
> {
    let RValue::Array(parts) = v else {
        return Err("the server sent a stream entry that is not an array".into());
    };
    let id = match parts.first().and_then(text) {
        Some(Ok(id)) if parse_id(&id).is_some() => id,
        _ => return Err("the server sent a stream entry without a valid id".into()),
    };
    let mut fields = Vec::new();
    let mut raw = Map::new();
    let mut bad = None;
    for (k, v) in pairs(parts.get(1).cloned().unwrap_or(RValue::Nil)) {
        let k = match text(&k) {
            Some(Ok(k)) => k,
            _ => {
                bad.get_or_insert_with(|| "a field name is not UTF-8 text".to_string());
                continue;
            }
        };
        match text(&v) {
            Some(Ok(s)) => {
                raw.insert(k.clone(), Value::String(s.clone()));
                fields.push((k, s));
            }
            _ => {
                bad.get_or_insert_with(|| format!("field `{k}` is not UTF-8 text"));
            }
        }
    }
    Ok(match bad {
        Some(reason) => (id, Err((reason, Value::Object(raw).to_string()))),
        None => (id, Ok(fields)),
    })
}

/// A key's value as a JSON record, `None` when the key is gone.
fn record_of(key: &str, kind: &str, v: RValue) -> std::result::Result<Option<Value>, String> {
    let not_text = |what: &str| format!("{what} is not UTF-8 text");
    let mut m = Map::new();
    match kind {
        "none" => return Ok(None),
        "string" => {
            let s = match text(&v) {
                None => return Ok(None),
                Some(Ok(s)) => s,
                Some(Err(_)) => return Err(not_text("the value")),
            };
            match serde_json::from_str::<Value>(&s) {
                Ok(Value::Object(obj)) => m = obj,
                _ => {
                    m.insert("value".into(), Value::String(s));
                }
            }
        }
        "hash" => {
            let p = pairs(v);
            if p.is_empty() {
                return Ok(None);
            }
            for (f, v) in p {
                let f = match text(&f) {
                    Some(Ok(f)) => f,
                    _ => return Err(not_text("a field name")),
                };
                match text(&v) {
                    Some(Ok(s)) => {
                        m.insert(f, Value::String(s));
                    }
                    _ => return Err(not_text(&format!("field `{f}`"))),
                }
            }
        }
        "list" | "set" => {
            let (RValue::Array(items) | RValue::Set(items)) = v else {
                return Ok(None);
            };
            let mut out = Vec::with_capacity(items.len());
            for i in &items {
                match text(i) {
                    Some(Ok(s)) => out.push(s),
                    _ => return Err(not_text("a member")),
                }
            }
            if kind == "set" {
                out.sort();
            }
            m.insert(
                "value".into(),
                Value::Array(out.into_iter().map(Value::String).collect()),
            );
        }
        "zset" => {
            let mut out = Vec::new();
            let items = match v {
                RValue::Array(a) if a.iter().all(|x| matches!(x, RValue::Array(_))) => a
                    .into_iter()
                    .filter_map(|x| match x {
                        RValue::Array(p) if p.len() == 2 => {
                            let mut p = p.into_iter();
                            Some((p.next()?, p.next()?))
                        }
                        _ => None,
                    })
                    .collect(),
                other => pairs(other),
            };
            for (member, score) in items {
                let member = match text(&member) {
                    Some(Ok(s)) => s,
                    _ => return Err(not_text("a member")),
                };
                let score = text(&score)
                    .and_then(|s| s.ok())
                    .and_then(|s| s.parse::<f64>().ok())
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null);
                out.push(Value::Array(vec![Value::String(member), score]));
            }
            m.insert("value".into(), Value::Array(out));
        }
        "stream" => {
            return Err(format!(
                "key `{key}` is a Redis stream: read it with `options: {{stream: \"{key}\"}}`"
            ));
        }
        other => {
            return Err(format!(
                "key `{key}` is of type `{other}`, which this connector does not read"
            ));
        }
    }
    m.insert("_key".into(), Value::String(key.to_string()));
    Ok(Some(Value::Object(m)))
}

/// The inferred schema of key records, `_key` first and never null.
fn key_schema(records: &[Value]) -> SchemaRef {
    let inferred = crate::json::infer_schema(records);
    let mut fields = vec![Field::new("_key", DataType::Utf8, false)];
    fields.extend(
        inferred
            .fields()
            .iter()
            .filter(|f| f.name() != "_key")
            .map(|f| f.as_ref().clone()),
    );
    Arc::new(Schema::new(fields))
}

#[async_trait]
impl Source for RedisSource {
    async fn check(&self) -> Result<()> {
        self.connect().await?;
        Ok(())
    }

    async fn discover(&self) -> Result<Vec<DiscoveredStream>> {
        let mut conn = self.connect().await?;
        let keys = self
            .scan(&mut conn, None, "*", DEFAULT_PAGE, DISCOVER_MAX_KEYS)
            .await?;
        // Groups: `prefix:*` for strings, hashes and collections, each stream on its own.
        let mut groups: Vec<(String, bool, Vec<Vec<u8>>)> = Vec::new();
        for chunk in keys.chunks(DEFAULT_PAGE) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("TYPE").arg(k);
            }
            let types: Vec<String> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.read_error(None, "reading key types (TYPE)", e))?;
            for (k, t) in chunk.iter().zip(types) {
                let Ok(key) = std::str::from_utf8(k) else {
                    continue;
                };
                let (name, is_stream) = if t == "stream" {
                    (key.to_string(), true)
                } else {
                    match key.split_once(':') {
                        Some((prefix, _)) => (format!("{prefix}:*"), false),
                        None => (key.to_string(), false),
                    }
                };
                match groups.iter_mut().find(|g| g.0 == name && g.1 == is_stream) {
                    Some(g) => {
                        if g.2.len() < DISCOVER_SAMPLE {
                            g.2.push(k.clone());
                        }
                    }
                    None => groups.push((name, is_stream, vec![k.clone()])),
                }
            }
        }
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (name, is_stream, sample) in groups {
            if is_stream {
                let entries: Vec<RValue> = redis::cmd("XRANGE")
                    .arg(&name)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(DISCOVER_SAMPLE)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.read_error(None, "sampling a stream (XRANGE)", e))?;
                let mut fields = vec![
                    Field::new("_id", DataType::Utf8, false),
                    Field::new("_ms", DataType::Int64, false),
                    Field::new("_seq", DataType::Int64, false),
                ];
                for e in &entries {
                    if let Ok((_, Ok(fs))) = parse_entry(e) {
                        for (f, _) in fs {
                            if !fields.iter().any(|x| x.name() == &f) {
                                fields.push(Field::new(f, DataType::Utf8, true));
                            }
                        }
                    }
                }
                let n = fields.len();
                out.push(DiscoveredStream {
                    table: name,
                    schema: Arc::new(Schema::new(fields)),
                    source_types: vec!["stream entry".to_string(); n],
                    primary_key: vec!["_id".into()],
                    kind: crate::TableKind::Table,
                    description: None,
                });
            } else {
                let (records, _) = self
                    .read_keys(&mut conn, None, &sample, DEFAULT_PAGE)
                    .await?;
                let schema = key_schema(&records);
                let n = schema.fields().len();
                out.push(DiscoveredStream {
                    table: name,
                    schema,
                    source_types: vec!["key".to_string(); n],
                    primary_key: vec!["_key".into()],
                    kind: crate::TableKind::Table,
                    description: None,
                });
            }
        }
        Ok(out)
    }

    async fn read(
        &self,
        stream: &StreamDef,
        ctx: &ReadContext,
    ) -> Result<(SchemaRef, BatchStream)> {
        let (target, page) = self.target(stream)?;
        match target {
            Target::Keys(pattern) => self.read_keys_stream(stream, ctx, &pattern, page).await,
            Target::Stream(key) => self.read_redis_stream(stream, ctx, &key, page).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> RValue {
        RValue::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn records_of_each_type() {
        let r = record_of("c:1", "string", bulk(r#"{"name": "Ann", "age": 41}"#))
            .unwrap()
            .unwrap();
        assert_eq!(r["name"], "Ann");
        assert_eq!(r["age"], 41);
        assert_eq!(r["_key"], "c:1");
        let r = record_of("c:2", "string", bulk("plain")).unwrap().unwrap();
        assert_eq!(r["value"], "plain");
        let r = record_of("c:3", "hash", RValue::Array(vec![bulk("a"), bulk("1")]))
            .unwrap()
            .unwrap();
        assert_eq!(r["a"], "1");
        let r = record_of("c:4", "set", RValue::Array(vec![bulk("b"), bulk("a")]))
            .unwrap()
            .unwrap();
        assert_eq!(r["value"], serde_json::json!(["a", "b"]));
        let r = record_of("c:5", "zset", RValue::Array(vec![bulk("m"), bulk("2.5")]))
            .unwrap()
            .unwrap();
        assert_eq!(r["value"], serde_json::json!([["m", 2.5]]));
        assert!(
            record_of("c:6", "stream", RValue::Nil)
                .unwrap_err()
                .contains("stream:")
        );
        assert!(
            record_of("c:7", "string", RValue::BulkString(vec![0xff]))
                .unwrap_err()
                .contains("UTF-8")
        );
        assert_eq!(record_of("c:8", "none", RValue::Nil).unwrap(), None);
    }

    #[test]
    fn entries_and_ids() {
        assert_eq!(parse_id("1700000000000-3"), Some((1_700_000_000_000, 3)));
        assert_eq!(parse_id("x-3"), None);
        let e = RValue::Array(vec![
            bulk("5-1"),
            RValue::Array(vec![bulk("kind"), bulk("click")]),
        ]);
        let (id, fields) = parse_entry(&e).unwrap();
        assert_eq!(id, "5-1");
        assert_eq!(
            fields.unwrap(),
            vec![("kind".to_string(), "click".to_string())]
        );
        let bad = RValue::Array(vec![
            bulk("5-2"),
            RValue::Array(vec![bulk("kind"), RValue::BulkString(vec![0xff])]),
        ]);
        assert!(parse_entry(&bad).unwrap().1.is_err());
    }
}
