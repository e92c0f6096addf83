//! The Postgres wire protocol: `psql`, psycopg, JDBC and BI tools connect here.
//!
//! Each accepted socket gets handlers of its own. The startup handler checks the password
//! (or API token) against the metadata store and opens an engine session for the
//! principal; queries then run on that session through `datafusion-postgres` (which speaks
//! the simple and extended protocols, encodes Arrow as Postgres values, and answers
//! `pg_catalog` queries), except statements that change data or definitions: a hook sends
//! those through Strata's own statements ([`strata_engine::Session::execute`]), which check
//! the principal's privileges and write Delta commits.
//!
//! Between statements a connection checks whether access changed (a token revoked, a user
//! disabled, grants edited): it ends if its credential no longer holds, and otherwise
//! continues under the new policy; statements it prepared before are planned again under
//! that policy before they next run.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use datafusion_postgres::arrow_pg;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::{DfSessionService, Parser, QueryHook};
use futures::{Sink, SinkExt};
use pgwire::api::Type;
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionGuard, ConnectionHandle, ConnectionManager,
    ErrorHandler, METADATA_USER, PgWireConnectionState, PgWireServerHandlers,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::messages::extendedquery::{Parse, ParseComplete};
use pgwire::messages::startup::Authentication;
use pgwire::types::format::FormatOptions;

use crate::auth::ScramPlan;
use crate::scram;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use strata_engine::datafusion::arrow::datatypes::DataType;
use strata_engine::datafusion::common::ParamValues;
use strata_engine::datafusion::logical_expr::Volatility;
use strata_engine::datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use strata_engine::datafusion::prelude::SessionContext;
use strata_engine::datafusion::sql::parser::Statement as DFStatement;
use strata_engine::datafusion::sql::sqlparser::ast::{SetExpr, Statement};
use strata_engine::{Engine, Principal, Session, StatementResult};
use strata_meta::AuditOutcome;
use tokio::net::TcpListener;

use crate::auth::{Authenticator, Credential};
use crate::policy::Policies;

/// The surface name in the audit log.
const SURFACE: &str = "pgwire";

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) auth: Authenticator,
    pub(crate) policies: Arc<Policies>,
    pub(crate) connections: Arc<ConnectionManager>,
    pub(crate) audit: crate::audit::AuditLog,
    pub(crate) meta: Arc<strata_meta::MetaStore>,
    /// Whether a client without TLS may send a password (loopback clients only).
    pub(crate) tls: Option<pgwire::tokio::TlsAcceptor>,
}

/// One connection's state once logged in.
struct Conn {
    principal: Principal,
    credential: Credential,
    /// Access version the session was opened at.
    version: i64,
    service: Arc<DfSessionService>,
    /// The engine session behind `service` (same context, same policy).
    session: Session,
}

type Slot = Arc<Mutex<Option<Arc<Conn>>>>;

/// Accepts connections on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let cancel = Arc::new(DefaultCancelHandler::new(Arc::clone(&shared.connections)));
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accepting a Postgres connection: {e}");
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let slot: Slot = Arc::default();
        let handlers = ConnHandlers {
            startup: Arc::new(Login {
                slot: Arc::clone(&slot),
                shared: Arc::clone(&shared),
                peer,
                scram: Mutex::default(),
            }),
            query: Arc::new(ConnQuery {
                slot,
                shared: Arc::clone(&shared),
                planned_under: Mutex::default(),
                lookups: Mutex::default(),
            }),
            cancel: Arc::clone(&cancel),
        };
        let tls = shared.tls.clone();
        // Each connection runs on its own task: a panic or a bad packet ends that task only.
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                tracing::debug!("Postgres connection from {peer} ended: {e}");
            }
        });
    }
}

struct ConnHandlers {
    startup: Arc<Login>,
    query: Arc<ConnQuery>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for ConnHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.query)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.query)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.cancel)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(SqlStates)
    }
}

// ---------------------------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------------------------

struct Login {
    slot: Slot,
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Where a SCRAM-SHA-256 exchange is; `None` when the password itself was asked for.
    scram: Mutex<Option<ScramState>>,
}

enum ScramState {
    /// `AuthenticationSASL` sent; the client's first message is next.
    Offered(ScramPlan),
    /// `AuthenticationSASLContinue` sent; the client's proof is next.
    Continued(ScramPlan, scram::Exchange),
}

impl Login {
    /// Records a failed login and gives the client PostgreSQL's answer, which names no reason.
    fn refused(&self, user: &str, why: &str) -> PgWireError {
        self.shared.audit.record(crate::audit::login_refused(
            user,
            SURFACE,
            &self.peer.ip().to_string(),
            Some(why),
        ));
        fatal(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        )
    }

    fn scram_state(&self) -> std::sync::MutexGuard<'_, Option<ScramState>> {
        self.scram.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message.into(),
    )))
}

pub(crate) fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message.into(),
    )))
}

