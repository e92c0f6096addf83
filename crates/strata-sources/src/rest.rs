//! Declarative REST APIs (`type: rest`), shaped after dlt's `rest_api` source: a base URL,
//! authentication, and per stream an endpoint path, a paginator and a record selector.
//! Pages are fetched one after another by a task that hands Arrow batches over a bounded
//! channel, so memory holds a batch or two whatever the size of the API.
//!
//! ```yaml
//! type: rest
//! url: https://api.example.com/v1          # the base URL (dlt: client.base_url)
//! options:                                  # source level: client, auth, and endpoint defaults
//!   auth: bearer
//!   token: ${env:EXAMPLE_TOKEN}
//!   paginator: json_link
//!   next_url_path: paging.next
//!   headers.Accept: application/json
//! streams:
//!   - name: customers                       # path defaults to the stream's name
//!     mode: incremental
//!     primary_key: [id]
//!     cursor: updated_at
//!     options:
//!       data_selector: data
//!       incremental_param: updated_since
//!       initial_value: "2024-01-01T00:00:00Z"
//!   - name: orders                          # one request (and its pages) per customer
//!     primary_key: [id]
//!     options:
//!       parent: customers
//!       path: /customers/{id}/orders        # or {resources.customers.id}
//!   - name: customer_tags                   # one row per element of each customer's `tags`
//!     options:
//!       parent: customers
//!       unnest: tags
//! ```
//!
//! Options are strings. Those marked *source* go in the source's `options:` only; the
//! endpoint options may be set in the source's `options:` as defaults for every stream
//! and in a stream's `options:`, which win. `headers.*` and `params.*` are merged, the
//! stream's winning on the same name.
//!
//! **Client** (*source*)
//! - `timeout`: seconds per request (default 60).
//! - `max_retries`: retries after HTTP 429, 5xx or a failed connection (default 5). Waits
//!   double from `retry_backoff` seconds (default 1); a `Retry-After` header (seconds or
//!   an HTTP date) is honoured instead; no wait exceeds `retry_max_wait` seconds (default
//!   300). Other 4xx answers fail at once, quoting the first 200 characters of the body.
//! - `max_requests_per_second`: spaces requests of the whole source (decimal; default:
//!   no limit).
//!
//! **Authentication** (*source*): `auth:` is one of
//! - `none` (default);
//! - `bearer`: `token` is sent as `Authorization: Bearer <token>`;
//! - `http_basic`: `username`, `password`;
//! - `api_key`: `api_key` (the value), `api_key_name` (default `Authorization`),
//!   `api_key_location`: `header` (default) or `query`;
//! - `oauth2_client_credentials`: `token_url`, `client_id`, `client_secret`, optional
//!   `scope`; `client_auth`: `body` (default: credentials in the form body) or `basic`.
//!   The access token is fetched once, kept until its `expires_in` (default 3600 s) is
//!   90 % spent, and fetched again once if the API answers 401.
//!
//! Secrets never appear in errors or logs: query keys are left out of the URLs shown and
//! every credential is redacted from messages.
//!
//! **Endpoint**
//! - `path`: appended to the base URL (default: the stream's name); an absolute URL is
//!   used as is. `{field}` (or dlt's `{resources.<parent>.<field>}`) takes the value of a
//!   field of the parent record (child streams, below); dotted names reach nested fields.
//! - `params.<name>`: query parameters sent with the first request of every endpoint.
//! - `headers.<Name>`: request headers.
//! - `data_selector`: JSONPath (RFC 9535, like `$.data[*]`, or dlt's dotted `data.items`)
//!   to the records in each response. One array found: its elements are the records;
//!   otherwise every node found is a record. Default: the response itself when it is an
//!   array; else its first field among `data`, `results`, `items`, `records`, `entries`
//!   holding an array, else its first field holding an array, else the response as one
//!   record.
//! - `batch_size`: records per Arrow batch (default 10000); the columns are inferred from
//!   the first batch (see below).
//!
//! **Paginators**: `paginator:` is one of
//! - `auto` (default): follows a `Link: <…>; rel="next"` header, or a next URL in the body
//!   at `next`, `links.next`, `_links.next.href`, `paging.next` or `pagination.next`;
//!   otherwise one page;
//! - `single_page`;
//! - `offset`: `limit` (page size, default 100), `offset` (first offset, default 0),
//!   `limit_param` (default `limit`), `offset_param` (default `offset`), optional
//!   `total_path` (JSONPath to the total record count) and `maximum_offset`;
//! - `page_number`: `base_page` (default 1), `page_param` (default `page`), optional
//!   `total_path` (JSONPath to the number of pages) and `maximum_page`;
//! - `cursor`: `cursor_path` (JSONPath to the next page's cursor in the body, default
//!   `cursors.next`), `cursor_param` (query parameter, default `cursor`);
//! - `json_link`: `next_url_path` (JSONPath to the next page's URL, default `next`); the
//!   URL is followed as given (relative URLs resolve against the current one);
//! - `header_link`: the `Link` header's `rel` given by `links_next_key` (default `next`).
//!
//! Offset and page-number pagination stop at the first empty page, at the total, or at
//! the maximum; the others stop when there is no next cursor or URL. A paginator that
//! would request the same page again stops the read with an error.
//!
//! **Incremental** (streams with `mode: incremental`, `cursor:` and `primary_key:`)
//! - `incremental_param`: query parameter (dlt: `start_param`) that receives the cursor
//!   reached by the last load (the largest value of the `cursor:` column), or
//!   `initial_value` on the first load. The API must treat it as inclusive (`>=`): records
//!   sharing the last cursor value are read again and merged on the primary key, never
//!   lost.
//!
//! **Child streams** (*stream*)
//! - `parent`: another stream of this source. Its records are read (all of them, page by
//!   page) and the child's `path` is requested once per parent record, filling the `{…}`
//!   placeholders from it. Every field used in the path, and every field listed in
//!   `include_from_parent` (comma-separated), becomes a column `_<parent>_<field>`.
//! - `unnest`: with `parent`, instead of requesting a path: one row per element of the
//!   parent record's array field (dotted for nested fields); object elements are flattened,
//!   other elements land in column `value`. Each row carries `_index` (0-based position in
//!   the array) and the parent's key: the `include_from_parent` fields, or the parent
//!   stream's `primary_key`, as `_<parent>_<field>`.
//!
//! **Columns.** Records become rows as described in [`crate::json`]: nested objects are
//! flattened into `parent__child` columns, arrays are kept as JSON text, types are inferred.
//! Field names are kept as the API spells them. The columns are inferred from the first
//! batch of each read, widened from the columns of the previous load (kept in the
//! stream's state), so that a sample with only integers does not turn a Float64 column into
//! Int64, and a column seen once stays. A record of a later batch that does not fit (a
//! field not seen in the first batch, a string where a number was inferred) or a record
//! that is not an object is rejected with its URL and position in the page (its `line`),
//! and kept in `<destination>__rejected`; the next load adds the new field as a column.
//! `columns:` and `exclude:` select columns (a name also selects its flattened children).

use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use async_trait::async_trait;
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value};
use serde_json_path::JsonPath;
use strata_project::{SourceDef, StreamDef};
use strata_types::Redactor;

use crate::{BatchStream, DiscoveredStream, Error, ReadContext, RejectedRow, Result, Source, json};

