//! Arrow Flight SQL: ADBC and JDBC Flight SQL drivers fetch results as Arrow, without a
//! row-by-row protocol in between.
//!
//! Callers authenticate on every call with `authorization` metadata: `Bearer <API token>`,
//! `Bearer <session token>` (what the handshake returns after `Basic user:password`), or
//! `Basic` itself. Each call then runs in an engine session of the principal, through the
//! same statement path as the REST API (grants, row policies and masks in the plan; writes
//! checked and committed by the engine).
//!
//! Tickets and prepared-statement handles carry the statement, never a privilege. The rows
//! a `GetFlightInfo` started wait (a minute at most) for the `DoGet` of the same principal,
//! so a query is planned, checked and logged once; any other redemption of the ticket runs
//! the statement again as whoever redeems it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use strata_engine::datafusion::arrow::array::{
    Int64Array, RecordBatch, RecordBatchOptions, StringArray,
};
use strata_engine::datafusion::arrow::compute::cast;
use strata_engine::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use strata_engine::datafusion::arrow::ipc::writer::IpcWriteOptions;
use strata_engine::datafusion::common::ScalarValue;
use strata_engine::datafusion::execution::SendableRecordBatchStream;
use strata_engine::{Principal, Session};
use strata_meta::AuditOutcome;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Credential;
use crate::rest::{ApiError, Ran};

/// The surface name in the audit log.
const SURFACE: &str = "flight";
/// How long a handshake's session token lives.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most prepared statements kept at once (the oldest go first).
const MAX_PREPARED: usize = 10_000;
/// How long the rows of a `GetFlightInfo` wait for the `DoGet` of their ticket.
const PARKED_TTL: Duration = Duration::from_secs(60);
/// Most results waiting at once (the oldest go first).
const MAX_PARKED: usize = 64;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A session token from the handshake.
struct Login {
    user: String,
    credential: Credential,
    expires: Instant,
}

/// A prepared statement: its owner, its SQL and the parameters last bound.
struct Prepared {
    user: String,
    sql: String,
    params: Vec<ScalarValue>,
    created: Instant,
}

/// The rows of a statement run for `GetFlightInfo`, waiting for the `DoGet` of its ticket:
/// the statement is planned, checked and logged once, and its first batches are under way
/// when the client asks for them.
struct Parked {
    user: String,
    stream: SendableRecordBatchStream,
    expires: Instant,
}

/// The Flight SQL service.
pub(crate) struct StrataFlight {
    shared: Arc<crate::pg::Shared>,
    logins: Mutex<HashMap<String, Login>>,
    prepared: Mutex<HashMap<Vec<u8>, Prepared>>,
    parked: Mutex<HashMap<u64, Parked>>,
    next_run: AtomicU64,
    peer_check: bool,
}

impl StrataFlight {
    pub(crate) fn new(shared: Arc<crate::pg::Shared>, tls: bool) -> Self {
        Self {
            shared,
            logins: Mutex::default(),
            prepared: Mutex::default(),
            parked: Mutex::default(),
            next_run: AtomicU64::new(getrandom::u64().unwrap_or_default()),
            peer_check: !tls,
        }
    }

    /// Keeps `stream` for the `DoGet` of `principal`; returns the id its ticket carries.
    fn park(&self, principal: &Principal, stream: SendableRecordBatchStream) -> u64 {
        let id = self.next_run.fetch_add(1, Ordering::Relaxed);
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        parked.retain(|_, p| p.expires > now);
        if parked.len() >= MAX_PARKED
            && let Some(oldest) = parked
                .iter()
                .min_by_key(|(_, p)| p.expires)
                .map(|(k, _)| *k)
        {
            parked.remove(&oldest);
        }
        parked.insert(
            id,
            Parked {
                user: principal.name.clone(),
                stream,
                expires: now + PARKED_TTL,
            },
        );
        id
    }