#[async_trait]
impl StartupHandler for Login {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                // A password travels in clear inside this message flow: only over TLS, or
                // from this machine.
                if !client.is_secure() && !self.peer.ip().is_loopback() {
                    return Err(fatal(
                        "28000",
                        "connections from other hosts must use TLS (sslmode=require); start the server with --tls-cert and --tls-key",
                    ));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                // Over TLS the password (or token) itself is asked for; in the clear, SCRAM
                // keeps it off the wire when the user has SCRAM verifiers.
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .ok_or(PgWireError::UserNameRequired)?;
                let plan = if client.is_secure() {
                    None
                } else {
                    self.shared
                        .auth
                        .scram_plan(&user)
                        .await
                        .map_err(|e| fatal("XX000", e.to_string()))?
                };
                let request = match plan {
                    Some(plan) => {
                        *self.scram_state() = Some(ScramState::Offered(plan));
                        Authentication::SASL(vec![scram::MECHANISM.to_string()])
                    }
                    None => Authentication::CleartextPassword,
                };
                client
                    .send(PgWireBackendMessage::Authentication(request))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .ok_or(PgWireError::UserNameRequired)?;
                let state = self.scram_state().take();
                let login = match state {
                    None => {
                        let password = pwd.into_password()?.password;
                        self.shared.auth.login(&user, &password).await
                    }
                    Some(ScramState::Offered(plan)) => {
                        let first = pwd.into_sasl_initial_response()?;
                        if first.auth_method != scram::MECHANISM {
                            return Err(fatal(
                                "28000",
                                format!(
                                    "SASL mechanism {:?} is not supported; use {}",
                                    first.auth_method,
                                    scram::MECHANISM
                                ),
                            ));
                        }
                        let data = first.data.unwrap_or_default();
                        let exchange = scram::Exchange::start(&data, &plan.salt, plan.iterations)
                            .map_err(|e| match e {
                            scram::ScramError::ChannelBinding => fatal("28000", e.to_string()),
                            other => self.refused(&user, &other.to_string()),
                        })?;
                        let server_first = exchange.server_first().as_bytes().to_vec();
                        *self.scram_state() = Some(ScramState::Continued(plan, exchange));
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(server_first.into()),
                            ))
                            .await?;
                        return Ok(());
                    }
                    Some(ScramState::Continued(plan, exchange)) => {
                        let last = pwd.into_sasl_response()?;
                        let verifiers: Vec<&scram::Verifier> =
                            plan.candidates.iter().map(|(v, _)| v).collect();
                        match exchange.finish(&last.data, &verifiers) {
                            Ok((which, server_final)) => {
                                client
                                    .send(PgWireBackendMessage::Authentication(
                                        Authentication::SASLFinal(server_final.into_bytes().into()),
                                    ))
                                    .await?;
                                let credential = plan.candidates[which].1.clone();
                                self.shared.auth.scram_login(&user, credential).await
                            }
                            Err(e) => return Err(self.refused(&user, &e.to_string())),
                        }
                    }
                };
                let (principal, credential) = match login {
                    Ok(ok) => ok,
                    Err(crate::Error::AuthFailed(_)) => {
                        return Err(self.refused(&user, "wrong password or token"));
                    }
                    Err(e) => return Err(fatal("XX000", e.to_string())),
                };
                let conn = open(&self.shared, principal, credential)
                    .await
                    .map_err(|e| fatal("XX000", e.to_string()))?;
                let superuser = conn.principal.superuser;
                *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(conn));
                let (pid, key) = RandomPidSecretKeyGenerator::default().generate(client);
                client.set_pid_and_secret_key(pid, key.clone());
                let (handle, guard) = self.shared.connections.register(pid, key);
                client
                    .session_extensions()
                    .insert::<Arc<ConnectionHandle>>(handle);
                client.session_extensions().insert::<ConnectionGuard>(guard);
                let mut params = DefaultServerParameterProvider::default();
                params.server_version = crate::SERVER_VERSION.into();
                params.is_superuser = superuser;
                finish_authentication(client, &params).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Opens the engine session of a logged-in connection, with `pg_catalog` for its clients.
async fn open(
    shared: &Shared,
    principal: Principal,
    credential: Credential,
) -> crate::Result<Conn> {
    let (version, policy) = shared.policies.fresh().await?;
    let session = shared.engine.session_for(principal.clone(), policy).await?;
    let ctx = session.context().clone();
    setup_pg_catalog(&ctx, strata_engine::CATALOG, EmptyContextProvider)
        .map_err(|e| crate::Error::Internal(format!("pg_catalog: {e}")))?;
    ctx.register_udf(version_udf());
    ctx.register_udf(to_regtype_udf());
    ctx.register_udf(current_setting_udf());
    // Strata tables have no sequences, indexes or constraints; no object has a COMMENT here
    // (psql's `\d+` and `\dt+` show the Description column empty); `pg_class` oids are not
    // mapped back to lake tables, so sizes are unknown (`strata tables` shows them).
    let (text, int, bigint) = (DataType::Utf8, DataType::Int32, DataType::Int64);
    for (name, args, ret, volatility) in [
        (
            "pg_get_indexdef",
            vec![bigint.clone(), bigint.clone(), DataType::Boolean],
            text.clone(),
            Volatility::Stable,
        ),
        (
            "pg_get_constraintdef",
            vec![bigint.clone(), DataType::Boolean],
            text.clone(),
            Volatility::Stable,
        ),
        (
            "pg_get_serial_sequence",
            vec![text.clone(), text.clone()],
            text.clone(),
            Volatility::Immutable,
        ),
        (
            "col_description",
            vec![bigint.clone(), int],
            text.clone(),
            Volatility::Stable,
        ),
        (
            "obj_description",
            vec![bigint.clone(), text.clone()],
            text.clone(),
            Volatility::Stable,
        ),
        (
            "pg_table_size",
            vec![bigint.clone()],
            bigint,
            Volatility::Stable,
        ),
    ] {
        ctx.register_udf(null_udf(name, args, ret, volatility));
    }
    ctx.register_udf(size_pretty_udf());
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(StrataStatements {
            session: session.clone(),
            meta: Arc::clone(&shared.meta),
            principal: principal.clone(),
            savepoints: Mutex::default(),
        }),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let service = Arc::new(DfSessionService::new_with_hooks(Arc::new(ctx), hooks));
    Ok(Conn {
        principal,
        credential,
        version,
        service,
        session,
    })
}

