//! dbt-compatible modeling: loads a dbt project, renders its Jinja, builds the DAG, selects
//! nodes and writes `manifest.json` and compiled SQL — everything before SQL runs.
//!
//! ```text
//! dbt_project.yml, models/, seeds/, snapshots/, tests/, macros/, packages/
//!        │ project.rs (load files, yml properties, folder configs)
//!        ▼
//!   DbtProject ──graph.rs (parse phase: render with capturing ref/source/config)──▶ Manifest
//!                                                                                  │ nodes, edges,
//!                                  select.rs (--select/--exclude, selectors.yml) ◀─┤ tests, sources
//!                                                                                  ▼
//!          jinja.rs (compile phase: real relation names, is_incremental) ──▶ compiled SQL
//!          manifest.rs ──▶ target/manifest.json, target/compiled/<project>/<path>
//! ```
//!
//! The execution layer (materializations, tests, snapshots) builds on [`Manifest`]:
//! [`Manifest::load`] parses a project, [`Manifest::compile_node`] renders one node's SQL with
//! ephemeral models inlined, [`Manifest::topo_order`] gives the build order, and
//! [`select::select`] picks the nodes of a command. Every relation lands in the target schema
//! [`DEFAULT_TARGET_SCHEMA`] (or `<target schema>_<custom schema>`, as dbt's default
//! `generate_schema_name` does) of the catalog [`TARGET_DATABASE`].
//!
//! ```no_run
//! use strata_models::{Manifest, LoadOptions};
//! let manifest = Manifest::load(std::path::Path::new("shop"), &LoadOptions::default()).unwrap();
//! for id in manifest.topo_order().unwrap() {
//!     let sql = manifest.compile_node(&id, &Default::default()).unwrap();
//!     println!("-- {id}\n{sql}");
//! }
//! ```
//!
//! This crate has no cargo features and never touches the lake or the engine.
#![warn(missing_docs)]

mod config;
mod crossdb;
pub mod graph;
pub mod jinja;
mod manifest;
pub mod project;
pub mod query;
pub mod select;

use std::path::PathBuf;

pub use config::NodeConfig;
pub use graph::{
    Column, CompileOptions, DependsOn, EventTimeWindow, LoadOptions, MacroDef, Manifest, Node,
    Relation, ResourceType, TestMetadata, UnitTest,
};
pub use manifest::{write_compiled, write_manifest};
pub use project::DbtProject;
pub use query::{QueryResult, QueryRunner};
use strata_types::{Classify, ErrorClass};

/// The name of the dbt project file.
pub const DBT_PROJECT_FILE: &str = "dbt_project.yml";
/// The target schema models land in unless a model sets a custom `schema` (then dbt's default
/// `generate_schema_name` gives `<target schema>_<custom>`).
pub const DEFAULT_TARGET_SCHEMA: &str = "analytics";
/// The target's database: the engine's catalog name.
pub const TARGET_DATABASE: &str = "strata";
/// The target's adapter type as `target.type` shows it (dispatch looks for `strata__<name>`).
pub const ADAPTER_TYPE: &str = "strata";

/// Errors raised while loading, rendering, building the graph or selecting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Something wrong at a place in a user's file: YAML syntax, a Jinja error, an unknown
    /// `ref`, a bad test definition.
    #[error("{}:{line}:{column}: {message}", path.display())]
    At {
        /// The file (relative to the project root when inside it).
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: u64,
        /// 1-based column (0 when unknown).
        column: u64,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The models depend on each other in a circle.
    #[error(
        "dependency cycle: {}; break it by removing one of these `ref`s",
        members.join(" → ")
    )]
    Cycle {
        /// The nodes of the cycle, in order, the first repeated at the end.
        members: Vec<String>,
    },
    /// A `--select`/`--exclude` expression or `selectors.yml` entry is not valid.
    #[error("selection `{expr}`: {message}")]
    Selection {
        /// The expression as written.
        expr: String,
        /// What is wrong.
        message: String,
    },
    /// A value passed by the caller (`--vars`, `--state`) is not valid.
    #[error("{what}: {message}")]
    Input {
        /// Which input.
        what: String,
        /// What is wrong.
        message: String,
    },
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Read { .. } | Error::Write { .. } => ErrorClass::External,
            _ => ErrorClass::User,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn at(
        path: impl Into<PathBuf>,
        line: u64,
        column: u64,
        message: impl Into<String>,
    ) -> Self {
        Error::At {
            path: path.into(),
            line,
            column,
            message: message.into(),
        }
    }
}