    /// The rows parked as `id` for `principal`, once; `None` when they are gone (fetched,
    /// expired) or were another principal's: the ticket's statement then runs again.
    fn unpark(&self, id: u64, principal: &Principal) -> Option<SendableRecordBatchStream> {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        match parked.get(&id) {
            Some(p) if p.user == principal.name && p.expires > Instant::now() => {
                parked.remove(&id).map(|p| p.stream)
            }
            _ => None,
        }
    }

    /// The principal behind a call's `authorization` metadata.
    async fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        if self.peer_check
            && let Some(peer) = request.remote_addr()
            && !peer.ip().is_loopback()
        {
            return Err(Status::unauthenticated(
                "credentials from other hosts must travel over TLS; start the server with --tls-cert and --tls-key",
            ));
        }
        let value = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated(
                    "send `authorization: Bearer <API token>` (or log in with the handshake, Basic user:password)",
                )
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
        let auth = &self.shared.auth;
        if let Some(token) = strip(value, "bearer") {
            let token = token.trim();
            let login = {
                let logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
                logins
                    .get(token)
                    .filter(|l| l.expires > Instant::now())
                    .map(|l| (l.user.clone(), l.credential.clone()))
            };
            if let Some((user, credential)) = login {
                let valid = auth
                    .still_valid(&user, &credential)
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?;
                let principal = if valid {
                    auth.principal(&user)
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?
                } else {
                    None
                };
                return principal.ok_or_else(|| {
                    self.logins
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(token);
                    Status::unauthenticated("the session's credential was revoked; log in again")
                });
            }
            return match auth.login_token(token).await {
                Ok((p, _)) => Ok(p),
                Err(crate::Error::AuthFailed(_)) => Err(self.refused("", request.remote_addr())),
                Err(e) => Err(Status::internal(e.to_string())),
            };
        }
        if let Some(basic) = strip(value, "basic") {
            let (user, secret) = decode_basic(basic)?;
            return match auth.login(&user, &secret).await {
                Ok((p, _)) => Ok(p),
                Err(crate::Error::AuthFailed(_)) => Err(self.refused(&user, request.remote_addr())),
                Err(e) => Err(Status::internal(e.to_string())),
            };
        }
        Err(Status::unauthenticated(
            "unsupported authorization scheme; use Bearer or Basic",
        ))
    }

    fn refused(&self, user: &str, peer: Option<SocketAddr>) -> Status {
        self.shared.audit.record(crate::audit::login_refused(
            user,
            SURFACE,
            &peer.map(|p| p.ip().to_string()).unwrap_or_default(),
            None,
        ));
        Status::unauthenticated("invalid credentials")
    }

    async fn session<T>(&self, request: &Request<T>) -> Result<(Principal, Session), Status> {
        let principal = self.principal(request).await?;
        let session = self.session_of(&principal).await?;
        Ok((principal, session))
    }

    /// An engine session of `principal`.
    async fn session_of(&self, principal: &Principal) -> Result<Session, Status> {
        crate::rest::open_session(&self.shared, principal)
            .await
            .map_err(|e| status(&e))
    }

    /// Runs `sql` with `params` as `principal`, logging it.
    async fn run(
        &self,
        principal: &Principal,
        session: &Session,
        sql: &str,
        params: &[ScalarValue],
    ) -> Result<Ran, Status> {
        let started = Instant::now();
        let result = crate::rest::run_statements(&self.shared.meta, session, sql, params).await;
        let (outcome, error, rows) = match &result {
            Ok(Ran::Done { rows, .. }) => (AuditOutcome::Ok, None, *rows),
            Ok(Ran::Rows { .. }) => (AuditOutcome::Ok, None, None),
            Err(e) => (e.outcome(), Some(e.message.clone()), None),
        };
        let mut entry = crate::audit::entry(
            &principal.name,
            SURFACE,
            sql,
            outcome,
            error,
            started.elapsed(),
        );
        entry.rows = rows.map(|r| r.min(i64::MAX as u64) as i64);
        self.shared.audit.record(entry);
        result.map_err(|e| status(&e))
    }

    fn prepared_sql(
        &self,
        handle: &[u8],
        principal: &Principal,
    ) -> Result<(String, Vec<ScalarValue>), Status> {
        let prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        prepared
            .get(handle)
            .filter(|p| p.user == principal.name)
            .map(|p| (p.sql.clone(), p.params.clone()))
            .ok_or_else(|| {
                Status::not_found("no such prepared statement (closed, or another user's)")
            })
    }
}