/// `version()` as PostgreSQL words it: drivers (SQLAlchemy, JDBC) read the server's major
/// and minor version from it.
fn version_udf() -> strata_engine::datafusion::logical_expr::ScalarUDF {
    use strata_engine::datafusion::common::ScalarValue;
    use strata_engine::datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let text = format!(
        "PostgreSQL {} on {}-linux, compiled by rustc (Strata {})",
        crate::SERVER_VERSION,
        std::env::consts::ARCH,
        env!("CARGO_PKG_VERSION")
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    )
}

/// A function answering NULL whatever its arguments, of type `ret`.
fn null_udf(
    name: &str,
    args: Vec<DataType>,
    ret: DataType,
    volatility: Volatility,
) -> strata_engine::datafusion::logical_expr::ScalarUDF {
    use strata_engine::datafusion::common::ScalarValue;
    use strata_engine::datafusion::logical_expr::{ColumnarValue, create_udf};
    let null = ScalarValue::try_from(&ret).unwrap_or(ScalarValue::Null);
    create_udf(
        name,
        args,
        ret,
        volatility,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(null.clone()))),
    )
}

/// `pg_size_pretty(bigint)`, as PostgreSQL formats sizes: bytes below 10 kB, then kB, MB,
/// GB, TB, PB, each rounded half away from zero.
fn size_pretty_udf() -> strata_engine::datafusion::logical_expr::ScalarUDF {
    use strata_engine::datafusion::arrow::array::{AsArray, StringArray};
    use strata_engine::datafusion::arrow::datatypes::Int64Type;
    use strata_engine::datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let sizes = ColumnarValue::values_to_arrays(args)?;
            let out: StringArray = sizes[0]
                .as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.map(size_pretty))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

/// PostgreSQL's `pg_size_pretty` for one value.
fn size_pretty(size: i64) -> String {
    // (name, limit below which this unit is used, half-rounded, bits of the unit)
    const UNITS: [(&str, i64, bool, u32); 6] = [
        ("bytes", 10 * 1024, false, 0),
        ("kB", 20 * 1024 - 1, true, 10),
        ("MB", 20 * 1024 - 1, true, 20),
        ("GB", 20 * 1024 - 1, true, 30),
        ("TB", 20 * 1024 - 1, true, 40),
        ("PB", 20 * 1024 - 1, true, 50),
    ];
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    let mut size = size;
    for (i, (name, limit, round, bits)) in UNITS.iter().enumerate() {
        let Some(next) = UNITS.get(i + 1) else {
            break;
        };
        if size.unsigned_abs() < *limit as u64 {
            let shown = if *round { half_rounded(size) } else { size };
            return format!("{shown} {name}");
        }
        let shift = next.3 - bits - u32::from(next.2) + u32::from(*round);
        size /= 1i64 << shift;
    }
    format!("{} PB", half_rounded(size))
}

/// `to_regtype(name)`: the oid of a built-in type by name, or NULL (drivers look types up
/// this way, e.g. psycopg for `hstore`, which Strata does not have).
/// `current_setting(name)` for the settings clients read (SQLAlchemy asks for
/// `default_table_access_method` when reflecting a table), with the values this server runs
/// with. An unknown name is an error, as in PostgreSQL.
fn current_setting_udf() -> strata_engine::datafusion::logical_expr::ScalarUDF {
    use strata_engine::datafusion::arrow::array::{Array, AsArray, StringArray};
    use strata_engine::datafusion::common::exec_err;
    use strata_engine::datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    fn setting(name: &str) -> Option<&'static str> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "default_table_access_method" => "heap",
            "server_version" => crate::SERVER_VERSION,
            "server_encoding" | "client_encoding" => "UTF8",
            "standard_conforming_strings" | "integer_datetimes" => "on",
            "datestyle" => "ISO, MDY",
            "timezone" => "UTC",
            "search_path" => "\"$user\", public",
            "max_identifier_length" => "63",
            "transaction_isolation" | "default_transaction_isolation" => "read committed",
            "transaction_read_only" | "default_transaction_read_only" => "off",
            _ => return None,
        })
    }
    create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = arrays[0].as_string::<i32>();
            let mut out = Vec::with_capacity(names.len());
            for i in 0..names.len() {
                if names.is_null(i) {
                    out.push(None);
                    continue;
                }
                match setting(names.value(i)) {
                    Some(v) => out.push(Some(v)),
                    None => {
                        return exec_err!(
                            "unrecognized configuration parameter \"{}\"",
                            names.value(i)
                        );
                    }
                }
            }
            Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
        }),
    )
}

