use deltalake::DeltaTableError;
use strata_types::{Classify, ErrorClass, NameError, TableName};

/// Errors raised by lake operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The table does not exist.
    #[error("table `{table}` does not exist{hint}")]
    TableNotFound {
        /// The missing table.
        table: TableName,
        /// ". Did you mean `…`?" or a listing hint.
        hint: String,
    },
    /// The table already exists.
    #[error("table `{0}` already exists")]
    TableExists(TableName),
    /// A view with this name exists where a table is expected, or the reverse.
    #[error("`{0}` is a view; {1}")]
    IsAView(TableName, &'static str),
    /// The view does not exist.
    #[error("view `{0}` does not exist")]
    ViewNotFound(TableName),
    /// A bad name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The data does not fit the table's schema.
    #[error("cannot write to `{table}`: {message}")]
    SchemaMismatch {
        /// The target.
        table: TableName,
        /// What differs.
        message: String,
    },
    /// A version or timestamp that the table's history does not hold.
    #[error("`{table}` has no version {what}; its history holds versions {oldest} to {latest}")]
    NoSuchVersion {
        /// The table.
        table: TableName,
        /// The requested version or timestamp.
        what: String,
        /// Oldest retained version.
        oldest: u64,
        /// Latest version.
        latest: u64,
    },
    /// Vacuum asked for a retention shorter than allowed.
    #[error(
        "vacuum retention of {} is shorter than the table's minimum of {}: files still needed for time travel or by running readers could be deleted. Pass a longer retention, or `--force` if you are sure no reader needs them",
        human_duration(*requested),
        human_duration(*minimum)
    )]
    RetentionTooShort {
        /// What was asked.
        requested: std::time::Duration,
        /// The guard.
        minimum: std::time::Duration,
    },
    /// The lake location is not usable.
    #[error("lake at {url}: {message}")]
    Location {
        /// The lake URL.
        url: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Invalid argument to an operation (a predicate, a column).
    #[error("{0}")]
    Invalid(String),
    /// Another writer committed first and retries ran out.
    #[error(
        "`{table}` was changed by another writer while this one ran ({message}); run the command again"
    )]
    Conflict {
        /// The table.
        table: TableName,
        /// Details.
        message: String,
    },
    /// Failure reported by Delta Lake (storage, log, parquet).
    #[error("{context}: {source}")]
    Delta {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<DeltaTableError>,
    },
    /// Object store failure.
    #[error("{context}: {source}")]
    Store {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: deltalake::ObjectStoreError,
    },
    /// Data (view definitions) that cannot be decoded.
    #[error("{0}")]
    Corrupt(String),
}

impl Error {
    pub(crate) fn delta(context: impl Into<String>) -> impl FnOnce(DeltaTableError) -> Error {
        let context = context.into();
        move |source| Error::Delta {
            context,
            source: Box::new(source),
        }
    }

    pub(crate) fn store(
        context: impl Into<String>,
    ) -> impl FnOnce(deltalake::ObjectStoreError) -> Error {
        let context = context.into();
        move |source| Error::Store { context, source }
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::TableNotFound { .. }
            | Error::TableExists(_)
            | Error::IsAView(..)
            | Error::ViewNotFound(_)
            | Error::Name(_)
            | Error::SchemaMismatch { .. }
            | Error::NoSuchVersion { .. }
            | Error::RetentionTooShort { .. }
            | Error::Location { .. }
            | Error::Invalid(_) => ErrorClass::User,
            Error::Conflict { .. } | Error::Store { .. } => ErrorClass::External,
            Error::Delta { source, .. } => match source.as_ref() {
                DeltaTableError::ObjectStore { .. } | DeltaTableError::Io { .. } => {
                    ErrorClass::External
                }
                DeltaTableError::SchemaMismatch { .. }
                | DeltaTableError::InvalidPartitionFilter { .. }
                | DeltaTableError::Generic(_) => ErrorClass::User,
                _ => ErrorClass::Internal,
            },
            Error::Corrupt(_) => ErrorClass::Internal,
        }
    }

    fn retryable(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::Store { .. })
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `168 h`, `1 h 30 min`, `45 min`, `20 s`: exact, in the largest units that fit.
pub(crate) fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h} h"));
    }
    if m > 0 {
        parts.push(format!("{m} min"));
    }
    if s > 0 || parts.is_empty() {
        parts.push(format!("{s} s"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod duration_tests {
    #[test]
    fn durations_read_exactly() {
        use std::time::Duration;
        assert_eq!(
            super::human_duration(Duration::from_secs(168 * 3600)),
            "168 h"
        );
        assert_eq!(
            super::human_duration(Duration::from_secs(5400)),
            "1 h 30 min"
        );
        assert_eq!(super::human_duration(Duration::from_secs(2700)), "45 min");
        assert_eq!(super::human_duration(Duration::ZERO), "0 s");
    }
}
