//! Strata's metadata store: what happened, not what should happen.
//!
//! It records state; definitions live in the project directory. Models, sources,
//! schedules and grants are files in the project, read by `strata-project`; this crate
//! keeps what happened to them: which commands ran, when, for whom and how they ended, plus
//! small settings. It never holds a definition, so losing the metadata database loses
//! history, never the project.
//!
//! ```text
//!  project dir ──► strata-project ──► strata-engine ──► strata-lake
//!                                          │
//!        strata (CLI, scheduler) ──────────┴──► strata-meta ──► SQLite file (default)
//!                                                          └──► PostgreSQL (by URL)
//! ```
//!
//! One [`MetaStore`] serves both backends with the same code: SQLite (`sqlite://<path>`)
//! for a single machine, PostgreSQL (`postgres://…`) when several processes or hosts share
//! the state. Each backend has its own migration directory (`migrations/sqlite/`,
//! `migrations/postgres/`, files `NNNN_<what>.sql`), embedded in the binary and applied by
//! [`MetaStore::connect`]; `_sqlx_migrations` records what ran.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> strata_meta::Result<()> {
//! use strata_meta::{MetaStore, NewRun, RunFilter, RunOutcome, RunStatus};
//!
//! let store = MetaStore::connect("sqlite::memory:").await?;
//! let id = store
//!     .start_run(NewRun {
//!         command: "run".into(),
//!         args: "--select orders".into(),
//!         principal: "alice".into(),
//!         environment: Some("dev".into()),
//!     })
//!     .await?;
//! store.finish_run(&id, RunOutcome::success(Some(42))).await?;
//!
//! let runs = store.runs(RunFilter::new().command("run")).await?;
//! assert_eq!(runs[0].status, RunStatus::Success);
//! assert_eq!(runs[0].rows, Some(42));
//! store.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! The crate has no cargo features; both drivers are always built.
#![warn(missing_docs)]

mod error;
mod migrations;
mod run;
mod sql;
mod store;

pub use error::{Error, Result};
pub use run::{
    LineageEdge, NewRun, NodeResult, RunFilter, RunId, RunOutcome, RunRecord, RunStatus,
    SchemaChange,
};
pub use store::MetaStore;