fn to_regtype_udf() -> strata_engine::datafusion::logical_expr::ScalarUDF {
    use strata_engine::datafusion::arrow::array::{Array, AsArray, Int32Array};
    use strata_engine::datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    fn oid(name: &str) -> Option<i32> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "bool" | "boolean" => 16,
            "bytea" => 17,
            "int8" | "bigint" => 20,
            "int2" | "smallint" => 21,
            "int4" | "integer" | "int" => 23,
            "text" => 25,
            "oid" => 26,
            "json" => 114,
            "float4" | "real" => 700,
            "float8" | "double precision" => 701,
            "varchar" | "character varying" => 1043,
            "date" => 1082,
            "time" | "time without time zone" => 1083,
            "timestamp" | "timestamp without time zone" => 1114,
            "timestamptz" | "timestamp with time zone" => 1184,
            "interval" => 1186,
            "numeric" | "decimal" => 1700,
            "uuid" => 2950,
            "jsonb" => 3802,
            _ => return None,
        })
    }
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(|args| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = arrays[0].as_string::<i32>();
            let out: Int32Array = (0..names.len())
                .map(|i| names.is_valid(i).then(|| oid(names.value(i))).flatten())
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------------

struct ConnQuery {
    slot: Slot,
    shared: Arc<Shared>,
    /// The access version each of the connection's prepared statements was planned under
    /// (plans carry the principal's row filters and masks). A statement planned before
    /// access changed is planned again before it runs, as PostgreSQL re-plans a cached plan
    /// after a `GRANT`, `REVOKE` or policy change.
    planned_under: Mutex<std::collections::HashMap<String, i64>>,
    /// Statements answered as key lookups ([`strata_engine::KeyLookup`]), by name: the stored
    /// statement and access version each was made for, and the lookup (`None`: not one).
    lookups: Mutex<std::collections::HashMap<String, LookupEntry>>,
}

type StoredPlan = StoredStatement<<ConnQuery as ExtendedQueryHandler>::Statement>;

/// A stored statement, the access version it was examined under, and its lookup if any.
type LookupEntry = (Arc<StoredPlan>, i64, Option<Arc<PreparedLookup>>);

/// A statement answered as a key lookup, with what binding its parameters needs.
struct PreparedLookup {
    lookup: strata_engine::KeyLookup,
    /// The parameters' types as the plan infers them and as the wire carries them, in `$n`
    /// order.
    inferred: Vec<Option<DataType>>,
    wire: Vec<Option<Type>>,
}

impl PreparedLookup {
    fn of(conn: &Conn, plan: &LogicalPlan) -> Option<Self> {
        let types = plan.get_parameter_types().ok()?;
        let mut ordered: Vec<(u32, Option<DataType>)> = types
            .into_iter()
            .map(|(id, t)| Some((id.strip_prefix('$')?.parse().ok()?, t)))
            .collect::<Option<_>>()?;
        ordered.sort_by_key(|(n, _)| *n);
        // Positional parameters $1..$n, each of a known, plain type.
        let plain = ordered
            .iter()
            .enumerate()
            .all(|(i, (n, t))| usize::try_from(*n).is_ok_and(|n| n == i + 1) && t.is_some());
        if !plain {
            return None;
        }
        let inferred: Vec<Option<DataType>> = ordered.into_iter().map(|(_, t)| t).collect();
        let wire = inferred
            .iter()
            .map(|t| {
                t.as_ref()
                    .and_then(|t| arrow_pg::datatypes::into_pg_type(t).ok())
            })
            .collect::<Vec<_>>();
        if wire.iter().any(Option::is_none) {
            return None;
        }
        Some(Self {
            lookup: conn.session.key_lookup(plan)?,
            inferred,
            wire,
        })
    }
}

impl ConnQuery {
    /// The connection's session, re-opened under the new policy if access changed since,
    /// or an error that ends the connection if its credential no longer holds.
    async fn conn(&self) -> PgWireResult<Arc<Conn>> {
        let current = self
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| fatal("28000", "not logged in"))?;
        if current.version >= self.shared.policies.version() {
            return Ok(current);
        }
        let user = current.principal.name.clone();
        let valid = self
            .shared
            .auth
            .still_valid(&user, &current.credential)
            .await
            .map_err(|e| error("XX000", e.to_string()))?;
        if !valid {
            return Err(fatal(
                "28000",
                format!("the credential of \"{user}\" was revoked; reconnect"),
            ));
        }
        let principal = self
            .shared
            .auth
            .principal(&user)
            .await
            .map_err(|e| error("XX000", e.to_string()))?
            .ok_or_else(|| fatal("28000", format!("user \"{user}\" no longer exists")))?;
        let conn = Arc::new(
            open(&self.shared, principal, current.credential.clone())
                .await
                .map_err(|e| error("XX000", e.to_string()))?,
        );
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&conn));
        Ok(conn)
    }
}

impl ConnQuery {
    fn parser(&self, conn: &Conn) -> ClientSqlParser {
        ClientSqlParser {
            inner: conn.service.query_parser(),
            engine: self.shared.engine.clone(),
        }
    }

