//! Sources: connectors that read source systems into Arrow, and the ingestion pipeline
//! that commits what they read to the lake together with the stream's state.
//!
//! ```text
//!  sources/<name>.yml ──strata-project──▶ SourceDef ──connect──▶ dyn Source
//!                                                            │ read(stream, since cursor)
//!                                                            ▼
//!                                              Arrow batches (bounded memory)
//!                                                            │ ingest::run_stream
//!                                                            ▼
//!          strata-lake: one Delta commit holding the rows AND the new cursor
//! ```
//!
//! Connectors never write to the lake; only [`ingest`] hands their batches to
//! `strata-lake`. Each connector is a module behind a cargo feature (`postgres`, …) and
//! listed in [`connect`].
//!
//! A database source with `clone: true` declares no table by table: [`clone::expand_clone`]
//! turns each table the source offers into a stream before the run.
#![warn(missing_docs)]

pub mod clone;
#[cfg(feature = "files")]
pub mod files;
pub mod ingest;
pub mod json;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "rest")]
pub mod rest;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use futures::Stream;
use strata_project::{SourceDef, StreamDef};
use strata_types::{Classify, ErrorClass};

/// Batches read from a source.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// A table or query a source offers, as discovered.
#[derive(Debug, Clone)]
pub struct DiscoveredStream {
    /// `schema.table`.
    pub table: String,
    /// Columns as Strata will store them.
    pub schema: SchemaRef,
    /// The source's own type names, column by column.
    pub source_types: Vec<String>,
    /// Primary key columns, in key order.
    pub primary_key: Vec<String>,
    /// What kind of relation it is; `clone: true` copies [`TableKind::Table`]s only.
    pub kind: TableKind,
    /// The table's comment at the source, if any.
    pub description: Option<String>,
}

/// The kind of a discovered relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A table holding its own rows (or a stream of a non-database source).
    Table,
    /// A view, materialized view or foreign table: rows computed from, or held in,
    /// other relations.
    View,
    /// A partition of a partitioned table; its rows are read through the parent.
    Partition,
}

/// A source system.
#[async_trait]
pub trait Source: Send + Sync {
    /// Connects and runs a trivial query; the error says what is wrong in plain words.
    async fn check(&self) -> Result<()>;
    /// Lists the tables the source offers, with their columns and keys.
    async fn discover(&self) -> Result<Vec<DiscoveredStream>>;
    /// Reads a stream: every row, or those whose cursor is at or past `ctx.since`.
    ///
    /// Connectors that keep state of their own (files already loaded, the last id of a
    /// Redis stream) find it in `ctx.saved` and report the new state, and any rows they
    /// could not read, through `ctx.report` while the batches are consumed.
    async fn read(&self, stream: &StreamDef, ctx: &ReadContext)
    -> Result<(SchemaRef, BatchStream)>;
}

/// What a read starts from, and where the connector reports back.
#[derive(Debug, Clone, Default)]
pub struct ReadContext {
    /// Cursor value of the last committed load (incremental streams), in the literal
    /// syntax of the source; rows at or past it are read.
    pub since: Option<String>,
    /// The connector's own state as committed with the previous load.
    pub saved: Option<serde_json::Value>,
    /// Filled by the connector while its batches are consumed.
    pub report: std::sync::Arc<ReadReport>,
}

/// The most rejected rows one read may hold before it stops: past this the input is
/// almost certainly read with the wrong format options.
pub const MAX_REJECTED_ROWS: usize = 100_000;

/// A row the connector could not read; it lands in `<destination>__rejected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    /// File path or URL the row came from.
    pub location: String,
    /// 1-based line (files) or record number (APIs), when known.
    pub line: Option<u64>,
    /// Why it was rejected, in plain words.
    pub reason: String,
    /// The row as read (truncated to 4 KiB).
    pub raw: String,
}

/// State and rejected rows a connector reports while its batches are consumed.
#[derive(Debug, Default)]
pub struct ReadReport {
    state: Mutex<Option<serde_json::Value>>,
    rejected: Mutex<Vec<RejectedRow>>,
    rejected_total: AtomicU64,
    expected_rows: AtomicU64,
}

