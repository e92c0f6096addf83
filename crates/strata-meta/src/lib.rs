//! Strata's metadata store: what happened, not what should happen.
//!
//! It records state; definitions live in the project directory. Models, sources,
//! schedules and grants are files in the project, read by `strata-project`; this crate
//! keeps what happened to them: which commands ran, when, for whom and how they ended, plus
//! small settings. It holds no definition of its own, so losing the metadata database loses
//! history (and the users and tokens below), never the project.
//!
//! It also holds the live access state a server enforces: users, roles and their members,
//! grants, row policies, column masks and API tokens, plus the audit log of who ran what
//! and how it ended. `access.yml` in the project declares roles, grants, policies and masks
//! and is applied to this state, so the declarations still live in the project and can be
//! applied again; users and tokens exist only here, created at run time. Every change to
//! the access state increases
//! [`MetaStore::access_version`], which servers poll to reload policies and notice revoked
//! tokens within seconds. Passwords and token secrets never reach this crate: callers pass
//! argon2 PHC strings and SHA-256 hashes.
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

mod access;
mod error;
mod migrations;
mod run;
mod sql;
mod store;

pub use access::{
    ApiToken, AuditEntry, AuditFilter, AuditOutcome, AuditRecord, ColumnMask, Grant, GrantRecord,
    NewToken, NewUser, ObjectKind, Privilege, Role, RowPolicy, TokenId, User,
};
pub use error::{Error, Result};
pub use run::{
    LineageEdge, NewRun, NodeResult, RunFilter, RunId, RunOutcome, RunRecord, RunStatus,
    SchemaChange,
};
pub use store::MetaStore;
