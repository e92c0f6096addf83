//! Serving: Strata's warehouse to BI tools, analysts and applications.
//!
//! ```text
//!  psql / JDBC / BI ──Postgres wire (6875)──┐
//!  apps / curl ───────REST (8787) ───────────┤
//!  ADBC / Arrow ──────Flight SQL (50051) ────┤
//!                                          ├─► login (users, API tokens: strata-meta)
//!                                          │     └─► engine session for the principal
//!                                          │           grants · row policies · masks
//!                                          └─► strata-engine ─► strata-lake
//! ```
//!
//! Every surface opens an engine session for an authenticated principal
//! ([`strata_engine::Engine::session_for`]); grants, row policies and column masks are
//! applied in the session's plans, so no surface can bypass them. Only this crate speaks
//! network protocols.
#![warn(missing_docs)]

mod access_sql;
pub mod audit;
pub mod auth;
mod bind;
mod client_sql;
pub mod errors;
mod flight;
mod pg;
pub mod policy;
pub mod rest;
pub mod scram;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use strata_engine::Engine;
use strata_meta::MetaStore;
use strata_types::{Classify, ErrorClass};
use tokio::net::TcpListener;

/// The `server_version` reported to Postgres clients. Drivers choose their catalog queries
/// by it, so it names a modern PostgreSQL.
pub const SERVER_VERSION: &str = "16.6 (Strata)";

/// Default address of the Postgres wire protocol.
pub const DEFAULT_PG_ADDR: &str = "127.0.0.1:6875";

/// Default address of the HTTP surfaces (REST API).
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8787";

/// Default address of Arrow Flight SQL.
pub const DEFAULT_FLIGHT_ADDR: &str = "127.0.0.1:50051";

/// Errors of the serving layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Wrong user, password or token (deliberately vague).
    #[error("authentication failed for user `{0}`")]
    AuthFailed(String),
    /// The metadata store.
    #[error(transparent)]
    Meta(#[from] strata_meta::Error),
    /// The engine.
    #[error(transparent)]
    Engine(#[from] strata_engine::Error),
    /// A listener or certificate problem, with what to check.
    #[error("{0}")]
    Setup(String),
    /// A bug.
    #[error("{0}")]
    Internal(String),
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::AuthFailed(_) | Error::Setup(_) => ErrorClass::User,
            Error::Meta(e) => e.class(),
            Error::Engine(e) => e.class(),
            Error::Internal(_) => ErrorClass::Internal,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A certificate chain and private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Postgres wire protocol address.
    pub pg_addr: SocketAddr,
    /// HTTP address (REST API); `None` serves no HTTP.
    pub http_addr: Option<SocketAddr>,
    /// Arrow Flight SQL address; `None` serves no Flight SQL.
    pub flight_addr: Option<SocketAddr>,
    /// TLS for every surface; without it, credentials are accepted from loopback clients only.
    pub tls: Option<TlsFiles>,
    /// Bounds of the REST API.
    pub rest: rest::RestLimits,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            pg_addr: DEFAULT_PG_ADDR.parse().expect("a valid address"),
            http_addr: Some(DEFAULT_HTTP_ADDR.parse().expect("a valid address")),
            flight_addr: Some(DEFAULT_FLIGHT_ADDR.parse().expect("a valid address")),
            tls: None,
            rest: rest::RestLimits::default(),
        }
    }
}

/// A running server: its bound addresses, and a handle to stop it.
#[derive(Debug)]
pub struct Server {
    /// Where the Postgres wire protocol listens.
    pub pg_addr: SocketAddr,
    /// Where the REST API listens.
    pub http_addr: Option<SocketAddr>,
    /// Where Flight SQL listens.
    pub flight_addr: Option<SocketAddr>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    audit: audit::AuditLog,
}