const SOURCE_ONLY: &[&str] = &[
    "timeout",
    "max_retries",
    "retry_backoff",
    "retry_max_wait",
    "max_requests_per_second",
    "auth",
    "token",
    "username",
    "password",
    "api_key",
    "api_key_name",
    "api_key_location",
    "token_url",
    "client_id",
    "client_secret",
    "scope",
    "client_auth",
];

const ENDPOINT: &[&str] = &[
    "path",
    "data_selector",
    "batch_size",
    "paginator",
    "limit",
    "offset",
    "limit_param",
    "offset_param",
    "total_path",
    "maximum_offset",
    "base_page",
    "page_param",
    "maximum_page",
    "cursor_path",
    "cursor_param",
    "next_url_path",
    "links_next_key",
    "incremental_param",
    "initial_value",
];

const STREAM_ONLY: &[&str] = &["parent", "unnest", "include_from_parent"];

const DEFAULT_BATCH: usize = 10_000;

#[derive(Debug, Clone)]
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
    ApiKey {
        name: String,
        value: String,
        in_query: bool,
    },
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
        basic: bool,
    },
}

#[derive(Debug)]
struct Limiter {
    interval: Duration,
    next: Mutex<Instant>,
}

/// A REST API source.
pub struct RestSource {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    base_url: String,
    client: reqwest::Client,
    options: BTreeMap<String, String>,
    streams: Vec<StreamDef>,
    auth: Auth,
    oauth_token: tokio::sync::Mutex<Option<(String, Instant)>>,
    limiter: Option<Limiter>,
    max_retries: u32,
    backoff: Duration,
    max_wait: Duration,
    redactor: Redactor,
}

fn parse_num<T: std::str::FromStr>(source: &str, key: &str, v: &str) -> Result<T> {
    v.trim().parse::<T>().map_err(|_| {
        Error::config(
            source,
            &format!("option `{key}`: `{v}` is not a valid number"),
        )
    })
}

