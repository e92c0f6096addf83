//! Shared vocabulary of every Strata crate: error classes, table names, redaction.
//!
//! ```text
//! strata-types  ◀── every other crate (no IO here, ever)
//! ```
//!
//! Errors are typed per crate; each crate's error implements [`Classify`] so that only
//! the edge (the CLI, later the servers) maps a failure to an exit code, an HTTP status
//! or a SQLSTATE.
//!
//! ```
//! use strata_types::{ErrorClass, TableName};
//! let t: TableName = "raw.orders".parse().unwrap();
//! assert_eq!(t.namespace, "raw");
//! assert_eq!(ErrorClass::User.exit_code(), 1);
//! ```
#![warn(missing_docs)]

mod names;
mod redact;

pub use names::{NameError, TableName, validate_identifier};
pub use redact::{Redactor, redact_url_password};

/// Who has to act on a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The input was wrong: a file, an argument, a query. The message says how to fix it.
    User,
    /// Something outside Strata failed: a database, object storage, the network.
    External,
    /// A bug or an unexpected state inside Strata.
    Internal,
}

impl ErrorClass {
    /// The process exit code used by the CLI for this class (documented in `strata --help`).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorClass::User => 1,
            ErrorClass::External => 3,
            ErrorClass::Internal => 4,
        }
    }
}

/// Exit code when the user interrupted the command (Ctrl-C): nothing was committed.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Implemented by every crate's error type.
pub trait Classify {
    /// Who has to act.
    fn class(&self) -> ErrorClass;
    /// Whether trying again, unchanged, may succeed.
    fn retryable(&self) -> bool {
        false
    }
}
