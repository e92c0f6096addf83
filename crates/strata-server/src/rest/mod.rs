//! The REST API: SQL over HTTP, read endpoints for every table, metadata, health.
//!
//! ```text
//! GET  /api/v1/health                     liveness (no credentials)
//! GET  /api/v1/ready                      the metadata store and the lake answer
//! GET  /api/v1/openapi.json               this API, with a path per table the caller may read
//! POST /api/v1/sql                        {"sql": "…", "params": […]} → rows (JSON, NDJSON, CSV,
//!                                         Arrow IPC or Parquet by `Accept`), streamed
//! GET  /api/v1/tables                     tables the caller may read, with their columns
//! GET  /api/v1/tables/{ns}/{table}        rows: PostgREST-style filters, order, select, pages
//! GET  /api/v1/tables/{ns}/{table}/schema columns and types
//! ```
//!
//! Callers authenticate with `Authorization: Bearer <API token>` (or HTTP Basic with a
//! user's password or token). Each request runs in an engine session of its principal, so
//! grants, row policies and masks apply exactly as on the Postgres protocol; a table request
//! by key (`id=eq.42`) runs a key lookup planned in such a session and kept while the
//! access policy stays the same. Requests are
//! rate-limited per credential, bodies and results are bounded, and every request lands in
//! the audit log.

pub mod encode;
pub mod filter;
mod openapi;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use strata_engine::datafusion::arrow::array::RecordBatch;
use strata_engine::datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use strata_engine::datafusion::common::{ParamValues, ScalarValue, TableReference};
use strata_engine::datafusion::sql::parser::Statement as DFStatement;
use strata_engine::{Principal, Session, StatementResult};
use strata_meta::AuditOutcome;

use crate::auth::Credential;
use encode::{Encoder, Format, Trailer};

/// The surface name in the audit log.
const SURFACE: &str = "rest";

/// Bounds on what one request may ask for.
#[derive(Debug, Clone)]
pub struct RestLimits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most rows one `/sql` response carries (the rest is cut, and the response says so).
    pub max_rows: u64,
    /// Longest a statement may run.
    pub timeout: Duration,
    /// Requests per second each credential may make (0: unlimited).
    pub rate_per_second: f64,
    /// Requests a credential may make at once above the rate.
    pub burst: f64,
}

impl Default for RestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_rows: 1_000_000,
            timeout: Duration::from_secs(300),
            rate_per_second: 100.0,
            burst: 200.0,
        }
    }
}

/// What every request shares.
pub(crate) struct RestState {
    pub(crate) shared: Arc<crate::pg::Shared>,
    pub(crate) limits: RestLimits,
    limiter: RateLimiter,
    logins: LoginCache,
    lookups: TableLookups,
}

/// The router of the API.
pub(crate) fn router(shared: Arc<crate::pg::Shared>, limits: RestLimits) -> Router {
    let state = Arc::new(RestState {
        shared,
        limiter: RateLimiter::new(limits.rate_per_second, limits.burst),
        logins: LoginCache::default(),
        lookups: TableLookups::default(),
        limits: limits.clone(),
    });
    let mut router = Router::new();
    for e in openapi::endpoints() {
        router = router.route(e.path, e.handler);
    }
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// An error as the client sees it: an HTTP status and `{"error": {"code", "message"}}`,
/// where `code` is the SQLSTATE the Postgres protocol would give.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "22023", message)
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "28000", message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "XX000", message)
    }

    pub(crate) fn engine(e: &strata_engine::Error) -> Self {
        let code = crate::errors::sqlstate(e);
        Self::new(status_of(code), code, e.to_string())
    }

    pub(crate) fn outcome(&self) -> AuditOutcome {
        if self.code == "42501" {
            AuditOutcome::Denied
        } else {
            AuditOutcome::Error
        }
    }
}

/// The HTTP status of a SQLSTATE.
fn status_of(code: &str) -> StatusCode {
    match code {
        "42501" => StatusCode::FORBIDDEN,
        "42P01" => StatusCode::NOT_FOUND,
        "40001" => StatusCode::CONFLICT,
        "57014" => StatusCode::GATEWAY_TIMEOUT,
        "53200" => StatusCode::SERVICE_UNAVAILABLE,
        "58000" => StatusCode::BAD_GATEWAY,
        c if c.starts_with("XX") => StatusCode::INTERNAL_SERVER_ERROR,
        c if c.starts_with("28") => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"strata\""),
            );
        }
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "42P01",
        "no such endpoint; see /api/v1/openapi.json",
    )
}

// ---------------------------------------------------------------------------------------------
// Authentication and rate limits
// ---------------------------------------------------------------------------------------------

/// A caller once authenticated.
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    /// The rate-limit bucket: the token, or the user for passwords.
    key: String,
}