fn strip<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn decode_basic(b: &str) -> Result<(String, String), Status> {
    let text = crate::auth::decode_base64(b.trim())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Status::unauthenticated("malformed Basic credentials"))?;
    let (u, p) = text
        .split_once(':')
        .ok_or_else(|| Status::unauthenticated("malformed Basic credentials"))?;
    Ok((u.to_string(), p.to_string()))
}

/// A REST-style error as a gRPC status; the message starts with the SQLSTATE.
fn status(e: &ApiError) -> Status {
    let message = format!("[{}] {}", e.code, e.message);
    match e.code {
        "42501" => Status::permission_denied(message),
        "42P01" => Status::not_found(message),
        "57014" => Status::deadline_exceeded(message),
        "40001" => Status::aborted(message),
        "53200" | "53400" => Status::resource_exhausted(message),
        c if c.starts_with("28") => Status::unauthenticated(message),
        c if c.starts_with("XX") => Status::internal(message),
        "0A000" => Status::unimplemented(message),
        _ => Status::invalid_argument(message),
    }
}

fn flight_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(s) => *s,
        other => Status::internal(other.to_string()),
    }
}

fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let wire = wire_schema(schema);
    let IpcMessage(bytes) = SchemaAsIpc::new(&wire, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: strata_engine::datafusion::arrow::error::ArrowError| {
            Status::internal(e.to_string())
        })?;
    Ok(bytes)
}

/// What a statement that returns no rows answers through `DoGet`.
fn done_batch(tag: &str, rows: Option<u64>) -> Result<RecordBatch, Status> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("command", DataType::Utf8, false),
        Field::new("rows_affected", DataType::Int64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![tag.to_string()])),
            Arc::new(Int64Array::from(vec![rows.map(|r| r as i64)])),
        ],
    )
    .map_err(|e| Status::internal(e.to_string()))
}

/// The handle inside a statement ticket.
#[derive(serde::Serialize, serde::Deserialize)]
struct StatementHandle {
    sql: String,
    /// Set when the statement already ran (it changed something) and only its outcome is
    /// left to fetch.
    #[serde(default)]
    done: Option<(String, Option<u64>)>,
    /// The rows already under way for the principal who asked ([`StrataFlight::park`]).
    #[serde(default)]
    run: Option<u64>,
}

fn info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(&wire_schema(schema))
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// The flight of a statement that already ran (it changed something): its ticket fetches
/// the outcome only, so fetching does not run it again.
fn done_info(
    sql: String,
    tag: String,
    rows: Option<u64>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let batch = done_batch(&tag, rows)?;
    let handle = serde_json::to_vec(&StatementHandle {
        sql,
        done: Some((tag, rows)),
        run: None,
    })
    .map_err(|e| Status::internal(e.to_string()))?;
    let ticket = TicketStatementQuery {
        statement_handle: handle.into(),
    };
    info(&batch.schema(), ticket.as_any().encode_to_vec(), descriptor)
}