    /// `portal` with its statement planned again under `conn`'s policy when it was planned
    /// under an older one; the new plan replaces the stored statement for later binds.
    async fn current_plan<C>(
        &self,
        client: &C,
        conn: &Conn,
        portal: &Portal<<Self as ExtendedQueryHandler>::Statement>,
    ) -> PgWireResult<Option<Portal<<Self as ExtendedQueryHandler>::Statement>>>
    where
        C: ClientInfo + ClientPortalStore + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = <Self as ExtendedQueryHandler>::Statement>,
    {
        let stored = &portal.statement;
        let planned = self
            .planned_under
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&stored.id)
            .copied();
        if planned.is_none_or(|version| version >= conn.version) {
            return Ok(None);
        }
        let (sql, old) = &stored.statement;
        let Some(old) = old else {
            return Ok(None);
        };
        // The stored text is already rewritten for the catalog; plan it as it stands.
        let Some((_, Some(new))) = self
            .parser(conn)
            .plan(client, sql, &stored.parameter_types)
            .await?
        else {
            return Ok(None);
        };
        // The client was told the result's columns when it prepared the statement.
        let columns = |plan: &LogicalPlan| {
            plan.schema()
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect::<Vec<_>>()
        };
        if columns(&new.1) != columns(&old.1) {
            return Err(error(
                "0A000",
                "cached plan must not change result type: access to the statement's tables changed since it was prepared; prepare it again",
            ));
        }
        let statement = Arc::new(StoredStatement::new(
            stored.id.clone(),
            (sql.clone(), Some(new)),
            stored.parameter_types.clone(),
        ));
        client.portal_store().put_statement(Arc::clone(&statement));
        self.planned_under
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stored.id.clone(), conn.version);
        let mut replanned = Portal::default();
        replanned.name.clone_from(&portal.name);
        replanned.statement = statement;
        replanned.parameter_format = portal.parameter_format.clone();
        replanned.parameters.clone_from(&portal.parameters);
        replanned.result_column_format = portal.result_column_format.clone();
        replanned.state = Arc::clone(&portal.state);
        Ok(Some(replanned))
    }

    /// The answer to `portal` when its statement is a key lookup the engine can answer by
    /// reading only the pages holding the key; `None` to run it the general way.
    async fn lookup<C>(
        &self,
        client: &C,
        conn: &Conn,
        portal: &Portal<<Self as ExtendedQueryHandler>::Statement>,
    ) -> Option<PgWireResult<Response>>
    where
        C: ClientInfo,
    {
        let (_, Some((Statement::Query(_), plan))) = &portal.statement.statement else {
            return None;
        };
        let prepared = self.prepared_lookup(conn, &portal.statement, plan)?;
        let inferred: Vec<Option<&DataType>> =
            prepared.inferred.iter().map(Option::as_ref).collect();
        let wire: Vec<Option<&Type>> = prepared.wire.iter().map(Option::as_ref).collect();
        let params = match arrow_pg::datatypes::df::deserialize_parameters_with_server_types(
            portal, &inferred, &wire,
        ) {
            Ok(params) => params,
            Err(e) => return Some(Err(e)),
        };
        let batches = match prepared.lookup.run(Some(&params)).await {
            Ok(Some(batches)) => batches,
            Ok(None) => return None,
            Err(e) => return Some(Err(PgWireError::ApiError(Box::new(e)))),
        };
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = match arrow_pg::datatypes::arrow_schema_to_pg_fields(
            prepared.lookup.schema().as_arrow(),
            &portal.result_column_format,
            Some(options),
        ) {
            Ok(fields) => Arc::new(fields),
            Err(e) => return Some(Err(e)),
        };
        let rows: Vec<PgWireResult<DataRow>> = batches
            .into_iter()
            .flat_map(|b| arrow_pg::datatypes::encode_recordbatch(Arc::clone(&fields), b))
            .collect();
        Some(Ok(Response::Query(QueryResponse::new(
            fields,
            futures::stream::iter(rows),
        ))))
    }

    /// The key lookup of `stored` (made on its first run, kept while the statement and the
    /// access it was planned under stay), or `None` when it is not one.
    fn prepared_lookup(
        &self,
        conn: &Conn,
        stored: &Arc<StoredPlan>,
        plan: &LogicalPlan,
    ) -> Option<Arc<PreparedLookup>> {
        {
            let lookups = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((kept, version, lookup)) = lookups.get(&stored.id)
                && Arc::ptr_eq(kept, stored)
                && *version == conn.version
            {
                return lookup.clone();
            }
        }
        let lookup = PreparedLookup::of(conn, plan).map(Arc::new);
        let mut lookups = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        if lookups.len() >= 256 {
            lookups.clear();
        }
        lookups.insert(
            stored.id.clone(),
            (Arc::clone(stored), conn.version, lookup.clone()),
        );
        lookup
    }

    /// Logs a statement: who, what, how it ended (a refusal is `denied`), how long.
    fn audit<T>(
        &self,
        conn: &Conn,
        statement: &str,
        result: &PgWireResult<T>,
        failed: Option<(String, String)>,
        started: Instant,
    ) {
        let failure = match result {
            Err(PgWireError::ApiError(e)) => match crate::errors::api_error(e.as_ref()) {
                PgWireError::UserError(info) => Some((info.code.clone(), info.message.clone())),
                other => Some(("XX000".into(), other.to_string())),
            },
            Err(PgWireError::UserError(info)) => Some((info.code.clone(), info.message.clone())),
            Err(other) => Some(("XX000".into(), other.to_string())),
            Ok(_) => failed,
        };
        let (outcome, error) = match failure {
            None => (AuditOutcome::Ok, None),
            Some((code, message)) if code == "42501" => (AuditOutcome::Denied, Some(message)),
            Some((_, message)) => (AuditOutcome::Error, Some(message)),
        };
        self.shared.audit.record(crate::audit::entry(
            &conn.principal.name,
            SURFACE,
            statement,
            outcome,
            error,
            started.elapsed(),
        ));
    }
}