/// Successful password logins, so HTTP Basic does not pay for argon2 on every request.
/// An entry holds while the access version it was made at is current, at most a minute.
#[derive(Default)]
struct LoginCache {
    entries: Mutex<HashMap<[u8; 32], (i64, Instant, Principal)>>,
}

const LOGIN_CACHE_TTL: Duration = Duration::from_secs(60);

impl LoginCache {
    fn key(user: &str, secret: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update([0]);
        h.update(secret.as_bytes());
        h.finalize().into()
    }

    fn get(&self, key: &[u8; 32], version: i64) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(v, at, _)| *v == version && at.elapsed() < LOGIN_CACHE_TTL)
            .map(|(_, _, p)| p.clone())
    }

    fn put(&self, key: [u8; 32], version: i64, principal: Principal) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() > 10_000 {
            entries.retain(|_, (v, at, _)| *v == version && at.elapsed() < LOGIN_CACHE_TTL);
        }
        entries.insert(key, (version, Instant::now(), principal));
    }
}

/// Token buckets, one per credential.
struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::default(),
        }
    }

    /// `Err(seconds to wait)` when `key` is over its rate.
    fn check(&self, key: &str) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            buckets.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(600));
        }
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

/// The principal behind the request's `Authorization` header.
pub(crate) async fn authenticate(
    state: &RestState,
    headers: &HeaderMap,
    peer: SocketAddr,
    secure: bool,
) -> Result<Caller, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "send `Authorization: Bearer <API token>` (create one with `strata tokens create`)",
        ));
    };
    if !secure && !peer.ip().is_loopback() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "28000",
            "credentials from other hosts must travel over TLS; start the server with --tls-cert and --tls-key",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    let shared = &state.shared;
    let refused = |user: &str| {
        shared.audit.record(crate::audit::login_refused(
            user,
            SURFACE,
            &peer.ip().to_string(),
            None,
        ));
        ApiError::unauthorized("invalid credentials")
    };
    if let Some(token) = strip_scheme(value, "bearer") {
        let token = token.trim();
        return match shared.auth.login_token(token).await {
            Ok((principal, Credential::Token(id))) => Ok(Caller {
                principal,
                key: format!("token:{id}"),
            }),
            Ok((principal, Credential::Password)) => Ok(Caller {
                key: format!("user:{}", principal.name),
                principal,
            }),
            Err(crate::Error::AuthFailed(_)) => Err(refused("")),
            Err(e) => Err(ApiError::internal(e.to_string())),
        };
    }
    if let Some(basic) = strip_scheme(value, "basic") {
        let decoded = crate::auth::decode_base64(basic.trim())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
        let (user, secret) = decoded
            .split_once(':')
            .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
        let version = shared.policies.version();
        let cache_key = LoginCache::key(user, secret);
        if let Some(principal) = state.logins.get(&cache_key, version) {
            return Ok(Caller {
                key: format!("user:{user}"),
                principal,
            });
        }
        return match shared.auth.login(user, secret).await {
            Ok((principal, credential)) => {
                if credential == Credential::Password {
                    state.logins.put(cache_key, version, principal.clone());
                }
                let key = match credential {
                    Credential::Token(id) => format!("token:{id}"),
                    Credential::Password => format!("user:{user}"),
                };
                Ok(Caller { principal, key })
            }
            Err(crate::Error::AuthFailed(_)) => Err(refused(user)),
            Err(e) => Err(ApiError::internal(e.to_string())),
        };
    }
    Err(ApiError::unauthorized(
        "unsupported Authorization scheme; use Bearer <API token> or Basic",
    ))
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// Whether the connection is TLS; set per connection by the listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Secure(pub(crate) bool);

/// Authenticates, applies the rate limit and opens the caller's session.
async fn begin(
    state: &RestState,
    headers: &HeaderMap,
    peer: SocketAddr,
    secure: Secure,
) -> Result<(Caller, Session), ApiError> {
    let caller = admit(state, headers, peer, secure).await?;
    let session = open_session(&state.shared, &caller.principal).await?;
    Ok((caller, session))
}

/// Authenticates and applies the rate limit.
async fn admit(
    state: &RestState,
    headers: &HeaderMap,
    peer: SocketAddr,
    secure: Secure,
) -> Result<Caller, ApiError> {
    let caller = authenticate(state, headers, peer, secure.0).await?;
    if let Err(wait) = state.limiter.check(&caller.key) {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "53400",
            format!(
                "rate limit of {} requests per second exceeded",
                state.limits.rate_per_second
            ),
        );
        e.retry_after = Some(wait);
        return Err(e);
    }
    Ok(caller)
}