/// `schema` as Flight sends it: view strings and binaries (`Utf8View`, `BinaryView`) as
/// their offset layouts. A view is 16 bytes per value before any character, so short strings
/// travel at a fraction of the size, and every Arrow client reads the offset layouts, older
/// ones too.
fn wire_schema(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            DataType::BinaryView => f.as_ref().clone().with_data_type(DataType::Binary),
            _ => f.as_ref().clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// `batch` in the types of `wire` ([`wire_schema`] of its own).
fn to_wire(batch: RecordBatch, wire: &SchemaRef) -> Result<RecordBatch, FlightError> {
    let columns = batch
        .columns()
        .iter()
        .zip(wire.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(wire),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

fn stream_batches(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> Response<BoxStream<arrow_flight::FlightData>> {
    let wire = Arc::new(wire_schema(&schema));
    let batches = if wire == schema {
        batches.boxed()
    } else {
        let to = Arc::clone(&wire);
        batches
            .map(move |b| b.and_then(|b| to_wire(b, &to)))
            .boxed()
    };
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(wire)
        .build(batches)
        .map_err(flight_status);
    Response::new(Box::pin(stream))
}

/// The response of a metadata request: one batch built in full.
fn one_batch(
    schema: SchemaRef,
    batch: Result<RecordBatch, impl std::fmt::Display>,
) -> Response<BoxStream<arrow_flight::FlightData>> {
    let batch = batch.map_err(|e| FlightError::Tonic(Box::new(Status::internal(e.to_string()))));
    stream_batches(schema, futures::stream::iter([batch]))
}

fn sql_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "Strata");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
        b.append(SqlInfo::FlightSqlServerReadOnly, false);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.build().expect("static SQL info builds")
    })
}