impl Server {
    /// Binds every surface and starts serving in the background.
    pub async fn start(engine: Engine, meta: Arc<MetaStore>, opts: &ServeOptions) -> Result<Self> {
        let tls = match &opts.tls {
            Some(files) => Some(tls_config(files)?),
            None => None,
        };
        let with_alpn = |protocols: &[&[u8]]| {
            tls.as_ref().map(|config| {
                let mut config = config.clone();
                config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
                tokio_rustls::TlsAcceptor::from(Arc::new(config))
            })
        };
        let policies = policy::Policies::load(Arc::clone(&meta)).await?;
        let watcher = policies.watch();
        let (audit, audit_writer) = audit::AuditLog::start(Arc::clone(&meta));
        let shared = Arc::new(pg::Shared {
            engine,
            auth: auth::Authenticator::new(Arc::clone(&meta)),
            meta,
            policies,
            connections: Arc::new(pgwire::api::ConnectionManager::new()),
            audit: audit.clone(),
            // PostgreSQL 17 clients may start TLS directly (sslnegotiation=direct).
            tls: with_alpn(&[b"postgresql"]),
        });
        let listener = TcpListener::bind(opts.pg_addr).await.map_err(|e| {
            Error::Setup(format!(
                "cannot listen on {} for the Postgres protocol: {e}; choose another address with --pg-addr",
                opts.pg_addr
            ))
        })?;
        let pg_addr = listener
            .local_addr()
            .map_err(|e| Error::Setup(e.to_string()))?;
        let http = match opts.http_addr {
            Some(addr) => {
                let l = TcpListener::bind(addr).await.map_err(|e| {
                    Error::Setup(format!(
                        "cannot listen on {addr} for HTTP: {e}; choose another address with --http-addr"
                    ))
                })?;
                let a = l.local_addr().map_err(|e| Error::Setup(e.to_string()))?;
                Some((l, a))
            }
            None => None,
        };
        let flight = match opts.flight_addr {
            Some(addr) => {
                let l = TcpListener::bind(addr).await.map_err(|e| {
                    Error::Setup(format!(
                        "cannot listen on {addr} for Flight SQL: {e}; choose another address with --flight-addr"
                    ))
                })?;
                let a = l.local_addr().map_err(|e| Error::Setup(e.to_string()))?;
                Some((l, a))
            }
            None => None,
        };
        let flight_tls = match &opts.tls {
            Some(files) => Some((
                std::fs::read(&files.cert).map_err(|e| Error::Setup(e.to_string()))?,
                std::fs::read(&files.key).map_err(|e| Error::Setup(e.to_string()))?,
            )),
            None => None,
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let mut tasks = vec![watcher, audit_writer];
        let mut http_addr = None;
        if let Some((listener, addr)) = http {
            let router = rest::router(Arc::clone(&shared), opts.rest.clone());
            tasks.push(tokio::spawn(rest::serve(
                listener,
                router,
                with_alpn(&[b"http/1.1"]),
                until_stopped(),
            )));
            http_addr = Some(addr);
        }
        let mut flight_addr = None;
        if let Some((listener, addr)) = flight {
            let service = flight::StrataFlight::new(Arc::clone(&shared), flight_tls.is_some());
            tasks.push(tokio::spawn(flight::serve(
                listener,
                service,
                flight_tls,
                until_stopped(),
            )));
            flight_addr = Some(addr);
        }
        tasks.push(tokio::spawn(pg::serve(listener, shared, until_stopped())));
        Ok(Self {
            pg_addr,
            http_addr,
            flight_addr,
            stop,
            tasks,
            audit,
        })
    }

    /// Stops accepting connections; connections already open end with their clients.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.audit.flush(Duration::from_secs(2)).await;
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// A TLS configuration from PEM files (certificate chain and key).
fn tls_config(files: &TlsFiles) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<std::result::Result<_, _>>())
        .map_err(|e| {
            Error::Setup(format!(
                "cannot read the TLS certificate {}: {e}",
                files.cert.display()
            ))
        })?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        Error::Setup(format!(
            "cannot read the TLS key {}: {e}",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Setup(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Setup(format!("TLS certificate and key do not match: {e}")))
}