pub(crate) async fn open_session(
    shared: &crate::pg::Shared,
    principal: &Principal,
) -> Result<Session, ApiError> {
    let (_, policy) = shared
        .policies
        .current()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    shared
        .engine
        .session_for(principal.clone(), policy)
        .await
        .map_err(|e| ApiError::engine(&e))
}

fn record(
    state: &RestState,
    principal: &str,
    statement: &str,
    result: Result<u64, &ApiError>,
    started: Instant,
) {
    let mut entry = match result {
        Ok(_) => crate::audit::entry(
            principal,
            SURFACE,
            statement,
            AuditOutcome::Ok,
            None,
            started.elapsed(),
        ),
        Err(e) => crate::audit::entry(
            principal,
            SURFACE,
            statement,
            e.outcome(),
            Some(e.message.clone()),
            started.elapsed(),
        ),
    };
    if let Ok(rows) = result {
        entry.rows = Some(rows.min(i64::MAX as u64) as i64);
    }
    state.shared.audit.record(entry);
}

// ---------------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------------

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn ready(State(state): State<Arc<RestState>>) -> Response {
    let meta = state.shared.meta.access_version().await;
    let lake = state.shared.engine.lake().namespaces().await;
    let check = |r: Result<(), String>| match r {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(e) => serde_json::json!({"ok": false, "error": e}),
    };
    let ok = meta.is_ok() && lake.is_ok();
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "unavailable" },
        "checks": {
            "metadata": check(meta.map(|_| ()).map_err(|e| e.to_string())),
            "lake": check(lake.map(|_| ()).map_err(|e| e.to_string())),
        }
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    params: Vec<serde_json::Value>,
    #[serde(default)]
    max_rows: Option<u64>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// The `?format=` of a query string.
fn format_param(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.into_owned())
}

fn negotiate(headers: &HeaderMap, query: Option<&str>) -> Result<Format, ApiError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    Format::negotiate(format_param(query).as_deref(), accept)
        .map_err(|m| ApiError::new(StatusCode::NOT_ACCEPTABLE, "22023", m))
}

async fn sql(
    State(state): State<Arc<RestState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(secure): axum::Extension<Secure>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let (caller, session) = match begin(&state, &headers, peer, secure).await {
        Ok(ok) => ok,
        Err(e) => return e.into_response(),
    };
    let user = caller.principal.name.clone();
    let request = match read_sql_request(&headers, body) {
        Ok(r) => r,
        Err(e) => {
            record(&state, &user, "POST /api/v1/sql", Err(&e), started);
            return e.into_response();
        }
    };
    let format = match negotiate(&headers, query.as_deref()) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let max_rows = request
        .max_rows
        .unwrap_or(state.limits.max_rows)
        .min(state.limits.max_rows);
    let timeout = request
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(state.limits.timeout)
        .min(state.limits.timeout);
    let deadline = tokio::time::Instant::now() + timeout;
    let started_stream =
        tokio::time::timeout_at(deadline, run_sql(&state.shared.meta, &session, &request)).await;
    let result = match started_stream {
        Ok(r) => r,
        Err(_) => Err(timed_out(timeout)),
    };
    let (schema, stream) = match result {
        Ok(Ran::Rows { schema, stream }) => (schema, stream),
        Ok(Ran::Done { tag, rows }) => {
            record(&state, &user, &request.sql, Ok(rows.unwrap_or(0)), started);
            return axum::Json(serde_json::json!({ "command": tag, "rows_affected": rows }))
                .into_response();
        }
        Err(e) => {
            record(&state, &user, &request.sql, Err(&e), started);
            return e.into_response();
        }
    };
    stream_rows(
        Arc::clone(&state),
        user,
        request.sql,
        format,
        schema,
        stream,
        max_rows,
        deadline,
        started,
    )
    .await
}

fn read_sql_request(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<SqlRequest, ApiError> {
    let body = body.map_err(|e| {
        let status = e.status();
        ApiError::new(
            status,
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                "54000"
            } else {
                "08P01"
            },
            e.body_text(),
        )
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if content_type.starts_with("text/plain") || content_type.starts_with("application/sql") {
        let sql = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("the body is not UTF-8 text"))?;
        return Ok(SqlRequest {
            sql,
            params: Vec::new(),
            max_rows: None,
            timeout_ms: None,
        });
    }
    serde_json::from_slice::<SqlRequest>(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be JSON like {{\"sql\": \"select 1\", \"params\": []}}: {e}"
        ))
    })
}

/// A statement's result.
pub(crate) enum Ran {
    /// Rows, streamed.
    Rows {
        schema: SchemaRef,
        stream: strata_engine::datafusion::execution::SendableRecordBatchStream,
    },
    /// A command's outcome.
    Done { tag: String, rows: Option<u64> },
}

fn timed_out(t: Duration) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "57014",
        format!(
            "the statement ran longer than {} ms and was cancelled",
            t.as_millis()
        ),
    )
}