#[tonic::async_trait]
impl FlightSqlService for StrataFlight {
    type FlightService = StrataFlight;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        let value = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("the handshake needs Basic credentials"))?
            .to_string();
        let peer = request.remote_addr();
        if self.peer_check && peer.is_some_and(|p| !p.ip().is_loopback()) {
            return Err(Status::unauthenticated(
                "credentials from other hosts must travel over TLS",
            ));
        }
        let (user, secret) = match strip(&value, "basic") {
            Some(b) => decode_basic(b)?,
            None => {
                return Err(Status::unauthenticated(
                    "the handshake takes Basic credentials; send API tokens as `Bearer` on each call instead",
                ));
            }
        };
        let (principal, credential) = match self.shared.auth.login(&user, &secret).await {
            Ok(ok) => ok,
            Err(crate::Error::AuthFailed(_)) => return Err(self.refused(&user, peer)),
            Err(e) => return Err(Status::internal(e.to_string())),
        };
        let (token, _) = crate::auth::new_token().map_err(|e| Status::internal(e.to_string()))?;
        let token = token.replacen(crate::auth::TOKEN_PREFIX, "strata_session_", 1);
        {
            let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            logins.retain(|_, l| l.expires > now);
            logins.insert(
                token.clone(),
                Login {
                    user: principal.name.clone(),
                    credential,
                    expires: now + SESSION_TTL,
                },
            );
        }
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<BoxStream<HandshakeResponse>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("a token that is not ASCII"))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (principal, session) = self.session(&request).await?;
        let sql = self.run_prefix(&principal, &session, &query.query).await?;
        match self.run(&principal, &session, &sql, &[]).await? {
            Ran::Rows { schema, stream } => {
                let run = Some(self.park(&principal, stream));
                let handle = serde_json::to_vec(&StatementHandle {
                    sql,
                    done: None,
                    run,
                })
                .map_err(|e| Status::internal(e.to_string()))?;
                let ticket = TicketStatementQuery {
                    statement_handle: handle.into(),
                };
                info(
                    &schema,
                    ticket.as_any().encode_to_vec(),
                    request.into_inner(),
                )
            }
            Ran::Done { tag, rows } => done_info(sql, tag, rows, request.into_inner()),
        }
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let handle: StatementHandle = serde_json::from_slice(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("not a ticket this server gave out"))?;
        // The caller is checked once, whichever way the ticket is answered.
        let principal = self.principal(&request).await?;
        if let Some((tag, rows)) = handle.done {
            // Only the outcome: no statement runs.
            let batch = done_batch(&tag, rows)?;
            return Ok(stream_batches(
                batch.schema(),
                futures::stream::iter([Ok(batch)]),
            ));
        }
        if let Some(stream) = handle.run.and_then(|run| self.unpark(run, &principal)) {
            return Ok(stream_batches(
                stream.schema(),
                stream.map_err(|e| FlightError::ExternalError(Box::new(e))),
            ));
        }
        let session = self.session_of(&principal).await?;
        self.rows(&principal, &session, &handle.sql, &[]).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (principal, session) = self.session(&request).await?;
        let (sql, params) = self.prepared_sql(&cmd.prepared_statement_handle, &principal)?;
        let sql = if params.is_empty() {
            self.run_prefix(&principal, &session, &sql).await?
        } else {
            sql
        };
        match self.run(&principal, &session, &sql, &params).await? {
            Ran::Rows { schema, .. } => {
                info(&schema, cmd.as_any().encode_to_vec(), request.into_inner())
            }
            Ran::Done { tag, rows } => done_info(sql, tag, rows, request.into_inner()),
        }
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let (principal, session) = self.session(&request).await?;
        let (sql, params) = self.prepared_sql(&cmd.prepared_statement_handle, &principal)?;
        self.rows(&principal, &session, &sql, &params).await
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let (principal, session) = self.session(&request).await?;
        match self.run(&principal, &session, &cmd.query, &[]).await? {
            Ran::Done { rows, .. } => Ok(rows.map_or(0, |r| r as i64)),
            Ran::Rows { .. } => Ok(-1),
        }
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let principal = self.principal(&request).await?;
        self.prepared_sql(&cmd.prepared_statement_handle, &principal)?;
        let params = read_parameters(request.into_inner()).await?;
        let mut prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = prepared.get_mut(cmd.prepared_statement_handle.as_ref()) {
            p.params = params;
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(cmd.prepared_statement_handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let (principal, session) = self.session(&request).await?;
        let (sql, mut params) = self.prepared_sql(&cmd.prepared_statement_handle, &principal)?;
        let sent = read_parameters(request.into_inner()).await?;
        if !sent.is_empty() {
            params = sent;
        }
        match self.run(&principal, &session, &sql, &params).await? {
            Ran::Done { rows, .. } => Ok(rows.map_or(0, |r| r as i64)),
            Ran::Rows { .. } => Ok(-1),
        }
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let (principal, session) = self.session(&request).await?;
        // The statement must parse now; the result's columns are known now unless it
        // takes parameters (then they are known once bound).
        let stmts = session
            .parse(&query.query)
            .map_err(|e| status(&ApiError::engine(&e)))?;
        let placeholders = query.query.contains('$') || query.query.contains('?');
        let dataset_schema = if !placeholders
            && stmts.len() == 1
            && crate::rest::is_query(&stmts[0])
            && let Ok(Ran::Rows { schema, .. }) =
                crate::rest::run_statements(&self.shared.meta, &session, &query.query, &[]).await
        {
            ipc_schema(&schema)?
        } else {
            bytes::Bytes::new()
        };
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| Status::internal(e.to_string()))?;
        let handle = hex::encode(id).into_bytes();
        {
            let mut prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
            if prepared.len() >= MAX_PREPARED
                && let Some(oldest) = prepared
                    .iter()
                    .min_by_key(|(_, p)| p.created)
                    .map(|(k, _)| k.clone())
            {
                prepared.remove(&oldest);
            }
            prepared.insert(
                handle.clone(),
                Prepared {
                    user: principal.name.clone(),
                    sql: query.query,
                    params: Vec::new(),
                    created: Instant::now(),
                },
            );
        }
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema,
            parameter_schema: bytes::Bytes::new(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let principal = self.principal(&request).await?;
        let mut prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if prepared
            .get(query.prepared_statement_handle.as_ref())
            .is_some_and(|p| p.user == principal.name)
        {
            prepared.remove(query.prepared_statement_handle.as_ref());
        }
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request).await?;
        let mut builder = query.into_builder();
        builder.append(strata_engine::CATALOG);
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, &schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let (_, session) = self.session(&request).await?;
        let mut builder = query.into_builder();
        let mut seen = Vec::new();
        for (ns, _, _, _) in crate::rest::visible_tables(&session).await {
            if !seen.contains(&ns) {
                builder.append(strata_engine::CATALOG, &ns);
                seen.push(ns);
            }
        }
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, &schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let (_, session) = self.session(&request).await?;
        let mut builder = query.into_builder();
        for (ns, t, kind, schema) in crate::rest::visible_tables(&session).await {
            builder
                .append(strata_engine::CATALOG, &ns, &t, kind, &schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request).await?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        builder.append("VIEW");
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(sql_info()).schema();
        self.metadata_info(request, &schema, query.as_any().encode_to_vec())
            .await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.principal(&request).await?;
        let builder = query.into_builder(sql_info());
        Ok(one_batch(builder.schema(), builder.build()))
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::unimplemented(format!(
            "`{}` is not supported",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

impl StrataFlight {
    /// The flight of a metadata request (catalogs, schemas, tables, ...): its ticket is the
    /// request itself, answered when fetched. The caller must be logged in.
    async fn metadata_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        command: Vec<u8>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(&request).await?;
        info(schema, command, request.into_inner())
    }

    /// Runs all but the last statement of a script now, and returns the last one, which
    /// the ticket carries: fetching then runs only that one.
    async fn run_prefix(
        &self,
        principal: &Principal,
        session: &Session,
        sql: &str,
    ) -> Result<String, Status> {
        let stmts = session
            .parse(sql)
            .map_err(|e| status(&ApiError::engine(&e)))?;
        let Some((last, prefix)) = stmts.split_last() else {
            return Ok(sql.to_string());
        };
        if prefix.is_empty() {
            return Ok(sql.to_string());
        }
        for stmt in prefix {
            self.run(principal, session, &stmt.to_string(), &[]).await?;
        }
        Ok(last.to_string())
    }

    /// Runs a statement and streams its rows (or its outcome).
    async fn rows(
        &self,
        principal: &Principal,
        session: &Session,
        sql: &str,
        params: &[ScalarValue],
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        match self.run(principal, session, sql, params).await? {
            Ran::Rows { schema, stream } => Ok(stream_batches(
                schema,
                stream.map_err(|e| FlightError::ExternalError(Box::new(e))),
            )),
            Ran::Done { tag, rows } => {
                let batch = done_batch(&tag, rows)?;
                Ok(stream_batches(
                    batch.schema(),
                    futures::stream::iter([Ok(batch)]),
                ))
            }
        }
    }
}

/// The first row of the parameter batches a client bound.
async fn read_parameters(stream: PeekableFlightDataStream) -> Result<Vec<ScalarValue>, Status> {
    // The stream itself, not `into_inner()`: its first, peeked message holds the schema.
    let mut batches =
        FlightRecordBatchStream::new_from_flight_data(stream.map_err(FlightError::from));
    let mut params = Vec::new();
    while let Some(batch) = batches.next().await {
        let batch = batch.map_err(flight_status)?;
        if batch.num_rows() == 0 || !params.is_empty() {
            continue;
        }
        for col in batch.columns() {
            params.push(
                ScalarValue::try_from_array(col, 0)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            );
        }
    }
    Ok(params)
}

/// Serves Flight SQL on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    service: StrataFlight,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let incoming = futures::stream::unfold(listener, |l| async move {
        let accepted = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((accepted, l))
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder =
            match builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity)) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("Flight SQL TLS: {e}");
                    return;
                }
            };
    }
    let result = builder
        .add_service(
            FlightServiceServer::new(service)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(e) = result {
        tracing::error!("Flight SQL server stopped: {e}");
    }
}