#[async_trait]
impl SimpleQueryHandler for ConnQuery {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = self.conn().await?;
        let started = Instant::now();
        let rewritten = crate::client_sql::rewrite(query);
        let result =
            <DfSessionService as SimpleQueryHandler>::do_query(&conn.service, client, &rewritten)
                .await;
        let failed = result.as_ref().ok().and_then(|responses| {
            responses.iter().find_map(|r| match r {
                Response::Error(info) => Some((info.code.clone(), info.message.clone())),
                _ => None,
            })
        });
        self.audit(&conn, query, &result, failed, started);
        result
    }
}

#[async_trait]
impl ExtendedQueryHandler for ConnQuery {
    type Statement = (String, Option<(Statement, LogicalPlan)>);
    type QueryParser = ClientSqlParser;

    fn query_parser(&self) -> Arc<ClientSqlParser> {
        // Parsing happens after login, when the slot is filled.
        let conn = self
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .expect("extended queries arrive only after login");
        Arc::new(self.parser(&conn))
    }

    /// Plans under the current policy (the session re-opened first if access changed) and
    /// remembers which policy that was.
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = self.conn().await?;
        let name = message
            .name
            .clone()
            .unwrap_or_else(|| pgwire::api::DEFAULT_NAME.to_owned());
        match StoredStatement::parse(client, &message, self.parser(&conn)).await? {
            Some(stmt) => client.portal_store().put_statement(Arc::new(stmt)),
            None => client.portal_store().put_empty_statement(&name),
        }
        {
            let mut planned = self.planned_under.lock().unwrap_or_else(|e| e.into_inner());
            planned.insert(name, conn.version);
            // Forget statements the client closed or deallocated.
            if planned.len() > 256 {
                let store = client.portal_store();
                planned.retain(|name, _| store.get_statement(name).is_some());
            }
        }
        client
            .feed(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = self.conn().await?;
        let started = Instant::now();
        let result = match self.current_plan(client, &conn, portal).await {
            Ok(replanned) => {
                let portal = replanned.as_ref().unwrap_or(portal);
                match self.lookup(client, &conn, portal).await {
                    Some(answer) => answer,
                    None => {
                        <DfSessionService as ExtendedQueryHandler>::do_query(
                            &conn.service,
                            client,
                            portal,
                            max_rows,
                        )
                        .await
                    }
                }
            }
            Err(e) => Err(e),
        };
        let failed = match &result {
            Ok(Response::Error(info)) => Some((info.code.clone(), info.message.clone())),
            _ => None,
        };
        self.audit(
            &conn,
            &portal.statement.statement.0,
            &result,
            failed,
            started,
        );
        result
    }
}

/// The Postgres-compatibility parser, given client catalog queries rewritten as
/// [`crate::client_sql`] does for simple queries. The plans it makes are kept (a prepared
/// statement runs many times), so they read each table at the version latest when they run
/// ([`Engine::scan_latest_when_run`]).
pub(crate) struct ClientSqlParser {
    inner: Arc<Parser>,
    engine: Engine,
}

impl ClientSqlParser {
    /// Plans `sql` as given (already rewritten for the catalog), with each table read at the
    /// version latest when the plan runs.
    async fn plan<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<<Parser as QueryParser>::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let Some((query, planned)) = self.inner.parse_sql(client, sql, types).await? else {
            return Ok(None);
        };
        let planned = match planned {
            Some((statement, plan)) => {
                let plan = self
                    .engine
                    .scan_latest_when_run(plan)
                    .map_err(|e| crate::errors::to_pgwire(&e))?;
                Some((statement, plan))
            }
            None => None,
        };
        Ok(Some((query, planned)))
    }
}

#[async_trait]
impl QueryParser for ClientSqlParser {
    type Statement = <Parser as QueryParser>::Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        self.plan(client, &crate::client_sql::rewrite(sql), types)
            .await
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(stmt, column_format)
    }
}

// ---------------------------------------------------------------------------------------------
// Statements Strata runs itself
// ---------------------------------------------------------------------------------------------

/// Sends statements that change data or definitions through the engine session, where
/// privileges are checked and writes become Delta commits.
struct StrataStatements {
    session: Session,
    meta: Arc<strata_meta::MetaStore>,
    principal: Principal,
    /// Statements that changed something, and the savepoints set (with that count then).
    savepoints: Mutex<(u64, Vec<(String, u64)>)>,
}

fn is_savepoint(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Rollback {
                savepoint: Some(_),
                ..
            }
    )
}