/// Runs every statement of the request; the last one's result is the answer.
async fn run_sql(
    meta: &strata_meta::MetaStore,
    session: &Session,
    request: &SqlRequest,
) -> Result<Ran, ApiError> {
    let values = request
        .params
        .iter()
        .map(json_scalar)
        .collect::<Result<Vec<_>, _>>()?;
    run_statements(meta, session, &request.sql, &values).await
}

/// Whether a statement is a query (its result is rows).
pub(crate) fn is_query(stmt: &DFStatement) -> bool {
    matches!(stmt, DFStatement::Statement(s) if matches!(s.as_ref(), strata_engine::datafusion::sql::sqlparser::ast::Statement::Query(_)))
}

/// Runs every statement of `sql` (with `params` bound to `$1`, `$2`… of a single
/// statement) in `session`; the last one's result is the answer. Every surface that takes
/// SQL text runs it here, so they all answer alike.
pub(crate) async fn run_statements(
    meta: &strata_meta::MetaStore,
    session: &Session,
    sql: &str,
    params: &[strata_engine::datafusion::common::ScalarValue],
) -> Result<Ran, ApiError> {
    // PostgreSQL's spellings the parser reads otherwise (`CREATE USER`, `GRANT role TO m`).
    let sql = crate::client_sql::rewrite(sql);
    let mut stmts = session.parse(&sql).map_err(|e| ApiError::engine(&e))?;
    if stmts.is_empty() {
        return Err(ApiError::bad_request("no statement to run"));
    }
    if !params.is_empty() {
        if stmts.len() > 1 {
            return Err(ApiError::bad_request(
                "parameters bind to one statement; send statements one at a time",
            ));
        }
        if let Some(DFStatement::Statement(s)) = stmts.first_mut() {
            crate::bind::bind_parameters(s, params)
                .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "08P01", m))?;
        }
    }
    let last = stmts.len() - 1;
    for (i, stmt) in stmts.into_iter().enumerate() {
        // Users, roles and grants in SQL, as on the Postgres protocol.
        if let (DFStatement::Statement(s), Some(access)) = (&stmt, session.access())
            && let Some(parsed) = crate::access_sql::classify(s, &access.principal().name)
        {
            let parsed = parsed.map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "0A000", m))?;
            let tag = crate::access_sql::apply(meta, access.principal(), parsed)
                .await
                .map_err(|e| match e {
                    crate::Error::Engine(e) => ApiError::engine(&e),
                    other => ApiError::bad_request(other.to_string()),
                })?;
            if i == last {
                return Ok(Ran::Done { tag, rows: None });
            }
            continue;
        }
        let result = session
            .execute(stmt)
            .await
            .map_err(|e| ApiError::engine(&e))?;
        match result {
            StatementResult::Rows { schema, stream } if i == last => {
                return Ok(Ran::Rows { schema, stream });
            }
            StatementResult::Done { tag, rows } if i == last => {
                return Ok(Ran::Done { tag, rows });
            }
            StatementResult::Rows { mut stream, .. } => {
                // An earlier statement's rows are read (it may have effects) and dropped.
                while let Some(b) = stream.next().await {
                    b.map_err(|e| ApiError::engine(&e.into()))?;
                }
            }
            StatementResult::Done { .. } => {}
        }
    }
    Err(ApiError::internal("no statement ran"))
}

fn json_scalar(
    v: &serde_json::Value,
) -> Result<strata_engine::datafusion::common::ScalarValue, ApiError> {
    use strata_engine::datafusion::common::ScalarValue;
    Ok(match v {
        serde_json::Value::Null => ScalarValue::Null,
        serde_json::Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int64(Some(i))
            } else if let Some(f) = n.as_f64() {
                ScalarValue::Float64(Some(f))
            } else {
                return Err(ApiError::bad_request(format!(
                    "parameter {n} is out of range"
                )));
            }
        }
        serde_json::Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        other => {
            return Err(ApiError::bad_request(format!(
                "parameters are null, booleans, numbers or strings; got {other}"
            )));
        }
    })
}

