//! The lake: Delta tables on object storage. This crate is the only writer of the lake.
//!
//! ```text
//!  connectors / engine ──Arrow batches or a DataFusion plan──▶ Lake::write / merge / delete
//!                                                                   │ one Delta commit each
//!  <lake root>/<namespace>/<table>/_delta_log/…  ◀──────────────────┘
//!  <lake root>/_strata/views/<namespace>/<view>.json   (persisted SQL views)
//! ```
//!
//! Namespaces (`raw`, `staging`, `marts`, any identifier) are folders, created on first write;
//! tables are Delta tables inside them. Every operation is one atomic Delta commit: readers see
//! the table before or after it, never a mix, and a process killed mid-write leaves the table
//! at its previous version (files written but not committed are invisible and removed by
//! [`Lake::vacuum`]).
//!
//! ```no_run
//! # async fn f() -> strata_lake::Result<()> {
//! use strata_lake::{Lake, WriteMode};
//! let lake = Lake::open(&url::Url::parse("file:///tmp/lake/").unwrap(), Default::default()).await?;
//! let t = "raw.orders".parse().unwrap();
//! # let batches = vec![];
//! lake.write_batches(&t, batches, WriteMode::Append, &Default::default()).await?;
//! for c in lake.history(&t, Some(10)).await? { println!("{} {}", c.version, c.operation); }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod error;
mod lake;
mod object_stores;
mod views;

pub use deltalake;
pub use deltalake::DeltaTable;
pub use error::{Error, Result};
pub use lake::{
    Commit, CommitStamp, LOOKUP_DICTIONARY_BYTES, LOOKUP_PAGE_ROWS, Lake, MergeClause,
    MergeOutcome, OptimizeReport, TableInfo, VacuumReport, WriteMode, WriteOptions, WriteOutcome,
};
pub use object_stores::open_store;
pub use strata_types::TableName;
pub use views::ViewDef;