fn parse_secs(source: &str, key: &str, v: &str) -> Result<Duration> {
    let s: f64 = parse_num(source, key, v)?;
    if !s.is_finite() || s < 0.0 {
        return Err(Error::config(
            source,
            &format!("option `{key}`: give a number of seconds, 0 or more"),
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

/// A JSONPath option: full RFC 9535 (`$.a.b[*]`) or dlt's dotted form (`a.b`).
fn parse_path(source: &str, stream: &str, key: &str, v: &str) -> Result<JsonPath> {
    let text = if v.trim_start().starts_with('$') {
        v.trim().to_string()
    } else {
        let mut p = "$".to_string();
        for seg in v.trim().split('.') {
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                p.push_str(&format!("[{seg}]"));
            } else {
                p.push_str(&format!(
                    "['{}']",
                    seg.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        p
    };
    JsonPath::parse(&text).map_err(|e| {
        Error::config(
            source,
            &format!(
                "stream `{stream}`, option `{key}`: `{v}` is not a JSONPath ({e}); write `$.data[*]` or a dotted path like `data.items`"
            ),
        )
    })
}

impl RestSource {
    /// Reads the source definition: base URL, client and authentication options; every
    /// stream's options are checked here too, so mistakes surface before any request.
    pub fn new(def: &SourceDef) -> Result<Self> {
        let name = def.name.clone();
        let cfg = |m: String| Error::config(&name, &m);
        let base_url = def.url.clone().ok_or_else(|| {
            cfg(
                "a REST source needs `url:`, the API's base URL (like https://api.example.com/v1)"
                    .into(),
            )
        })?;
        Url::parse(&base_url).map_err(|e| {
            cfg(format!(
                "`url:` `{base_url}` is not a URL ({e}); give the API's base URL, like https://api.example.com/v1"
            ))
        })?;
        for k in def.options.keys() {
            if STREAM_ONLY.contains(&k.as_str()) {
                return Err(cfg(format!(
                    "option `{k}` belongs in a stream's `options:`, not the source's"
                )));
            }
            if !SOURCE_ONLY.contains(&k.as_str())
                && !ENDPOINT.contains(&k.as_str())
                && !k.starts_with("headers.")
                && !k.starts_with("params.")
            {
                return Err(cfg(format!(
                    "unknown option `{k}`; REST sources know: {}, {}, headers.<Name>, params.<name>",
                    SOURCE_ONLY.join(", "),
                    ENDPOINT.join(", ")
                )));
            }
        }
        let o = |k: &str| def.options.get(k).map(String::as_str);
        let need = |k: &str, auth: &str| -> Result<String> {
            o(k).map(str::to_string).ok_or_else(|| {
                Error::config(&name, &format!("`auth: {auth}` needs the option `{k}`"))
            })
        };
        let redactor = Redactor::new();
        let auth = match o("auth").unwrap_or("none") {
            "none" => Auth::None,
            "bearer" => Auth::Bearer(need("token", "bearer")?),
            "http_basic" => Auth::Basic(
                need("username", "http_basic")?,
                o("password").unwrap_or_default().to_string(),
            ),
            "api_key" => {
                let in_query = match o("api_key_location").unwrap_or("header") {
                    "header" => false,
                    "query" => true,
                    other => {
                        return Err(cfg(format!(
                            "option `api_key_location`: `{other}` is not one of header, query"
                        )));
                    }
                };
                Auth::ApiKey {
                    name: o("api_key_name").unwrap_or("Authorization").to_string(),
                    value: need("api_key", "api_key")?,
                    in_query,
                }
            }
            "oauth2_client_credentials" => Auth::OAuth2 {
                token_url: need("token_url", "oauth2_client_credentials")?,
                client_id: need("client_id", "oauth2_client_credentials")?,
                client_secret: need("client_secret", "oauth2_client_credentials")?,
                scope: o("scope").map(str::to_string),
                basic: match o("client_auth").unwrap_or("body") {
                    "body" => false,
                    "basic" => true,
                    other => {
                        return Err(cfg(format!(
                            "option `client_auth`: `{other}` is not one of body, basic"
                        )));
                    }
                },
            },
            other => {
                return Err(cfg(format!(
                    "option `auth`: `{other}` is not one of none, bearer, http_basic, api_key, oauth2_client_credentials"
                )));
            }
        };
        for k in ["token", "password", "api_key", "client_secret"] {
            if let Some(v) = o(k) {
                redactor.add(v);
            }
        }
        if let Auth::Basic(u, p) = &auth {
            use base64_like::encode;
            redactor.add(encode(&format!("{u}:{p}")));
        }
        let timeout = match o("timeout") {
            Some(v) => parse_secs(&name, "timeout", v)?,
            None => Duration::from_secs(60),
        };
        let max_retries = match o("max_retries") {
            Some(v) => parse_num(&name, "max_retries", v)?,
            None => 5,
        };
        let backoff = match o("retry_backoff") {
            Some(v) => parse_secs(&name, "retry_backoff", v)?,
            None => Duration::from_secs(1),
        };
        let max_wait = match o("retry_max_wait") {
            Some(v) => parse_secs(&name, "retry_max_wait", v)?,
            None => Duration::from_secs(300),
        };
        let limiter = match o("max_requests_per_second") {
            Some(v) => {
                let rps: f64 = parse_num(&name, "max_requests_per_second", v)?;
                if !(rps.is_finite() && rps > 0.0) {
                    return Err(cfg(
                        "option `max_requests_per_second`: give a number above 0".into(),
                    ));
                }
                Some(Limiter {
                    interval: Duration::from_secs_f64(1.0 / rps),
                    next: Mutex::new(Instant::now()),
                })
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| cfg(format!("cannot set up the HTTP client: {e}")))?;
        let src = RestSource {
            inner: Arc::new(Inner {
                name: name.clone(),
                base_url,
                client,
                options: def.options.clone(),
                streams: def.streams.clone(),
                auth,
                oauth_token: tokio::sync::Mutex::new(None),
                limiter,
                max_retries,
                backoff,
                max_wait,
                redactor,
            }),
        };
        for s in &def.streams {
            let ep = Endpoint::parse(&src.inner, s)?;
            if let Some(link) = &ep.parent {
                src.inner.parent_chain(s, link)?;
            }
        }
        Ok(src)
    }
}

/// Base64 of `user:password`, to redact a basic-auth header should one be echoed back.
mod base64_like {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub(super) fn encode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
        for chunk in b.chunks(3) {
            let n = (chunk[0] as u32) << 16
                | (*chunk.get(1).unwrap_or(&0) as u32) << 8
                | *chunk.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
enum Paginator {
    Auto,
    Single,
    Offset {
        limit: u64,
        offset: u64,
        limit_param: String,
        offset_param: String,
        total_path: Option<JsonPath>,
        maximum_offset: Option<u64>,
    },
    PageNumber {
        base_page: u64,
        page_param: String,
        total_path: Option<JsonPath>,
        maximum_page: Option<u64>,
    },
    Cursor {
        cursor_path: JsonPath,
        cursor_param: String,
    },
    JsonLink {
        next_url_path: JsonPath,
    },
    HeaderLink {
        rel: String,
    },
}

#[derive(Debug, Clone)]
enum LinkKind {
    /// `{placeholder}` text → dotted field of the parent record.
    Path(Vec<(String, String)>),
    /// Dotted field holding the array to unnest.
    Unnest(String),
}

#[derive(Debug, Clone)]
struct ParentLink {
    parent: String,
    kind: LinkKind,
    /// Dotted fields of the parent record copied as `_<parent>_<field>` columns.
    include: Vec<String>,
}

#[derive(Debug, Clone)]
struct Endpoint {
    stream: String,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    params: Vec<(String, String)>,
    paginator: Paginator,
    selector: Option<JsonPath>,
    incremental_param: Option<String>,
    initial_value: Option<String>,
    batch_size: usize,
    parent: Option<ParentLink>,
}

impl Endpoint {
    fn parse(inner: &Inner, stream: &StreamDef) -> Result<Endpoint> {
        let src = inner.name.as_str();
        let sname = stream.name.as_str();
        let cfg = |m: String| Error::config(src, &format!("stream `{sname}`: {m}"));
        for k in stream.options.keys() {
            if SOURCE_ONLY.contains(&k.as_str()) {
                return Err(cfg(format!(
                    "option `{k}` belongs in the source's `options:`, not a stream's"
                )));
            }
            if !STREAM_ONLY.contains(&k.as_str())
                && !ENDPOINT.contains(&k.as_str())
                && !k.starts_with("headers.")
                && !k.starts_with("params.")
            {
                return Err(cfg(format!(
                    "unknown option `{k}`; REST streams know: {}, {}, headers.<Name>, params.<name>",
                    ENDPOINT.join(", "),
                    STREAM_ONLY.join(", ")
                )));
            }
        }
        let o = |k: &str| {
            stream
                .options
                .get(k)
                .or_else(|| inner.options.get(k))
                .map(String::as_str)
        };
        let num = |k: &str| -> Result<Option<u64>> {
            o(k).map(|v| parse_num::<u64>(src, k, v)).transpose()
        };
        let path_opt = |k: &str, default: &str| parse_path(src, sname, k, o(k).unwrap_or(default));
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        for map in [&inner.options, &stream.options] {
            for (k, v) in map {
                if let Some(h) = k.strip_prefix("headers.") {
                    headers.insert(h.to_string(), v.clone());
                } else if let Some(p) = k.strip_prefix("params.") {
                    params.insert(p.to_string(), v.clone());
                }
            }
        }
        let headers = headers
            .into_iter()
            .map(|(k, v)| {
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                    cfg(format!("option `headers.{k}`: `{k}` is not a header name"))
                })?;
                let value = HeaderValue::from_str(&v).map_err(|_| {
                    cfg(format!(
                        "option `headers.{k}`: the value is not a valid header value"
                    ))
                })?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>>>()?;
        let text = |k: &str, d: &str| o(k).unwrap_or(d).to_string();
        let paginator = match o("paginator").unwrap_or("auto") {
            "auto" => Paginator::Auto,
            "single_page" => Paginator::Single,
            "offset" => {
                let limit = num("limit")?.unwrap_or(100);
                if limit == 0 {
                    return Err(cfg("option `limit`: give a page size above 0".into()));
                }
                Paginator::Offset {
                    limit,
                    offset: num("offset")?.unwrap_or(0),
                    limit_param: text("limit_param", "limit"),
                    offset_param: text("offset_param", "offset"),
                    total_path: o("total_path")
                        .map(|_| path_opt("total_path", ""))
                        .transpose()?,
                    maximum_offset: num("maximum_offset")?,
                }
            }
            "page_number" => Paginator::PageNumber {
                base_page: num("base_page")?.unwrap_or(1),
                page_param: text("page_param", "page"),
                total_path: o("total_path")
                    .map(|_| path_opt("total_path", ""))
                    .transpose()?,
                maximum_page: num("maximum_page")?,
            },
            "cursor" => Paginator::Cursor {
                cursor_path: path_opt("cursor_path", "cursors.next")?,
                cursor_param: text("cursor_param", "cursor"),
            },
            "json_link" => Paginator::JsonLink {
                next_url_path: path_opt("next_url_path", "next")?,
            },
            "header_link" => Paginator::HeaderLink {
                rel: text("links_next_key", "next"),
            },
            other => {
                return Err(cfg(format!(
                    "option `paginator`: `{other}` is not one of auto, single_page, offset, page_number, cursor, json_link, header_link"
                )));
            }
        };
        let selector = o("data_selector")
            .map(|_| path_opt("data_selector", ""))
            .transpose()?;
        let batch_size = match num("batch_size")? {
            Some(0) => return Err(cfg("option `batch_size`: give a number above 0".into())),
            Some(n) => n as usize,
            None => DEFAULT_BATCH,
        };
        let path = text("path", sname);
        let placeholders = placeholders(&path).map_err(cfg)?;
        let so = |k: &str| stream.options.get(k).map(String::as_str);
        let include: Vec<String> = so("include_from_parent")
            .map(|v| {
                v.split(',')
                    .map(|f| f.trim().to_string())
                    .filter(|f| !f.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let parent = match so("parent") {
            None => {
                if let Some(k) = ["unnest", "include_from_parent"]
                    .into_iter()
                    .find(|k| so(k).is_some())
                {
                    return Err(cfg(format!(
                        "option `{k}` needs `parent:`, the stream whose records it reads"
                    )));
                }
                if let Some((ph, _)) = placeholders.first() {
                    return Err(cfg(format!(
                        "option `path` has the placeholder `{{{ph}}}` but the stream has no `parent:` to fill it from"
                    )));
                }
                None
            }
            Some(p) => {
                if p == sname {
                    return Err(cfg(
                        "option `parent`: a stream cannot be its own parent".into()
                    ));
                }
                if !inner.streams.iter().any(|s| s.name == p) {
                    return Err(cfg(format!(
                        "option `parent`: there is no stream `{p}` in this source"
                    )));
                }
                let kind = match so("unnest") {
                    Some(field) => {
                        if so("path").is_some() {
                            return Err(cfg(
                                "`unnest` reads the parent's records and makes no request: remove `path`".into(),
                            ));
                        }
                        LinkKind::Unnest(field.to_string())
                    }
                    None => {
                        if placeholders.is_empty() {
                            return Err(cfg(format!(
                                "a child stream's `path` needs a placeholder taken from each `{p}` record, like `/{p}/{{id}}/{sname}`, or use `unnest: <field>`"
                            )));
                        }
                        let mut fields = Vec::new();
                        for (ph, field) in placeholders {
                            let field = match field.strip_prefix("resources.") {
                                Some(rest) => match rest.split_once('.') {
                                    Some((res, f)) if res == p => f.to_string(),
                                    _ => {
                                        return Err(cfg(format!(
                                            "option `path`: placeholder `{{{ph}}}` must name the parent, like `{{resources.{p}.id}}`"
                                        )));
                                    }
                                },
                                None => field,
                            };
                            fields.push((ph, field));
                        }
                        LinkKind::Path(fields)
                    }
                };
                let include = if include.is_empty() {
                    match &kind {
                        LinkKind::Unnest(_) => {
                            let parent_def = inner.streams.iter().find(|s| s.name == p);
                            let key = parent_def
                                .map(|s| s.primary_key.clone())
                                .unwrap_or_default();
                            if key.is_empty() {
                                return Err(cfg(format!(
                                    "`unnest` needs the parent's key to tie each row to its `{p}` record: give stream `{p}` a `primary_key:` or list fields in `include_from_parent`"
                                )));
                            }
                            key.into_iter()
                                .map(|k| k.replace(json::NESTED_SEPARATOR, "."))
                                .collect()
                        }
                        LinkKind::Path(_) => Vec::new(),
                    }
                } else {
                    include
                };
                Some(ParentLink {
                    parent: p.to_string(),
                    kind,
                    include,
                })
            }
        };
        let incremental_param = o("incremental_param").map(str::to_string);
        Ok(Endpoint {
            stream: sname.to_string(),
            path,
            headers,
            params: params.into_iter().collect(),
            paginator,
            selector,
            incremental_param,
            initial_value: o("initial_value").map(str::to_string),
            batch_size,
            parent,
        })
    }
}

/// `{…}` placeholders of a path, as (text inside the braces, field).
fn placeholders(path: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("option `path`: `{path}` has a `{{` without its `}}`"))?;
        let inside = after[..close].trim();
        if inside.is_empty() {
            return Err(format!("option `path`: `{path}` has an empty `{{}}`"));
        }
        out.push((after[..close].to_string(), inside.to_string()));
        rest = &after[close + 1..];
    }
    Ok(out)
}

/// A field of a record by dotted name (`owner.id`).
fn field<'a>(record: &'a Value, dotted: &str) -> Option<&'a Value> {
    let mut v = record;
    for seg in dotted.split('.') {
        v = v.as_object()?.get(seg)?;
    }
    Some(v)
}

fn parent_column(parent: &str, field: &str) -> String {
    format!("_{parent}_{}", field.replace('.', json::NESTED_SEPARATOR))
}

fn first_chars(s: &str, n: usize) -> String {
    let t: String = s.chars().take(n).collect();
    if t.len() < s.len() {
        format!("{t}…")
    } else {
        t
    }
}

/// One request: a URL and its query parameters (auth parameters are added when sent).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Req {
    url: Url,
    params: Vec<(String, String)>,
}

impl Req {
    fn full_url(&self) -> Url {
        let mut u = self.url.clone();
        if !self.params.is_empty() {
            let mut q = u.query_pairs_mut();
            for (k, v) in &self.params {
                q.append_pair(k, v);
            }
        }
        u
    }

    fn set_param(&mut self, k: &str, v: String) {
        match self.params.iter_mut().find(|(pk, _)| pk == k) {
            Some(p) => p.1 = v,
            None => self.params.push((k.to_string(), v)),
        }
    }
}

/// A response read whole.
struct Fetched {
    headers: HeaderMap,
    body: bytes::Bytes,
}

/// Why a request failed.
enum HttpError {
    /// No answer (connection refused, timeout, TLS); after retries when retried.
    Unreachable(String),
    /// An error status.
    Status {
        status: StatusCode,
        url: String,
        body: String,
        retries: u32,
    },
    /// The OAuth2 token endpoint refused or failed.
    Token(String),
}

impl HttpError {
    fn message(&self) -> String {
        match self {
            HttpError::Unreachable(m) | HttpError::Token(m) => m.clone(),
            HttpError::Status {
                status,
                url,
                body,
                retries,
            } => {
                let what = if *retries > 0 {
                    format!("GET {url} failed with HTTP {status} after {retries} retries")
                } else {
                    format!("GET {url} failed with HTTP {status}")
                };
                let hint = match status.as_u16() {
                    401 | 403 => " (authentication failed: check `auth` and its credentials)",
                    404 => " (not found: check `url:` and the stream's `path`)",
                    _ => "",
                };
                if body.is_empty() {
                    format!("{what}{hint}")
                } else {
                    format!("{what}{hint}: {body}")
                }
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !msg.contains(&m) {
            msg.push_str(": ");
            msg.push_str(&m);
        }
        cur = s.source();
    }
    msg
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<f64>() {
        return (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// The `rel` target of a `Link` header (RFC 8288).
fn link_header(h: &HeaderMap, rel: &str) -> Option<String> {
    for v in h.get_all(reqwest::header::LINK) {
        let Ok(v) = v.to_str() else { continue };
        let mut rest = v;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else {
                break;
            };
            let target = &rest[open + 1..open + close];
            let after = &rest[open + close + 1..];
            let end = after.find('<').unwrap_or(after.len());
            let params = &after[..end];
            let found = params.split(';').any(|p| {
                let p = p.trim().trim_end_matches(',').trim();
                match p.split_once('=') {
                    Some((k, val)) if k.trim().eq_ignore_ascii_case("rel") => val
                        .trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case(rel)),
                    _ => false,
                }
            });
            if found {
                return Some(target.to_string());
            }
            rest = &after[end..];
        }
    }
    None
}

impl Inner {
    fn url_of(&self, path: &str) -> std::result::Result<Url, String> {
        let full = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!(
                "{}/{}",
                self.base_url.trim_end_matches('/'),
                path.trim_start_matches('/')
            )
        };
        Url::parse(&full).map_err(|e| format!("`{full}` is not a URL ({e})"))
    }

    /// The URL as shown in messages: without auth query keys, secrets redacted.
    fn shown(&self, req: &Req) -> String {
        self.redactor.redact(req.full_url().as_str())
    }

    fn read_error(&self, stream: &str, message: String) -> Error {
        Error::Read {
            source_name: self.name.clone(),
            stream: Some(stream.to_string()),
            message: self.redactor.redact(&message),
        }
    }

    fn config_error(&self, stream: &str, message: String) -> Error {
        Error::config(&self.name, &format!("stream `{stream}`: {message}"))
    }

    fn stream(&self, name: &str) -> Option<&StreamDef> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// Checks that a child's chain of parents ends (no cycle).
    fn parent_chain(&self, stream: &StreamDef, link: &ParentLink) -> Result<()> {
        let mut seen = vec![stream.name.clone()];
        let mut next = Some(link.parent.clone());
        while let Some(p) = next {
            if seen.contains(&p) {
                return Err(self.config_error(
                    &stream.name,
                    format!(
                        "option `parent`: the parents form a cycle ({} → {p})",
                        seen.join(" → ")
                    ),
                ));
            }
            seen.push(p.clone());
            next = self
                .stream(&p)
                .and_then(|s| s.options.get("parent").cloned());
        }
        Ok(())
    }

    async fn pace(&self) {
        let Some(l) = &self.limiter else { return };
        let wait = {
            let mut next = l.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + l.interval;
            at - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    async fn oauth_token(&self, refresh: bool) -> std::result::Result<String, HttpError> {
        let Auth::OAuth2 {
            token_url,
            client_id,
            client_secret,
            scope,
            basic,
        } = &self.auth
        else {
            return Err(HttpError::Token("no OAuth2 configuration".into()));
        };
        let mut cached = self.oauth_token.lock().await;
        if !refresh
            && let Some((t, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let shown = self.redactor.redact(token_url);
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let mut rb = self.client.post(token_url);
        if *basic {
            rb = rb.basic_auth(client_id, Some(client_secret));
        } else {
            form.push(("client_id", client_id));
            form.push(("client_secret", client_secret));
        }
        self.pace().await;
        let resp = rb.form(&form).send().await.map_err(|e| {
            HttpError::Unreachable(format!(
                "cannot reach the OAuth2 token URL {shown}: {}",
                error_chain(&e.without_url())
            ))
        })?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(HttpError::Token(format!(
                "the OAuth2 token request to {shown} failed with HTTP {status} (check `client_id`, `client_secret` and `scope`): {}",
                first_chars(&body, 200)
            )));
        }
        let v: Value = serde_json::from_str(&body).map_err(|_| {
            HttpError::Token(format!(
                "the OAuth2 token response of {shown} is not JSON: {}",
                first_chars(&body, 200)
            ))
        })?;
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                HttpError::Token(format!(
                    "the OAuth2 token response of {shown} has no `access_token`"
                ))
            })?
            .to_string();
        let expires = v
            .get("expires_in")
            .and_then(|e| {
                e.as_f64()
                    .or_else(|| e.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(3600.0)
            .max(0.0);
        self.redactor.add(token.clone());
        *cached = Some((
            token.clone(),
            Instant::now() + Duration::from_secs_f64(expires * 0.9),
        ));
        Ok(token)
    }

    /// GET with auth, headers, pacing, and (when `retry`) backoff on 429, 5xx and
    /// connection failures.
    async fn get(
        &self,
        headers: &[(HeaderName, HeaderValue)],
        req: &Req,
        retry: bool,
    ) -> std::result::Result<Fetched, HttpError> {
        let shown = self.shown(req);
        let mut attempt: u32 = 0;
        let mut refreshed = false;
        loop {
            let mut url = req.full_url();
            let mut rb_headers = HeaderMap::new();
            for (k, v) in headers {
                rb_headers.insert(k.clone(), v.clone());
            }
            let mut bearer = None;
            let mut basic = None;
            match &self.auth {
                Auth::None => {}
                Auth::Bearer(t) => bearer = Some(t.clone()),
                Auth::Basic(u, p) => basic = Some((u.clone(), p.clone())),
                Auth::ApiKey {
                    name,
                    value,
                    in_query,
                } => {
                    if *in_query {
                        // A next-page link may already carry the key.
                        if !url.query_pairs().any(|(k, _)| k == name.as_str()) {
                            url.query_pairs_mut().append_pair(name, value);
                        }
                    } else {
                        let mut v = HeaderValue::from_str(value).map_err(|_| {
                            HttpError::Token(
                                "option `api_key`: the key is not a valid header value".into(),
                            )
                        })?;
                        v.set_sensitive(true);
                        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                            HttpError::Token(format!(
                                "option `api_key_name`: `{name}` is not a header name"
                            ))
                        })?;
                        rb_headers.insert(n, v);
                    }
                }
                Auth::OAuth2 { .. } => bearer = Some(self.oauth_token(false).await?),
            }
            let mut rb = self.client.get(url).headers(rb_headers);
            if let Some(t) = bearer {
                rb = rb.bearer_auth(t);
            }
            if let Some((u, p)) = basic {
                rb = rb.basic_auth(u, Some(p));
            }
            self.pace().await;
            tracing::debug!(source = %self.name, url = %shown, "GET");
            let sent = rb.send().await;
            let (wait, failure) = match sent {
                Err(e) => {
                    let failure = HttpError::Unreachable(format!(
                        "cannot reach {shown}: {}",
                        error_chain(&e.without_url())
                    ));
                    (None, failure)
                }
                Ok(resp) => {
                    let status = resp.status();
                    let rh = resp.headers().clone();
                    if status.is_success() {
                        match resp.bytes().await {
                            Ok(body) => return Ok(Fetched { headers: rh, body }),
                            Err(e) => (
                                None,
                                HttpError::Unreachable(format!(
                                    "reading the response of {shown} failed: {}",
                                    error_chain(&e.without_url())
                                )),
                            ),
                        }
                    } else {
                        let body = resp.text().await.unwrap_or_default();
                        let body = first_chars(body.trim(), 200);
                        if status == StatusCode::UNAUTHORIZED
                            && matches!(self.auth, Auth::OAuth2 { .. })
                            && !refreshed
                        {
                            // The token may have been revoked early: fetch a new one once.
                            refreshed = true;
                            self.oauth_token(true).await?;
                            continue;
                        }
                        let failure = HttpError::Status {
                            status,
                            url: shown.clone(),
                            body,
                            retries: attempt,
                        };
                        if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
                            return Err(failure);
                        }
                        (retry_after(&rh), failure)
                    }
                }
            };
            if !retry || attempt >= self.max_retries {
                return Err(failure);
            }
            let backoff = self
                .backoff
                .saturating_mul(2u32.saturating_pow(attempt.min(20)));
            let wait = wait.unwrap_or(backoff).min(self.max_wait);
            tracing::warn!(source = %self.name, url = %shown, retry = attempt + 1, wait_ms = wait.as_millis() as u64, "{}; retrying", self.redactor.redact(&failure.message()));
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }
}

/// Records of one page (or of the records unnested from one page of the parent).
struct Chunk {
    location: Arc<str>,
    /// (1-based position in the page, record).
    records: Vec<(u64, Value)>,
    /// Parent records that could not make a request or rows.
    bad: Vec<RejectedRow>,
}

/// The records at the selector, or found by the default rules.
fn select(body: Value, selector: Option<&JsonPath>) -> Vec<Value> {
    match selector {
        Some(p) => {
            let nodes = p.query(&body).all();
            match nodes.as_slice() {
                [Value::Array(items)] => items.clone(),
                _ => nodes
                    .into_iter()
                    .filter(|v| !v.is_null())
                    .cloned()
                    .collect(),
            }
        }
        None => match body {
            Value::Array(items) => items,
            Value::Object(mut obj) => {
                let key = ["data", "results", "items", "records", "entries"]
                    .into_iter()
                    .find(|k| obj.get(*k).is_some_and(Value::is_array))
                    .map(str::to_string)
                    .or_else(|| {
                        obj.iter()
                            .find(|(_, v)| v.is_array())
                            .map(|(k, _)| k.clone())
                    });
                match key.and_then(|k| obj.remove(&k)) {
                    Some(Value::Array(items)) => items,
                    _ => vec![Value::Object(obj)],
                }
            }
            Value::Null => Vec::new(),
            other => vec![other],
        },
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// Walks the pages of one endpoint URL.
struct Pager {
    inner: Arc<Inner>,
    ep: Arc<Endpoint>,
    paginator: Paginator,
    next: Option<Req>,
    offset: u64,
    page: u64,
    last_body_hash: Option<u64>,
}

impl Pager {
    fn new(inner: Arc<Inner>, ep: Arc<Endpoint>, path: &str, since: Option<&str>) -> Result<Pager> {
        let url = inner
            .url_of(path)
            .map_err(|m| inner.config_error(&ep.stream, format!("option `path`: {m}")))?;
        let mut req = Req {
            url,
            params: ep.params.clone(),
        };
        if let Some(p) = &ep.incremental_param
            && let Some(v) = since.or(ep.initial_value.as_deref())
        {
            req.set_param(p, v.to_string());
        }
        let paginator = ep.paginator.clone();
        let (mut offset, mut page) = (0, 0);
        match &paginator {
            Paginator::Offset {
                limit,
                offset: first,
                limit_param,
                offset_param,
                ..
            } => {
                offset = *first;
                req.set_param(limit_param, limit.to_string());
                req.set_param(offset_param, offset.to_string());
            }
            Paginator::PageNumber {
                base_page,
                page_param,
                ..
            } => {
                page = *base_page;
                req.set_param(page_param, page.to_string());
            }
            _ => {}
        }
        Ok(Pager {
            inner,
            ep,
            paginator,
            next: Some(req),
            offset,
            page,
            last_body_hash: None,
        })
    }

    async fn next_page(&mut self) -> Result<Option<Chunk>> {
        let Some(req) = self.next.take() else {
            return Ok(None);
        };
        let inner = Arc::clone(&self.inner);
        let stream = self.ep.stream.clone();
        let shown = inner.shown(&req);
        let fetched = inner
            .get(&self.ep.headers, &req, true)
            .await
            .map_err(|e| inner.read_error(&stream, e.message()))?;
        let body: Value = if fetched.body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&fetched.body).map_err(|e| {
                inner.read_error(
                    &stream,
                    format!(
                        "the response of {shown} is not JSON ({e}): {}",
                        first_chars(&String::from_utf8_lossy(&fetched.body), 200)
                    ),
                )
            })?
        };
        if matches!(self.paginator, Paginator::Auto) {
            self.paginator = if link_header(&fetched.headers, "next").is_some() {
                Paginator::HeaderLink { rel: "next".into() }
            } else {
                [
                    "next",
                    "links.next",
                    "_links.next.href",
                    "paging.next",
                    "pagination.next",
                ]
                .into_iter()
                .find(|p| field(&body, p).is_some_and(Value::is_string))
                .and_then(|p| parse_path(&inner.name, &stream, "next_url_path", p).ok())
                .map(|next_url_path| Paginator::JsonLink { next_url_path })
                .unwrap_or(Paginator::Single)
            };
        }
        let mut next: Option<Req> = None;
        let page_hash = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            fetched.body.hash(&mut h);
            h.finish()
        };
        let count_of = |p: &Option<JsonPath>| -> Option<u64> {
            let v = p.as_ref()?.query(&body).first()?;
            v.as_u64()
                .or_else(|| v.as_f64().map(|f| f as u64))
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        };
        let (total_offset, total_pages) = match &self.paginator {
            Paginator::Offset { total_path, .. } => (count_of(total_path), None),
            Paginator::PageNumber { total_path, .. } => (None, count_of(total_path)),
            _ => (None, None),
        };
        let link = match &self.paginator {
            Paginator::Cursor { cursor_path, .. } => {
                cursor_path.query(&body).first().and_then(scalar_text)
            }
            Paginator::JsonLink { next_url_path } => {
                next_url_path.query(&body).first().and_then(scalar_text)
            }
            Paginator::HeaderLink { rel } => link_header(&fetched.headers, rel),
            _ => None,
        };
        let records = select(body, self.ep.selector.as_ref());
        match &self.paginator {
            Paginator::Auto | Paginator::Single => {}
            Paginator::Offset {
                limit,
                offset_param,
                maximum_offset,
                ..
            } => {
                let o = self.offset + limit;
                let done = records.is_empty()
                    || total_offset.is_some_and(|t| o >= t)
                    || maximum_offset.is_some_and(|m| o >= m);
                if !done {
                    self.offset = o;
                    let mut r = req.clone();
                    r.set_param(offset_param, o.to_string());
                    next = Some(r);
                }
            }
            Paginator::PageNumber {
                base_page,
                page_param,
                maximum_page,
                ..
            } => {
                let p = self.page + 1;
                let done = records.is_empty()
                    || total_pages.is_some_and(|t| p >= t + base_page)
                    || maximum_page.is_some_and(|m| p > m);
                if !done {
                    self.page = p;
                    let mut r = req.clone();
                    r.set_param(page_param, p.to_string());
                    next = Some(r);
                }
            }
            Paginator::Cursor { cursor_param, .. } => {
                if let Some(c) = link {
                    let mut r = req.clone();
                    r.set_param(cursor_param, c);
                    next = Some(r);
                }
            }
            Paginator::JsonLink { .. } | Paginator::HeaderLink { .. } => {
                if let Some(l) = link {
                    let url = req.full_url().join(&l).map_err(|e| {
                        inner.read_error(
                            &stream,
                            format!("the next-page link `{l}` of {shown} is not a URL ({e})"),
                        )
                    })?;
                    next = Some(Req {
                        url,
                        params: Vec::new(),
                    });
                }
            }
        }
        if let Some(n) = &next {
            if n.full_url() == req.full_url() {
                return Err(inner.read_error(
                    &stream,
                    format!(
                        "the paginator would request {shown} again; check the stream's `paginator` options"
                    ),
                ));
            }
            if !records.is_empty()
                && self.last_body_hash == Some(page_hash)
                && matches!(
                    self.paginator,
                    Paginator::Offset { .. } | Paginator::PageNumber { .. }
                )
            {
                return Err(inner.read_error(
                    &stream,
                    format!(
                        "{shown} returned the same page as the request before it: the API seems to ignore the paginator's parameters; check `paginator`, `offset_param`, `page_param`"
                    ),
                ));
            }
        }
        self.last_body_hash = Some(page_hash);
        self.next = next;
        Ok(Some(Chunk {
            location: Arc::from(shown),
            records: records
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i as u64 + 1, v))
                .collect(),
            bad: Vec::new(),
        }))
    }
}

/// A child stream: one endpoint walk per parent record.
struct Child {
    inner: Arc<Inner>,
    ep: Arc<Endpoint>,
    parent: Records,
    since: Option<String>,
    queue: VecDeque<(Arc<str>, u64, Value)>,
    current: Option<(Pager, Vec<(String, Value)>)>,
}

/// Rows unnested from an array field of the parent's records.
struct Unnest {
    ep: Arc<Endpoint>,
    parent: Records,
}

/// Where a stream's records come from.
enum Records {
    Pages(Box<Pager>),
    Child(Box<Child>),
    Unnest(Box<Unnest>),
}

fn parent_columns(link: &ParentLink, record: &Value, extra: &[String]) -> Vec<(String, Value)> {
    let mut cols = Vec::new();
    for f in extra.iter().chain(&link.include) {
        let v = field(record, f).cloned().unwrap_or(Value::Null);
        let col = parent_column(&link.parent, f);
        if !cols.iter().any(|(c, _)| c == &col) {
            cols.push((col, v));
        }
    }
    cols
}

impl Records {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Chunk>>> {
        Box::pin(async move {
            match self {
                Records::Pages(p) => p.next_page().await,
                Records::Child(c) => c.next().await,
                Records::Unnest(u) => u.next().await,
            }
        })
    }
}

impl Child {
    async fn next(&mut self) -> Result<Option<Chunk>> {
        let Some(link) = self.ep.parent.clone() else {
            return Ok(None);
        };
        let LinkKind::Path(fields) = &link.kind else {
            return Ok(None);
        };
        loop {
            if let Some((pager, cols)) = &mut self.current {
                if let Some(mut chunk) = pager.next_page().await? {
                    for (_, r) in chunk.records.iter_mut() {
                        if let Value::Object(obj) = r {
                            for (c, v) in cols.iter() {
                                obj.insert(c.clone(), v.clone());
                            }
                        }
                    }
                    return Ok(Some(chunk));
                }
                self.current = None;
            }
            let Some((loc, line, rec)) = self.queue.pop_front() else {
                match self.parent.next().await? {
                    Some(chunk) => {
                        let loc = chunk.location;
                        self.queue.extend(
                            chunk
                                .records
                                .into_iter()
                                .map(|(l, v)| (Arc::clone(&loc), l, v)),
                        );
                        continue;
                    }
                    None => return Ok(None),
                }
            };
            let mut path = self.ep.path.clone();
            let mut used = Vec::new();
            for (ph, f) in fields {
                let Some(v) = field(&rec, f).and_then(scalar_text) else {
                    // This parent record cannot make a request: it is reported, the
                    // others go on.
                    let row = RejectedRow {
                        location: loc.to_string(),
                        line: Some(line),
                        reason: format!(
                            "the `{}` record has no value for `{f}`, needed by the path `{}`",
                            link.parent, self.ep.path
                        ),
                        raw: rec.to_string(),
                    };
                    return Ok(Some(Chunk {
                        location: loc,
                        records: Vec::new(),
                        bad: vec![row],
                    }));
                };
                path = path.replace(&format!("{{{ph}}}"), &url_escape(&v));
                used.push(f.clone());
            }
            let cols = parent_columns(&link, &rec, &used);
            let pager = Pager::new(
                Arc::clone(&self.inner),
                Arc::clone(&self.ep),
                &path,
                self.since.as_deref(),
            )?;
            self.current = Some((pager, cols));
        }
    }
}

/// Percent-encodes a value for one path segment.
fn url_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Unnest {
    async fn next(&mut self) -> Result<Option<Chunk>> {
        let Some(link) = self.ep.parent.clone() else {
            return Ok(None);
        };
        let LinkKind::Unnest(array_field) = &link.kind else {
            return Ok(None);
        };
        let Some(chunk) = self.parent.next().await? else {
            return Ok(None);
        };
        let out_location = Arc::clone(&chunk.location);
        let mut out = Chunk {
            location: chunk.location,
            records: Vec::new(),
            bad: Vec::new(),
        };
        let reject = |line: u64, reason: String, rec: &Value| RejectedRow {
            location: out_location.to_string(),
            line: Some(line),
            reason,
            raw: rec.to_string(),
        };
        for (line, rec) in chunk.records {
            if !rec.is_object() {
                let reason = format!("the `{}` record is not a JSON object", link.parent);
                out.bad.push(reject(line, reason, &rec));
                continue;
            }
            let items = match field(&rec, array_field) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(items)) => items,
                Some(other) => {
                    let reason = format!(
                        "field `{array_field}` of the `{}` record is {}, not an array",
                        link.parent,
                        if other.is_object() {
                            "an object"
                        } else {
                            "a single value"
                        }
                    );
                    out.bad.push(reject(line, reason, &rec));
                    continue;
                }
            };
            let cols = parent_columns(&link, &rec, &[]);
            for (i, item) in items.iter().enumerate() {
                let mut obj = match item {
                    Value::Object(o) => o.clone(),
                    other => {
                        let mut m = Map::new();
                        m.insert("value".into(), other.clone());
                        m
                    }
                };
                for (c, v) in &cols {
                    obj.insert(c.clone(), v.clone());
                }
                obj.insert("_index".into(), Value::from(i as u64));
                out.records.push((line, Value::Object(obj)));
            }
        }
        Ok(Some(out))
    }
}

impl Inner {
    fn records(
        self: &Arc<Self>,
        stream: &StreamDef,
        since: Option<&str>,
        depth: usize,
    ) -> Result<Records> {
        let ep = Arc::new(Endpoint::parse(self, stream)?);
        let Some(link) = ep.parent.clone() else {
            let path = ep.path.clone();
            return Ok(Records::Pages(Box::new(Pager::new(
                Arc::clone(self),
                ep,
                &path,
                since,
            )?)));
        };
        let parent_def = self.stream(&link.parent).ok_or_else(|| {
            self.config_error(
                &stream.name,
                format!(
                    "option `parent`: there is no stream `{}` in this source",
                    link.parent
                ),
            )
        })?;
        if depth > self.streams.len() {
            return Err(self.config_error(
                &stream.name,
                "option `parent`: the parents form a cycle".into(),
            ));
        }
        let parent = self.records(parent_def, None, depth + 1)?;
        Ok(match link.kind {
            LinkKind::Path(_) => Records::Child(Box::new(Child {
                inner: Arc::clone(self),
                ep,
                parent,
                since: since.map(str::to_string),
                queue: VecDeque::new(),
                current: None,
            })),
            LinkKind::Unnest(_) => Records::Unnest(Box::new(Unnest { ep, parent })),
        })
    }
}

/// Records gathered for one batch, with where each came from.
#[derive(Default)]
struct Pending {
    values: Vec<Value>,
    origin: Vec<(Arc<str>, u64)>,
    bad: Vec<RejectedRow>,
}

impl Pending {
    fn push(&mut self, chunk: Chunk) {
        self.bad.extend(chunk.bad);
        for (line, v) in chunk.records {
            self.origin.push((Arc::clone(&chunk.location), line));
            self.values.push(v);
        }
    }
}

async fn gather(recs: &mut Records, batch_size: usize) -> Result<(Pending, bool)> {
    let mut p = Pending::default();
    while p.values.len() < batch_size {
        match recs.next().await? {
            Some(chunk) => p.push(chunk),
            None => return Ok((p, true)),
        }
    }
    Ok((p, false))
}

/// Whether a flattened column is deselected by the stream's `columns:` / `exclude:`.
fn deselected(stream: &StreamDef, name: &str) -> bool {
    let covers = |c: &String| {
        name == c
            || name
                .strip_prefix(c.as_str())
                .is_some_and(|r| r.starts_with(json::NESTED_SEPARATOR))
    };
    (!stream.columns.is_empty() && !stream.columns.iter().any(covers))
        || stream.exclude.iter().any(covers)
}

fn convert(
    inner: &Inner,
    stream: &StreamDef,
    schema: &SchemaRef,
    pending: Pending,
    report: &crate::ReadReport,
) -> Result<RecordBatch> {
    let mut overflow: Option<String> = None;
    for row in pending.bad {
        if let Err(m) = report.reject(row) {
            overflow = Some(m);
        }
    }
    let batch = json::to_batch(
        schema,
        &pending.values,
        |n| deselected(stream, n),
        |i, reason| {
            let (loc, line) = &pending.origin[i];
            let row = RejectedRow {
                location: loc.to_string(),
                line: Some(*line),
                reason,
                raw: pending.values[i].to_string(),
            };
            if let Err(m) = report.reject(row) {
                overflow = Some(m);
            }
        },
    )
    .map_err(|e| inner.read_error(&stream.name, format!("building a batch: {e}")))?;
    if let Some(m) = overflow {
        return Err(inner.read_error(&stream.name, m));
    }
    Ok(batch)
}

fn type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Boolean => "boolean",
        DataType::Int64 => "integer",
        DataType::Float64 => "number",
        _ => "string",
    }
}

#[async_trait]
impl Source for RestSource {
    async fn check(&self) -> Result<()> {
        let inner = &self.inner;
        let first = inner
            .streams
            .iter()
            .find(|s| !s.options.contains_key("parent"));
        let (req, headers) = match first {
            Some(s) => {
                let ep = Endpoint::parse(inner, s)?;
                let url = inner
                    .url_of(&ep.path)
                    .map_err(|m| inner.config_error(&s.name, format!("option `path`: {m}")))?;
                (
                    Req {
                        url,
                        params: ep.params.clone(),
                    },
                    ep.headers,
                )
            }
            None => (
                Req {
                    url: inner
                        .url_of("")
                        .map_err(|m| Error::config(&inner.name, &m))?,
                    params: Vec::new(),
                },
                Vec::new(),
            ),
        };
        match inner.get(&headers, &req, false).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let retryable = match &e {
                    HttpError::Unreachable(_) => true,
                    HttpError::Status { status, .. } => {
                        status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
                    }
                    HttpError::Token(_) => false,
                };
                Err(Error::Connect {
                    source_name: inner.name.clone(),
                    message: inner.redactor.redact(&e.message()),
                    retryable,
                })
            }
        }
    }

    async fn discover(&self) -> Result<Vec<DiscoveredStream>> {
        let mut out = Vec::new();
        for s in &self.inner.streams {
            let mut recs = self.inner.records(s, None, 0)?;
            let values: Vec<Value> = match recs.next().await? {
                Some(chunk) => chunk.records.into_iter().map(|(_, v)| v).collect(),
                None => Vec::new(),
            };
            let full = json::infer_schema(&values);
            let schema = select_columns(s, &full);
            out.push(DiscoveredStream {
                table: s.name.clone(),
                source_types: schema
                    .fields()
                    .iter()
                    .map(|f| type_name(f.data_type()).to_string())
                    .collect(),
                schema,
                primary_key: s.primary_key.clone(),
                kind: crate::TableKind::Table,
                description: None,
            });
        }
        Ok(out)
    }

    async fn read(
        &self,
        stream: &StreamDef,
        ctx: &ReadContext,
    ) -> Result<(SchemaRef, BatchStream)> {
        let inner = Arc::clone(&self.inner);
        let mut recs = inner.records(stream, ctx.since.as_deref(), 0)?;
        let ep = Endpoint::parse(&inner, stream)?;
        let batch_size = ep.batch_size;
        let (first, mut done) = gather(&mut recs, batch_size).await?;
        let saved = ctx
            .saved
            .as_ref()
            .and_then(|s| s.get("schema"))
            .and_then(json::schema_from_state);
        let full = json::widen_schema(saved.as_ref(), &first.values);
        let schema = select_columns(stream, &full);
        if schema.fields().is_empty() {
            // A Delta table needs columns, and none is known before a first record.
            return Err(inner.read_error(
                &stream.name,
                format!(
                    "the API returned no records (path `{}`) and no earlier load recorded the columns, so there is nothing to create the destination from; nothing was written. Load again once it has records",
                    ep.path
                ),
            ));
        }
        for needed in stream.primary_key.iter().chain(&stream.cursor) {
            if schema.field_with_name(needed).is_err() {
                return Err(inner.read_error(
                    &stream.name,
                    format!(
                        "column `{needed}` (primary key or cursor) is not among the fields of the records read ({}); nested fields are named `parent__child`",
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        ctx.report
            .set_state(serde_json::json!({"schema": json::schema_to_state(&schema)}));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let report = Arc::clone(&ctx.report);
        let stream_def = stream.clone();
        let schema_task = Arc::clone(&schema);
        tokio::spawn(async move {
            let mut pending = first;
            loop {
                let batch = convert(&inner, &stream_def, &schema_task, pending, &report);
                let failed = batch.is_err();
                let send = match batch {
                    Ok(b) if b.num_rows() == 0 => true,
                    other => tx.send(other).await.is_ok(),
                };
                if !send || failed || done {
                    return; // finished, failed, or the reader went away
                }
                match gather(&mut recs, batch_size).await {
                    Ok((p, d)) => {
                        pending = p;
                        done = d;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        let batches =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Ok((schema, Box::pin(batches)))
    }
}

fn select_columns(stream: &StreamDef, full: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        full.fields()
            .iter()
            .filter(|f| !deselected(stream, f.name()))
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn link_headers_are_parsed() {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            HeaderValue::from_static(
                r#"<https://a.test/x?page=1>; rel="prev", <https://a.test/x?page=3>; rel="next last""#,
            ),
        );
        assert_eq!(
            link_header(&h, "next").as_deref(),
            Some("https://a.test/x?page=3")
        );
        assert_eq!(
            link_header(&h, "prev").as_deref(),
            Some("https://a.test/x?page=1")
        );
        assert_eq!(link_header(&h, "first"), None);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_str(&later).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
    }

    #[test]
    fn records_are_selected() {
        let p = parse_path("s", "t", "data_selector", "payload.items").unwrap();
        assert_eq!(
            select(json!({"payload": {"items": [1, 2]}}), Some(&p)),
            [json!(1), json!(2)]
        );
        let p = parse_path("s", "t", "data_selector", "$.data[*].node").unwrap();
        assert_eq!(
            select(
                json!({"data": [{"node": {"a": 1}}, {"node": {"a": 2}}]}),
                Some(&p)
            ),
            [json!({"a": 1}), json!({"a": 2})]
        );
        assert_eq!(select(json!([{"a": 1}]), None), [json!({"a": 1})]);
        assert_eq!(
            select(json!({"meta": [1], "results": [{"a": 1}]}), None),
            [json!({"a": 1})]
        );
        assert_eq!(
            select(json!({"count": 1, "rows": [{"a": 1}]}), None),
            [json!({"a": 1})]
        );
        assert_eq!(select(json!({"a": 1}), None), [json!({"a": 1})]);
    }

    #[test]
    fn basic_credentials_encode_like_base64() {
        assert_eq!(base64_like::encode("user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64_like::encode("a"), "YQ==");
        assert_eq!(base64_like::encode("ab"), "YWI=");
    }

    #[test]
    fn placeholders_and_escaping() {
        assert_eq!(
            placeholders("/c/{id}/o/{resources.c.x}").unwrap(),
            [
                ("id".to_string(), "id".to_string()),
                ("resources.c.x".to_string(), "resources.c.x".to_string())
            ]
        );
        assert!(placeholders("/c/{id").is_err());
        assert_eq!(url_escape("a b/c"), "a%20b%2Fc");
    }
}