/// Sends rows as they come: the first batch is awaited so that an error before any row
/// is a proper error response; later errors (or the deadline) cut the body short, which
/// clients see as a broken transfer rather than a complete answer.
#[allow(clippy::too_many_arguments)]
async fn stream_rows(
    state: Arc<RestState>,
    user: String,
    statement: String,
    format: Format,
    schema: SchemaRef,
    mut stream: strata_engine::datafusion::execution::SendableRecordBatchStream,
    max_rows: u64,
    deadline: tokio::time::Instant,
    started: Instant,
) -> Response {
    let first = match tokio::time::timeout_at(deadline, stream.next()).await {
        Err(_) => {
            let e = timed_out(deadline.duration_since(tokio::time::Instant::from_std(started)));
            record(&state, &user, &statement, Err(&e), started);
            return e.into_response();
        }
        Ok(Some(Err(e))) => {
            let e = ApiError::engine(&e.into());
            record(&state, &user, &statement, Err(&e), started);
            return e.into_response();
        }
        Ok(Some(Ok(b))) => Some(b),
        Ok(None) => None,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut enc = Encoder::new(format, schema);
        let mut trailer = Trailer::default();
        let outcome: Result<(), String> = async {
            let head = enc.begin()?;
            send(&tx, head).await?;
            let mut next = first;
            loop {
                let Some(batch) = next.take() else { break };
                let left = max_rows - trailer.rows;
                let batch = if (batch.num_rows() as u64) > left {
                    trailer.truncated = true;
                    batch.slice(0, left as usize)
                } else {
                    batch
                };
                trailer.rows += batch.num_rows() as u64;
                send(&tx, enc.batch(&batch)?).await?;
                if trailer.truncated || trailer.rows >= max_rows {
                    // Whether anything was left out is only known by looking.
                    if !trailer.truncated {
                        trailer.truncated = peek_more(&mut stream, deadline).await;
                    }
                    break;
                }
                next = match tokio::time::timeout_at(deadline, stream.next()).await {
                    Err(_) => return Err("the statement ran past its timeout".into()),
                    Ok(Some(Err(e))) => return Err(e.to_string()),
                    Ok(Some(Ok(b))) => Some(b),
                    Ok(None) => None,
                };
            }
            send(&tx, enc.end(&trailer)?).await
        }
        .await;
        match outcome {
            Ok(()) => record(&state, &user, &statement, Ok(trailer.rows), started),
            Err(message) => {
                let _ = tx.send(Err(std::io::Error::other(message.clone()))).await;
                let e = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "XX000", message);
                record(&state, &user, &statement, Err(&e), started);
            }
        }
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.content_type())
        .body(body)
        .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_response())
}

async fn peek_more(
    stream: &mut strata_engine::datafusion::execution::SendableRecordBatchStream,
    deadline: tokio::time::Instant,
) -> bool {
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(b))) if b.num_rows() == 0 => continue,
            Ok(Some(Ok(_))) => return true,
            _ => return false,
        }
    }
}

async fn send(
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    bytes: Bytes,
) -> Result<(), String> {
    if bytes.is_empty() {
        return Ok(());
    }
    tx.send(Ok(bytes))
        .await
        .map_err(|_| "the client went away".to_string())
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

/// The SQL type name of an Arrow type, as clients of the other surfaces see it.
pub(crate) fn type_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
            format!("numeric({p},{s})")
        }
        DataType::Decimal256(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Interval(_) | DataType::Duration(TimeUnit::Microsecond) => "interval".into(),
        DataType::List(f) | DataType::LargeList(f) => format!("{}[]", type_name(f.data_type())),
        DataType::Dictionary(_, v) => type_name(v),
        other => other.to_string().to_lowercase(),
    }
}

/// The tables (and views) `session` may read: namespace, name, `TABLE` or `VIEW`, columns.
pub(crate) async fn visible_tables(
    session: &Session,
) -> Vec<(String, String, &'static str, SchemaRef)> {
    let ctx = session.context();
    let mut out = Vec::new();
    let Some(catalog) = ctx.catalog(strata_engine::CATALOG) else {
        return out;
    };
    let mut namespaces = catalog.schema_names();
    namespaces.sort();
    for ns in namespaces {
        let Some(schema) = catalog.schema(&ns) else {
            continue;
        };
        let mut names = schema.table_names();
        names.sort();
        for t in names {
            if let Ok(Some(provider)) = schema.table(&t).await {
                let kind = match provider.table_type() {
                    strata_engine::datafusion::datasource::TableType::View => "VIEW",
                    _ => "TABLE",
                };
                out.push((ns.clone(), t, kind, provider.schema()));
            }
        }
    }
    out
}

fn columns_json(schema: &SchemaRef) -> Vec<serde_json::Value> {
    schema
        .fields()
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name(),
                "type": type_name(f.data_type()),
                "nullable": f.is_nullable(),
            })
        })
        .collect()
}

async fn tables(
    State(state): State<Arc<RestState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(secure): axum::Extension<Secure>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, session) = begin(&state, &headers, peer, secure).await?;
    let list: Vec<serde_json::Value> = visible_tables(&session)
        .await
        .into_iter()
        .map(|(ns, t, kind, schema)| {
            serde_json::json!({
                "namespace": ns,
                "name": t,
                "kind": kind,
                "path": format!("/api/v1/tables/{ns}/{t}"),
                "columns": columns_json(&schema),
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "tables": list })).into_response())
}