/// Whether DataFusion's own planning may answer `stmt` (reads, settings, transactions,
/// cursors); everything else is Strata's.
fn read_only(stmt: &Statement) -> bool {
    if let Statement::Query(q) = stmt {
        // `SELECT … INTO t` creates a table.
        return !matches!(q.body.as_ref(), SetExpr::Select(s) if s.into.is_some());
    }
    matches!(
        stmt,
        Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Discard { .. }
            | Statement::Deallocate { .. }
    ) || matches!(stmt, Statement::Explain { analyze: false, .. })
}

/// `DEALLOCATE [PREPARE] name | ALL` of statements prepared with the protocol's `Parse`
/// message (drivers' server-side statements), which PostgreSQL keeps in one namespace with SQL
/// `PREPARE`d ones; psycopg sends `DEALLOCATE ALL` after every DDL statement. `None` leaves a
/// name the protocol did not prepare to DataFusion's own `PREPARE`/`DEALLOCATE`.
fn deallocate(statement: &Statement, client: &dyn HookClient) -> Option<PgWireResult<Response>> {
    let Statement::Deallocate { name, .. } = statement else {
        return None;
    };
    let store = client.portal_store();
    if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") {
        store.clear_statements();
        return Some(Ok(Response::Execution(Tag::new("DEALLOCATE ALL"))));
    }
    store.get_statement(&name.value)?;
    store.rm_statement(&name.value);
    Some(Ok(Response::Execution(Tag::new("DEALLOCATE"))))
}

impl StrataStatements {
    /// `SAVEPOINT`, `RELEASE SAVEPOINT` and `ROLLBACK TO SAVEPOINT`, which drivers send around
    /// their own catalog queries. Strata commits each statement, so rolling back to a
    /// savepoint succeeds only when nothing was changed since it was set.
    fn savepoint(&self, stmt: &Statement) -> Option<PgWireResult<Response>> {
        let mut state = self.savepoints.lock().unwrap_or_else(|e| e.into_inner());
        let (writes, stack) = &mut *state;
        match stmt {
            Statement::Savepoint { name } => {
                stack.push((name.value.clone(), *writes));
                Some(Ok(Response::Execution(Tag::new("SAVEPOINT"))))
            }
            Statement::ReleaseSavepoint { name } => {
                let Some(at) = stack.iter().rposition(|(n, _)| *n == name.value) else {
                    return Some(Err(error(
                        "3B001",
                        format!("savepoint \"{}\" does not exist", name.value),
                    )));
                };
                stack.truncate(at);
                Some(Ok(Response::Execution(Tag::new("RELEASE"))))
            }
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => {
                let Some(at) = stack.iter().rposition(|(n, _)| *n == name.value) else {
                    return Some(Err(error(
                        "3B001",
                        format!("savepoint \"{}\" does not exist", name.value),
                    )));
                };
                if stack[at].1 != *writes {
                    return Some(Err(error(
                        "0A000",
                        "cannot roll back to the savepoint: Strata committed the changes made since it (each statement commits on its own)",
                    )));
                }
                stack.truncate(at + 1);
                Some(Ok(Response::Execution(Tag::new("ROLLBACK"))))
            }
            _ => None,
        }
    }

    async fn run(&self, stmt: &Statement) -> PgWireResult<Response> {
        {
            let mut state = self.savepoints.lock().unwrap_or_else(|e| e.into_inner());
            state.0 += 1;
        }
        if let Some(access) = crate::access_sql::classify(stmt, &self.principal.name) {
            let access = access.map_err(|m| error("0A000", m))?;
            return match crate::access_sql::apply(&self.meta, &self.principal, access).await {
                Ok(tag) => Ok(Response::Execution(Tag::new(&tag))),
                Err(crate::Error::Engine(e)) => Err(crate::errors::to_pgwire(&e)),
                Err(crate::Error::Meta(e)) => Err(error("42000", e.to_string())),
                Err(e) => Err(error("XX000", e.to_string())),
            };
        }
        // COPY is DataFusion's own statement (`COPY … TO 'file'`), which its parser
        // reads, not the Postgres one: parse it again as Strata does.
        let statement = match stmt {
            Statement::Copy { .. } => self
                .session
                .parse(&stmt.to_string())
                .map_err(|e| crate::errors::to_pgwire(&e))?
                .into_iter()
                .next()
                .ok_or_else(|| error("42601", "an empty COPY statement"))?,
            other => DFStatement::Statement(Box::new(other.clone())),
        };
        let result = self
            .session
            .execute(statement)
            .await
            .map_err(|e| crate::errors::to_pgwire(&e))?;
        match result {
            StatementResult::Done { tag, .. } => Ok(Response::Execution(Tag::new(&tag))),
            StatementResult::Rows { .. } => Err(error(
                "0A000",
                "this statement returns rows; run it as a query",
            )),
        }
    }
}

