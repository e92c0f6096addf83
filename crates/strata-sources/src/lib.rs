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
#![warn(missing_docs)]

pub mod ingest;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;

use std::pin::Pin;

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
}

/// A source system.
#[async_trait]
pub trait Source: Send + Sync {
    /// Connects and runs a trivial query; the error says what is wrong in plain words.
    async fn check(&self) -> Result<()>;
    /// Lists the tables the source offers, with their columns and keys.
    async fn discover(&self) -> Result<Vec<DiscoveredStream>>;
    /// Reads a stream: every row, or those whose cursor is at or past `since`.
    async fn read(
        &self,
        stream: &StreamDef,
        since: Option<&str>,
    ) -> Result<(SchemaRef, BatchStream)>;
}

/// Opens the connector for a source definition.
pub fn connect(def: &SourceDef) -> Result<Box<dyn Source>> {
    match def.kind.as_str() {
        #[cfg(feature = "postgres")]
        "postgres" => Ok(Box::new(postgres::PostgresSource::new(def)?)),
        #[cfg(feature = "mysql")]
        "mysql" => Ok(Box::new(mysql::MysqlSource::new(def)?)),
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