/// Resolves a table the session may read; otherwise 404 with the same words whether it
/// does not exist or is not granted.
async fn resolve(session: &Session, ns: &str, t: &str) -> Result<SchemaRef, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "42P01",
            format!("table `{ns}.{t}` does not exist or is not granted"),
        )
    };
    if strata_lake::TableName::new(ns, t).is_err() {
        return Err(missing());
    }
    let provider = session
        .context()
        .table_provider(TableReference::full(strata_engine::CATALOG, ns, t))
        .await
        .map_err(|_| missing())?;
    Ok(provider.schema())
}

async fn table_schema(
    State(state): State<Arc<RestState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(secure): axum::Extension<Secure>,
    Path((ns, t)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, session) = begin(&state, &headers, peer, secure).await?;
    let schema = resolve(&session, &ns, &t).await?;
    let version = match strata_lake::TableName::new(&ns, &t) {
        Ok(name) => session.lake().latest_version(&name).await.ok().flatten(),
        Err(_) => None,
    };
    Ok(axum::Json(serde_json::json!({
        "namespace": ns,
        "name": t,
        "version": version,
        "columns": columns_json(&schema),
    }))
    .into_response())
}

/// A page position: the table version the first page read, and the rows already sent.
/// `q` is a digest of the request's filters and order, so a cursor cannot be replayed
/// against a different question.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    v: Option<u64>,
    o: u64,
    q: String,
}

impl Cursor {
    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(s: &str) -> Result<Self, ApiError> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ApiError::bad_request("`cursor` is not a cursor this API gave out"))
    }
}

/// A digest of the parts of a request that decide which rows and in what order.
fn question_digest(pairs: &[(String, String)]) -> String {
    let mut kept: Vec<&(String, String)> = pairs
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "cursor" | "offset" | "format"))
        .collect();
    kept.sort();
    let mut h = Sha256::new();
    for (k, v) in kept {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([1]);
    }
    hex::encode(&h.finalize()[..8])
}

async fn table_rows(
    State(state): State<Arc<RestState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(secure): axum::Extension<Secure>,
    Path((ns, t)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let caller = match admit(&state, &headers, peer, secure).await {
        Ok(ok) => ok,
        Err(e) => return e.into_response(),
    };
    let request = format!(
        "GET /api/v1/tables/{ns}/{t}{}{}",
        if raw.is_some() { "?" } else { "" },
        raw.as_deref().unwrap_or_default()
    );
    let user = caller.principal.name.clone();
    let answered = async {
        let req = table_request(&headers, raw.as_deref())?;
        if let Some(answer) = lookup_page(&state, &caller, &ns, &t, &req).await {
            return Ok(answer);
        }
        let session = open_session(&state.shared, &caller.principal).await?;
        page(&state, &session, &ns, &t, &req).await
    }
    .await;
    match answered {
        Ok((resp, rows, statement)) => {
            // The table is the request's own: no statement to parse (a lookup's carries
            // its key, so each would be new to the audit's statement cache).
            let mut entry = crate::audit::entry_on(
                &user,
                SURFACE,
                &statement,
                vec![format!("{ns}.{t}").to_lowercase()],
                AuditOutcome::Ok,
                None,
                started.elapsed(),
            );
            entry.rows = Some(rows as i64);
            state.shared.audit.record(entry);
            resp
        }
        Err(e) => {
            record(&state, &user, &request, Err(&e), started);
            e.into_response()
        }
    }
}

/// A table request read once: the response format, the query's pairs (`format` aside) and
/// the question they ask.
struct TableRequest {
    format: Format,
    pairs: Vec<(String, String)>,
    q: filter::Query,
}

fn table_request(headers: &HeaderMap, raw: Option<&str>) -> Result<TableRequest, ApiError> {
    let format = negotiate(headers, raw)?;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .filter(|(k, _)| k != "format")
        .collect();
    let q = filter::Query::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| ApiError::bad_request(e.0))?;
    Ok(TableRequest { format, pairs, q })
}