#[async_trait]
impl QueryHook for StrataStatements {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(answer) = self.savepoint(statement) {
            return Some(answer);
        }
        if let Some(answer) = deallocate(statement, client) {
            return Some(answer);
        }
        if read_only(statement) {
            return None;
        }
        Some(self.run(statement).await)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if read_only(statement) && !is_savepoint(statement) {
            return None;
        }
        // Planned when executed, by the session; nothing to describe.
        Some(Ok(LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: false,
            schema: Arc::new(strata_engine::datafusion::common::DFSchema::empty()),
        })))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(answer) = self.savepoint(statement) {
            return Some(answer);
        }
        if let Some(answer) = deallocate(statement, client) {
            return Some(answer);
        }
        if read_only(statement) {
            return None;
        }
        let ParamValues::List(values) = params else {
            return Some(Err(error(
                "0A000",
                "named parameters are not supported; use $1, $2, …",
            )));
        };
        if values.is_empty() {
            return Some(self.run(statement).await);
        }
        let mut bound = statement.clone();
        let values: Vec<_> = values.iter().map(|v| v.value.clone()).collect();
        Some(match crate::bind::bind_parameters(&mut bound, &values) {
            Ok(()) => self.run(&bound).await,
            Err(m) => Err(error("08P01", m)),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Gives errors from DataFusion's side (planning a query) their SQLSTATE.
struct SqlStates;

impl ErrorHandler for SqlStates {
    fn on_error<C: ClientInfo>(&self, _client: &C, err: &mut PgWireError) {
        if let PgWireError::ApiError(e) = err {
            *err = crate::errors::api_error(e.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    /// Dates and timestamps in text rows, as the ISO date style writes them: the fast path
    /// for four-digit years gives what the general `strftime` formatting gives.
    #[test]
    fn iso_dates_and_timestamps_read_as_strftime_writes_them() {
        use chrono::{NaiveDate, NaiveDateTime};
        use pgwire::api::Type;
        use pgwire::types::ToSqlText;
        use pgwire::types::format::FormatOptions;

        let iso = FormatOptions::default();
        let mut german = FormatOptions::default();
        german.date_style = "German, DMY".into();
        let text = |v: &dyn Fn(&mut bytes::BytesMut, &FormatOptions), o: &FormatOptions| {
            let mut out = bytes::BytesMut::new();
            v(&mut out, o);
            String::from_utf8(out.to_vec()).unwrap()
        };
        for (y, m, d) in [
            (2026, 11, 27),
            (1, 1, 1),
            (0, 1, 1),
            (9999, 12, 31),
            (10000, 1, 1),
        ] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            let write = |out: &mut bytes::BytesMut, o: &FormatOptions| {
                date.to_sql_text(&Type::DATE, out, o).unwrap();
            };
            assert_eq!(text(&write, &iso), date.format("%Y-%m-%d").to_string());
            assert_eq!(text(&write, &german), date.format("%d.%m.%Y").to_string());
        }
        assert_eq!(
            text(
                &|out, o| {
                    NaiveDate::from_ymd_opt(1996, 1, 2)
                        .unwrap()
                        .to_sql_text(&Type::DATE, out, o)
                        .unwrap();
                },
                &iso
            ),
            "1996-01-02"
        );
        for (date, nanos) in [
            ((2026, 11, 27), 123_456_789),
            ((1970, 1, 1), 0),
            ((9999, 12, 31), 999_999_999),
            ((10000, 1, 1), 5_000),
            ((2016, 12, 31), 1_500_000_000), // a leap second
        ] {
            let ts: NaiveDateTime = NaiveDate::from_ymd_opt(date.0, date.1, date.2)
                .unwrap()
                .and_hms_nano_opt(23, 59, 59, nanos)
                .unwrap();
            let write = |out: &mut bytes::BytesMut, o: &FormatOptions| {
                ts.to_sql_text(&Type::TIMESTAMP, out, o).unwrap();
            };
            assert_eq!(
                text(&write, &iso),
                ts.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
            );
        }
    }

    #[test]
    fn integers_read_as_display_writes_them() {
        use pgwire::api::Type;
        use pgwire::types::ToSqlText;
        use pgwire::types::format::FormatOptions;
        let o = FormatOptions::default();
        let text = |write: &dyn Fn(&mut bytes::BytesMut)| {
            let mut out = bytes::BytesMut::new();
            write(&mut out);
            String::from_utf8(out.to_vec()).unwrap()
        };
        for v in [i64::MIN, -1, 0, 7, 1_500_000, i64::MAX] {
            let t = text(&|out| {
                v.to_sql_text(&Type::INT8, out, &o).unwrap();
            });
            assert_eq!(t, v.to_string());
        }
        for v in [i32::MIN, -42, 0, i32::MAX] {
            let t = text(&|out| {
                v.to_sql_text(&Type::INT4, out, &o).unwrap();
            });
            assert_eq!(t, v.to_string());
        }
        let t = text(&|out| {
            i16::MIN.to_sql_text(&Type::INT2, out, &o).unwrap();
        });
        assert_eq!(t, "-32768");
    }

    #[test]
    fn sizes_are_pretty_as_postgres_prints_them() {
        // What PostgreSQL 15 answers to `SELECT pg_size_pretty(n)`.
        for (n, text) in [
            (0, "0 bytes"),
            (10239, "10239 bytes"),
            (10240, "10 kB"),
            (20971, "20 kB"),
            (1_000_000, "977 kB"),
            (10_485_760, "10 MB"),
            (1_000_000_000, "954 MB"),
            (1_000_000_000_000, "931 GB"),
            (-10240, "-10 kB"),
            (i64::MAX, "8192 PB"),
        ] {
            assert_eq!(super::size_pretty(n), text, "{n}");
        }
    }
}
