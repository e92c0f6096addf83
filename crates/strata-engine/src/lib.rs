//! The warehouse: SQL over the lake, with Apache DataFusion.
//!
//! ```text
//!   SQL text ──StrataDialect──▶ statements
//!      │  UPDATE / DELETE / MERGE / TRUNCATE / ALTER ──▶ strata-lake (one Delta commit each)
//!      │  CREATE / DROP / INSERT ──DataFusion plan──▶ strata-lake
//!      └─ SELECT / EXPLAIN / SHOW / COPY ──▶ DataFusion over the lake catalog ──▶ Arrow batches
//! ```
//!
//! The catalog `strata` exposes every lake namespace as a schema and every Delta table or
//! stored view as a table; unqualified names resolve to the `public` namespace. Files can be
//! queried in place: `SELECT * FROM 'data/*.parquet'` (also CSV and JSON).
//!
//! Memory is bounded by `engine.memory_limit`: sorts, aggregations and joins spill to
//! `engine.spill_dir` instead of failing.
//!
//! ```no_run
//! # async fn f() -> strata_engine::Result<()> {
//! let project = strata_project::Project::discover(std::path::Path::new("."), None).unwrap();
//! let lake = strata_lake::Lake::open(&project.settings.lake.url, Default::default()).await?;
//! let engine = strata_engine::Engine::new(lake, &project.settings.engine).await?;
//! let session = engine.session().await?;
//! session.sql("CREATE TABLE raw.t AS SELECT 1 AS x").await?;
//! let rows = session.sql("SELECT * FROM raw.t VERSION AS OF 0").await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod access;
mod catalog;
mod compat;
mod dialect;
mod dml;
mod engine;
mod error;
mod late;
pub mod lineage;
mod lookup;
mod mask_fn;
mod provider;
mod time_travel;
mod views;

pub use access::{
    Access, AccessPolicy, ColumnMask, GrantRule, MaskKind, Principal, Privilege, RowFilter,
    Securable,
};
pub use catalog::CATALOG;
pub use datafusion;
pub use dialect::StrataDialect;
pub use engine::{Engine, Session, StatementResult};
pub use error::{Error, Result, find_denial as error_denial};
pub use lookup::{KeyLookup, MAX_LOOKUP_FILES};

/// The namespace unqualified table names resolve to.
pub const DEFAULT_NAMESPACE: &str = "public";