/// One page of a table: `(response, rows, the statement run)`.
async fn page(
    state: &RestState,
    session: &Session,
    ns: &str,
    t: &str,
    req: &TableRequest,
) -> Result<(Response, u64, String), ApiError> {
    let TableRequest { format, pairs, q } = req;
    let format = *format;
    let schema = resolve(session, ns, t).await?;
    let digest = question_digest(pairs);
    let (version, offset) = match &q.cursor {
        Some(c) => {
            let c = Cursor::decode(c)?;
            if c.q != digest {
                return Err(ApiError::bad_request(
                    "this cursor belongs to a request with other filters or order; repeat the same query string with it",
                ));
            }
            (c.v, c.o)
        }
        None => {
            // Views have no version; a table's pages all read the version the first saw.
            let version = match strata_lake::TableName::new(ns, t) {
                Ok(name) => session.lake().latest_version(&name).await.ok().flatten(),
                Err(_) => None,
            };
            (version, q.offset.unwrap_or(0))
        }
    };
    let size = q.page_size();
    let stmt = q
        .to_statement([ns, t], &schema, version, offset, size + 1)
        .map_err(|e| ApiError::bad_request(e.0))?;
    let statement = stmt.to_string();
    let deadline = tokio::time::Instant::now() + state.limits.timeout;
    let batches = tokio::time::timeout_at(deadline, async {
        match session
            .execute(DFStatement::Statement(Box::new(stmt)))
            .await
            .map_err(|e| ApiError::engine(&e))?
        {
            StatementResult::Rows { stream, .. } => {
                strata_engine::datafusion::physical_plan::common::collect(stream)
                    .await
                    .map_err(|e| ApiError::engine(&e.into()))
            }
            StatementResult::Done { .. } => Err(ApiError::internal("a query returned no rows")),
        }
    })
    .await
    .map_err(|_| timed_out(state.limits.timeout))??;
    let total: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let out_schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::clone(&schema));
    let (rows, next) = if total > size {
        (
            take_rows(&batches, size as usize),
            Some(
                Cursor {
                    v: version,
                    o: offset + size,
                    q: digest,
                }
                .encode(),
            ),
        )
    } else {
        (batches, None)
    };
    let sent = total.min(size);
    let mut enc = Encoder::new(format, out_schema);
    let mut body = Vec::new();
    let mut push = |b: Result<Bytes, String>| -> Result<(), ApiError> {
        body.extend_from_slice(&b.map_err(ApiError::internal)?);
        Ok(())
    };
    push(enc.begin())?;
    for b in &rows {
        push(enc.batch(b))?;
    }
    push(enc.end(&Trailer {
        rows: sent,
        truncated: false,
        next_cursor: next.clone(),
    }))?;
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.content_type());
    if let Some(c) = &next {
        resp = resp.header("x-next-cursor", c.as_str());
    }
    if let Some(v) = version {
        resp = resp.header("x-table-version", v);
    }
    let resp = resp
        .body(Body::from(body))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((resp, sent, statement))
}

// ---------------------------------------------------------------------------------------------
// Key lookups
// ---------------------------------------------------------------------------------------------

/// Table requests answered as key lookups ([`strata_engine::KeyLookup`]). A request whose
/// filters include `column=eq.value` is planned once per principal, table and question
/// (the value aside); each request of that question then reads only the pages whose
/// statistics admit its value, with no session, planning or version lookup of its own.
/// Rows come back as the paged statement would return them when at most one row
/// matches; a question whose keys match more rows is answered by the paged statement.
#[derive(Default)]
struct TableLookups {
    entries: Mutex<HashMap<LookupShape, LookupEntry>>,
}

/// Entries kept; beyond this the cache starts over.
const MAX_TABLE_LOOKUPS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LookupShape {
    user: String,
    table: [String; 2],
    /// The parsed request without the key's value and the page size.
    question: String,
}

/// The access version an entry was planned under, and its lookup (`None`: not one).
type LookupEntry = (i64, Option<Arc<TableLookup>>);

struct TableLookup {
    lookup: strata_engine::KeyLookup,
    /// The type of the key's parameter, as planned.
    key_type: DataType,
    /// The table's columns when planned, to write the audited statement.
    schema: SchemaRef,
    /// The lookup's result columns, as the response encodes them.
    out: SchemaRef,
    /// Set once a key of the question matched more than one row: its later requests go
    /// straight to the paged statement, which orders them.
    many: AtomicBool,
}

impl TableLookups {
    fn get(&self, shape: &LookupShape, version: i64) -> Option<Option<Arc<TableLookup>>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(shape)
            .filter(|(v, _)| *v == version)
            .map(|(_, l)| l.clone())
    }

    fn put(&self, shape: LookupShape, version: i64, lookup: Option<Arc<TableLookup>>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_TABLE_LOOKUPS {
            entries.clear();
        }
        entries.insert(shape, (version, lookup));
    }

    fn forget(&self, shape: &LookupShape) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(shape);
    }
}