impl ReadReport {
    /// Sets the state to commit with the rows read (replaces any earlier value).
    pub fn set_state(&self, state: serde_json::Value) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
    }

    /// The state reported so far.
    pub fn state(&self) -> Option<serde_json::Value> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a rejected row. Errors once more than [`MAX_REJECTED_ROWS`] are held.
    pub fn reject(&self, mut row: RejectedRow) -> std::result::Result<(), String> {
        if row.raw.len() > 4096 {
            let mut cut = 4096;
            while !row.raw.is_char_boundary(cut) {
                cut -= 1;
            }
            row.raw.truncate(cut);
        }
        let total = self.rejected_total.fetch_add(1, Ordering::Relaxed) + 1;
        if total as usize > MAX_REJECTED_ROWS {
            return Err(format!(
                "more than {MAX_REJECTED_ROWS} rows were rejected (the last: {}{}: {}); the format options probably do not match the input",
                row.location,
                row.line.map(|l| format!(":{l}")).unwrap_or_default(),
                row.reason
            ));
        }
        self.rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(row);
        Ok(())
    }

    /// Sets how many rows the read expects to return (an estimate, such as the database's
    /// table statistics), for progress displays. Set it before `read` returns.
    pub fn set_expected_rows(&self, rows: u64) {
        self.expected_rows.store(rows, Ordering::Relaxed);
    }

    /// The expected row count; 0 when unknown.
    pub fn expected_rows(&self) -> u64 {
        self.expected_rows.load(Ordering::Relaxed)
    }

    /// How many rows were rejected so far.
    pub fn rejected_count(&self) -> u64 {
        self.rejected_total.load(Ordering::Relaxed)
    }

    /// Takes the rejected rows held so far.
    pub fn take_rejected(&self) -> Vec<RejectedRow> {
        std::mem::take(&mut *self.rejected.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Opens the connector for a source definition.
pub fn connect(def: &SourceDef) -> Result<Box<dyn Source>> {
    match def.kind.as_str() {
        #[cfg(feature = "postgres")]
        "postgres" => Ok(Box::new(postgres::PostgresSource::new(def)?)),
        #[cfg(feature = "mysql")]
        "mysql" => Ok(Box::new(mysql::MysqlSource::new(def)?)),
        #[cfg(feature = "rest")]
        "rest" => Ok(Box::new(rest::RestSource::new(def)?)),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Box::new(sqlite::SqliteSource::new(def)?)),
        #[cfg(feature = "redis")]
        "redis" => Ok(Box::new(redis::RedisSource::new(def)?)),
        #[cfg(feature = "files")]
        "files" => Ok(Box::new(files::FilesSource::new(def)?)),
        other => Err(Error::config(
            &def.name,
            &format!("source type `{other}` is not available in this build of Strata"),
        )),
    }
}

/// Errors of sources and ingestion; each names the source and, where known, the stream.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The definition cannot work.
    #[error("source `{source_name}`: {message}")]
    Config {
        /// The source.
        source_name: String,
        /// What to fix.
        message: String,
    },
    /// Cannot reach or log in to the source.
    #[error("source `{source_name}`: {message}")]
    Connect {
        /// The source.
        source_name: String,
        /// Cause in plain words (URL redacted).
        message: String,
        /// Whether trying again may help (network) or not (credentials).
        retryable: bool,
    },
    /// A read failed.
    #[error("source `{source_name}`{}: {message}", stream.as_ref().map(|s| format!(", stream `{s}`")).unwrap_or_default())]
    Read {
        /// The source.
        source_name: String,
        /// The stream.
        stream: Option<String>,
        /// What failed.
        message: String,
    },
    /// The source's columns changed in a way the stream's policy stops at; nothing was
    /// written.
    #[error("source `{source_name}`, stream `{stream}`: {message}")]
    SchemaChanged {
        /// The source.
        source_name: String,
        /// The stream.
        stream: String,
        /// What changed (each with action `stopped`).
        changes: Vec<ingest::SchemaChange>,
        /// What changed and what to do, in words.
        message: String,
    },
    /// Writing to the lake failed; nothing of the stream was committed.
    #[error("source `{source_name}`, stream `{stream}`: {error}")]
    Lake {
        /// The source.
        source_name: String,
        /// The stream.
        stream: String,
        /// The lake's error.
        error: Box<strata_lake::Error>,
    },
}

impl Error {
    pub(crate) fn config(source: &str, message: &str) -> Self {
        Error::Config {
            source_name: source.to_string(),
            message: message.to_string(),
        }
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Config { .. } => ErrorClass::User,
            Error::Connect { retryable, .. } => {
                if *retryable {
                    ErrorClass::External
                } else {
                    ErrorClass::User
                }
            }
            Error::Read { .. } => ErrorClass::External,
            Error::SchemaChanged { .. } => ErrorClass::User,
            Error::Lake { error, .. } => error.class(),
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Error::Connect { retryable, .. } => *retryable,
            Error::Lake { error, .. } => error.retryable(),
            _ => false,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
