//! Loads and validates a Strata project: the directory in git that holds `strata.yml`.
//!
//! ```text
//! strata.yml ──parse (strict, file:line:col)──▶ ProjectFile ──select env, interpolate──▶ Settings
//!                                                                         │
//!                          strata-lake / strata-engine / strata-meta ◀────┘
//! ```
//!
//! Parsing is strict: an unknown key, a value of the wrong type or a bad URL is an error that
//! names the file, line and column and says what was expected. Secrets are written as
//! `${env:VAR}` and resolved here; each resolved value is registered with the project's
//! [`Redactor`] so that no message shows it.
//!
//! ```no_run
//! let project = strata_project::Project::discover(std::path::Path::new("."), None).unwrap();
//! println!("{} → lake at {}", project.settings.name, project.settings.lake.url);
//! ```
#![warn(missing_docs)]

pub mod access;
mod config;
mod init;
mod size;
mod sources;

use std::path::{Path, PathBuf};

pub use config::{EngineSettings, LakeSettings, MetadataSettings, Settings};
pub use init::{InitOptions, init_project};
pub use size::parse_size;
pub use sources::{
    BadRowsPolicy, SOURCE_KINDS, SchemaChangePolicy, SourceDef, StreamDef, SyncMode, load_source,
    load_sources,
};
pub use strata_types::Redactor;
use strata_types::{Classify, ErrorClass};

/// The name of the project file.
pub const PROJECT_FILE: &str = "strata.yml";
/// A dbt project file: a directory holding only this is a Strata project with default
/// settings (lake and metadata store under `.strata/`), named after the dbt project.
pub const DBT_PROJECT_FILE: &str = "dbt_project.yml";
/// The folder, inside the project, that holds local state (ignored by git).
pub const STATE_DIR: &str = ".strata";

/// Errors raised while finding, reading or validating a project.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `strata.yml` in the directory or any parent.
    #[error(
        "no Strata project found in {start} or any parent directory. Create one with `strata init <dir>`, or point to one with `--project <dir>`"
    )]
    NotFound {
        /// Where the search started.
        start: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not valid: syntax, unknown key, wrong type, bad value.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: u64,
        /// 1-based column (0 when unknown).
        column: u64,
        /// What is wrong and what is expected.
        message: String,
    },
    /// `--env NAME` names an environment the file does not define.
    #[error("{path}: environment `{name}` is not defined; defined environments: {known}")]
    UnknownEnvironment {
        /// The file.
        path: PathBuf,
        /// The requested name.
        name: String,
        /// Those that exist.
        known: String,
    },
    /// `strata init` into a directory that already holds a project.
    #[error("{0} already contains a Strata project (strata.yml); choose another directory")]
    AlreadyExists(PathBuf),
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

/// A loaded project: where it lives and its validated settings for one environment.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project's root directory (absolute).
    pub root: PathBuf,
    /// Settings resolved for the selected environment.
    pub settings: Settings,
    /// Knows every secret resolved while loading.
    pub redactor: Redactor,
}

impl Project {
    /// Finds the project by walking up from `start` (like git) and loads it.
    pub fn discover(start: &Path, env: Option<&str>) -> Result<Self> {
        let start = absolute(start);
        let mut dir = Some(start.as_path());
        while let Some(d) = dir {
            if d.join(PROJECT_FILE).is_file() || d.join(DBT_PROJECT_FILE).is_file() {
                return Self::load(d, env);
            }
            dir = d.parent();
        }
        Err(Error::NotFound { start })
    }

    /// Loads the project whose root is `root`. Without `strata.yml`, a `dbt_project.yml`
    /// makes it a project with default settings named after the dbt project.
    pub fn load(root: &Path, env: Option<&str>) -> Result<Self> {
        let root = absolute(root);
        let mut path = root.join(PROJECT_FILE);
        if !path.is_file() && root.join(DBT_PROJECT_FILE).is_file() {
            path = root.join(DBT_PROJECT_FILE);
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            let name = config::dbt_project_name(&path, &text)?;
            let redactor = Redactor::new();
            let synthetic = format!("name: {name}\n");
            let settings = config::parse(&path, &root, &synthetic, env, &redactor)?;
            return Ok(Self {
                root,
                settings,
                redactor,
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                start: root.clone(),
            },
            _ => Error::Read {
                path: path.clone(),
                source,
            },
        })?;
        let redactor = Redactor::new();
        let settings = config::parse(&path, &root, &text, env, &redactor)?;
        Ok(Self {
            root,
            settings,
            redactor,
        })
    }

    /// The local state folder (`<root>/.strata`).
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }
}

fn absolute(p: &Path) -> PathBuf {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    normalize(&p)
}

/// Removes `.` and `..` components without touching the file system.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dbt_project_alone_is_a_project_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DBT_PROJECT_FILE),
            "name: jaffle_shop\nprofile: x\nmodels:\n  jaffle_shop: {}\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        let p = Project::discover(&dir.path().join("models"), None).unwrap();
        assert_eq!(p.settings.name, "jaffle_shop");
        assert!(p.settings.lake.url.path().ends_with("/.strata/lake/"));
    }
}