/// The page of a table request answered as a key lookup, as [`page`] returns it; `None`
/// when the request is not one (or the lookup cannot read the table now), for [`page`] to
/// answer, errors included.
async fn lookup_page(
    state: &RestState,
    caller: &Caller,
    ns: &str,
    t: &str,
    req: &TableRequest,
) -> Option<(Response, u64, String)> {
    let TableRequest { format, q, .. } = req;
    let format = *format;
    if q.cursor.is_some() || q.offset.unwrap_or(0) > 0 || q.page_size() == 0 {
        return None;
    }
    let (key, _, value) = q.key()?;
    let mut question = q.clone();
    if let Some(filter::Filter::Cond { values, .. }) = question.filters.get_mut(key) {
        values.clear();
    }
    question.limit = None;
    let shape = LookupShape {
        user: caller.principal.name.clone(),
        table: [ns.to_string(), t.to_string()],
        question: format!("{question:?}"),
    };
    let (version, _) = state.shared.policies.current().await.ok()?;
    let lookup = match state.lookups.get(&shape, version) {
        Some(kept) => kept?,
        None => {
            let made = plan_lookup(state, caller, [ns, t], q, key).await?;
            state.lookups.put(shape.clone(), version, made.clone());
            made?
        }
    };
    if lookup.many.load(Ordering::Relaxed) {
        return None;
    }
    let value = ScalarValue::try_from_string(value.to_string(), &lookup.key_type).ok()?;
    let params = ParamValues::List(vec![value.into()]);
    let run = tokio::time::timeout(
        state.limits.timeout,
        lookup.lookup.run_versioned(Some(&params)),
    );
    let (table_version, batches) = match run.await {
        Ok(Ok(Some(read))) => read,
        // The table changed shape or layout since: plan the question again next time.
        _ => {
            state.lookups.forget(&shape);
            return None;
        }
    };
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows > 1 {
        lookup.many.store(true, Ordering::Relaxed);
        return None;
    }
    let mut enc = Encoder::new(format, Arc::clone(&lookup.out));
    let mut body = Vec::new();
    body.extend_from_slice(&enc.begin().ok()?);
    for b in &batches {
        body.extend_from_slice(&enc.batch(b).ok()?);
    }
    let trailer = Trailer {
        rows: rows as u64,
        truncated: false,
        next_cursor: None,
    };
    body.extend_from_slice(&enc.end(&trailer).ok()?);
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.content_type());
    if let Some(v) = table_version {
        resp = resp.header("x-table-version", v);
    }
    let resp = resp.body(Body::from(body)).ok()?;
    let statement = q
        .to_lookup_statement([ns, t], &lookup.schema, None)
        .map(|s| s.to_string())
        .ok()?;
    Some((resp, rows as u64, statement))
}

/// Plans the key lookup of question `q` (its key being condition `key`) in a session of
/// the caller: `Some(None)` when the question is not one, `None` when it did not plan
/// (the paged statement says why).
async fn plan_lookup(
    state: &RestState,
    caller: &Caller,
    table: [&str; 2],
    q: &filter::Query,
    key: usize,
) -> Option<Option<Arc<TableLookup>>> {
    let session = open_session(&state.shared, &caller.principal).await.ok()?;
    let schema = resolve(&session, table[0], table[1]).await.ok()?;
    let stmt = q.to_lookup_statement(table, &schema, Some(key)).ok()?;
    let plan = session
        .context()
        .state()
        .statement_to_plan(DFStatement::Statement(Box::new(stmt)))
        .await
        .ok()?;
    // Kept to run later: each run reads the table's latest version.
    let plan = state.shared.engine.scan_latest_when_run(plan).ok()?;
    let Some(Some(key_type)) = plan.get_parameter_types().ok()?.remove("$1") else {
        return Some(None);
    };
    Some(session.key_lookup(&plan).map(|lookup| {
        let out = Arc::new(lookup.schema().as_arrow().clone());
        Arc::new(TableLookup {
            lookup,
            key_type,
            schema,
            out,
            many: AtomicBool::new(false),
        })
    }))
}

/// The first `n` rows of `batches`.
fn take_rows(batches: &[RecordBatch], n: usize) -> Vec<RecordBatch> {
    let mut left = n;
    let mut out = Vec::new();
    for b in batches {
        if left == 0 {
            break;
        }
        let take = b.num_rows().min(left);
        out.push(b.slice(0, take));
        left -= take;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown` resolves.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper::server::conn::http1::Builder;
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt;

    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accepting an HTTP connection: {e}");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        // Responses go out whole; without this a small response waits on the client's
        // delayed acknowledgement of the one before (Nagle), ~40 ms per request.
        let _ = socket.set_nodelay(true);
        let tls = tls.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let secure = tls.is_some();
            let service = router.map_request(move |mut req: axum::http::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(Secure(secure));
                req
            });
            let service = hyper_util::service::TowerToHyperService::new(service);
            let mut builder = Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new());
            // A client that never finishes its headers is dropped.
            builder.header_read_timeout(Duration::from_secs(30));
            let result = match tls {
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(socket),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => return,
                    };
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                None => {
                    builder
                        .serve_connection(TokioIo::new(socket), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!("HTTP connection from {peer} ended: {e}");
            }
        });
    }
}
