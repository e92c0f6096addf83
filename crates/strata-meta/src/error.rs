//! The crate's one error type.

use std::path::PathBuf;

use sqlx::migrate::MigrateError;
use strata_types::{Classify, ErrorClass, redact_url_password};

use crate::{RunId, RunStatus};

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The forms [`MetaStore::connect`](crate::MetaStore::connect) accepts, for error messages.
const ACCEPTED_URLS: &str = "`sqlite://<path>` (e.g. `sqlite://.strata/meta.db`) or \
     `postgres://<user>[:<password>]@<host>[:<port>]/<database>` (`postgresql://` also works)";

/// Everything that can go wrong in the metadata store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL names no supported backend.
    #[error("unsupported metadata database URL `{url}`; expected {ACCEPTED_URLS}", url = redact_url(.url))]
    UnsupportedUrl {
        /// The URL as given; shown redacted.
        url: String,
    },

    /// The URL has a supported scheme but the driver cannot parse it.
    #[error("invalid {backend} metadata database URL `{url}`: {cause}; expected {ACCEPTED_URLS}",
        url = redact_url(.url), cause = redact_url_password(&sqlx_cause(.source)))]
    InvalidUrl {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// The URL as given; shown redacted.
        url: String,
        /// The driver's complaint.
        source: sqlx::Error,
    },

    /// The directory for a SQLite file could not be created.
    #[error("could not create directory `{}` for the sqlite metadata database: {source}{hint}",
        .path.display(),
        hint = if .source.kind() == std::io::ErrorKind::AlreadyExists { "; a file of that name is in the way" } else { "" })]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// The database could not be opened or reached.
    #[error("could not connect to the {backend} metadata database at {target}: {cause}{hint}",
        cause = sqlx_cause(.source), hint = connect_hint(.backend, .source))]
    Connect {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// The file path, or `host:port` plus database and user.
        target: String,
        /// The driver's error.
        source: sqlx::Error,
    },

    /// The schema migrations could not be applied.
    #[error("could not migrate the {backend} metadata database at {target}: {cause}{hint}",
        cause = migrate_cause(.source), hint = migrate_hint(.source))]
    Migrate {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// As in [`Error::Connect`].
        target: String,
        /// The migrator's error.
        source: MigrateError,
    },

    /// A statement failed.
    #[error("metadata database error in {operation}: {cause}", cause = sqlx_cause(.source))]
    Query {
        /// The store method, e.g. `start_run`.
        operation: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },

    /// No run has this id.
    #[error("run {id} not found in the metadata database")]
    RunNotFound {
        /// The id looked up.
        id: RunId,
    },

    /// The run was finished before.
    #[error("run {id} already finished with status `{status}`; a run is finished only once")]
    RunAlreadyFinished {
        /// The run.
        id: RunId,
        /// Its stored status.
        status: RunStatus,
    },

    /// [`RunOutcome::status`](crate::RunOutcome::status) was `running`.
    #[error("cannot finish run {id} with status `running`; use success, failed or cancelled")]
    UnfinishedOutcome {
        /// The run.
        id: RunId,
    },

    /// Text that should be a run id is not a UUID.
    #[error(
        "invalid run id `{input}`: {source}; a run id is a UUID like `67e55044-10b1-426f-9247-bb680e5fe0c8`"
    )]
    InvalidRunId {
        /// The text given.
        input: String,
        /// Why it is not a UUID.
        source: uuid::Error,
    },

    /// Text that should be a run status is not one.
    #[error("invalid run status `{input}`; expected one of running, success, failed, cancelled")]
    InvalidRunStatus {
        /// The text given.
        input: String,
    },

    /// A user, role or other named thing is already there.
    #[error("{kind} `{name}` already exists")]
    AlreadyExists {
        /// What kind of thing: `user`, `role`, `token hash`.
        kind: &'static str,
        /// Its name.
        name: String,
    },

    /// A user, role or other named thing is not there.
    #[error("{kind} `{name}` not found")]
    NotFound {
        /// What kind of thing: `user` or `role`.
        kind: &'static str,
        /// The name looked up.
        name: String,
    },

    /// Making `member` a member of `role` would make role membership circular.
    #[error("cannot make `{member}` a member of role `{role}`: {reason}; role membership may not form a cycle",
        reason = cycle_reason(.role, .member))]
    RoleCycle {
        /// The role that was to get a member.
        role: String,
        /// The would-be member.
        member: String,
    },

    /// Text that should be a privilege, object kind, audit outcome, name or id is not one.
    #[error("invalid {what} `{input}`; expected {expected}")]
    InvalidValue {
        /// What the text should be, e.g. `privilege`.
        what: &'static str,
        /// The text given.
        input: String,
        /// What is accepted.
        expected: &'static str,
    },

    /// A grant that cannot be stored as given.
    #[error("invalid grant of {privilege} on `{object}` to `{grantee}`: {reason}")]
    InvalidGrant {
        /// The privilege.
        privilege: crate::Privilege,
        /// The object as given.
        object: String,
        /// The grantee.
        grantee: String,
        /// What is wrong.
        reason: &'static str,
    },

    /// A stored value does not decode; the database was edited by hand or by a newer Strata.
    #[error("corrupt metadata: {what}")]
    Corrupt {
        /// What was wrong, naming the row and column.
        what: String,
    },
}

impl Error {
    pub(crate) fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
        move |source| Error::Query { operation, source }
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::UnsupportedUrl { .. }
            | Error::InvalidUrl { .. }
            | Error::RunNotFound { .. }
            | Error::RunAlreadyFinished { .. }
            | Error::InvalidRunId { .. }
            | Error::InvalidRunStatus { .. }
            | Error::AlreadyExists { .. }
            | Error::NotFound { .. }
            | Error::RoleCycle { .. }
            | Error::InvalidValue { .. }
            | Error::InvalidGrant { .. } => ErrorClass::User,
            Error::CreateDir { .. } => ErrorClass::External,
            // A wrong password, user or database name is in the URL the user gave.
            Error::Connect { source, .. } if is_bad_login(source) => ErrorClass::User,
            Error::Connect { .. } => ErrorClass::External,
            Error::Migrate { source, .. } => match source {
                MigrateError::VersionMissing(_) => ErrorClass::User,
                MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => sqlx_class(e),
                MigrateError::Dirty(_) => ErrorClass::External,
                _ => ErrorClass::Internal,
            },
            Error::Query { source, .. } => sqlx_class(source),
            Error::UnfinishedOutcome { .. } | Error::Corrupt { .. } => ErrorClass::Internal,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Error::Connect { source, .. } | Error::Query { source, .. } => sqlx_retryable(source),
            Error::Migrate {
                source: MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _),
                ..
            } => sqlx_retryable(e),
            _ => false,
        }
    }
}

/// Postgres refused the login: SQLSTATE class 28 (authorization) or 3D000 (no such database).
fn is_bad_login(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some_and(|pg| pg.code().starts_with("28") || pg.code() == "3D000")
}

fn sqlx_class(error: &sqlx::Error) -> ErrorClass {
    match error {
        // Our statements broke a constraint, or read a column they did not write.
        sqlx::Error::Database(db) if db.kind() != sqlx::error::ErrorKind::Other => {
            ErrorClass::Internal
        }
        sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::RowNotFound => ErrorClass::Internal,
        _ => ErrorClass::External,
    }
}

/// The failure may pass: the server was unreachable, busy or starting, or the transaction
/// lost a race.
fn sqlx_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                matches!(
                    sqlite_primary_code(db.as_ref()),
                    SQLITE_BUSY | SQLITE_LOCKED
                )
            } else {
                db.code().is_some_and(|code| {
                    // serialization_failure, deadlock_detected, too_many_connections,
                    // cannot_connect_now (starting up), admin/crash shutdown.
                    matches!(
                        &*code,
                        "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03"
                    ) || code.starts_with("08")
                })
            }
        }
        _ => false,
    }
}

const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

/// The primary result code of a SQLite error (sqlx reports the extended one).
fn sqlite_primary_code(db: &dyn sqlx::error::DatabaseError) -> i32 {
    db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff
}

/// The statement broke a unique or primary-key constraint.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// SQLite said `database is locked` (SQLITE_BUSY).
pub(crate) fn is_sqlite_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                && sqlite_primary_code(db.as_ref()) == SQLITE_BUSY
        }
        _ => false,
    }
}

/// A driver error for a message: the database's own words and code, without sqlx's
/// `error returned from database:` prefix and Postgres' internal source line.
fn sqlx_cause(error: &sqlx::Error) -> String {
    let sqlx::Error::Database(db) = error else {
        return error.to_string();
    };
    match (
        db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>(),
        db.code(),
    ) {
        (Some(pg), _) => format!("{} (SQLSTATE {})", pg.message(), pg.code()),
        (None, Some(code)) => format!("{} (SQLite code {code})", db.message()),
        (None, None) => db.message().to_owned(),
    }
}

fn migrate_cause(error: &MigrateError) -> String {
    match error {
        MigrateError::Execute(e) => sqlx_cause(e),
        MigrateError::ExecuteMigration(e, version) => {
            format!("migration {version} failed: {}", sqlx_cause(e))
        }
        other => other.to_string(),
    }
}

fn cycle_reason(role: &str, member: &str) -> String {
    if role == member {
        "a role cannot be a member of itself".to_owned()
    } else {
        format!("`{role}` is already a member of `{member}`, directly or through other roles")
    }
}

fn connect_hint(backend: &str, source: &sqlx::Error) -> &'static str {
    match (backend, source) {
        ("postgres", sqlx::Error::Io(_)) => {
            "; check that PostgreSQL is running and accepts TCP connections at that host and port"
        }
        _ => "",
    }
}

fn migrate_hint(source: &MigrateError) -> &'static str {
    match source {
        MigrateError::Execute(sqlx::Error::Database(db))
            if db.code().as_deref() == Some("3F000") =>
        {
            "; the schema named by `search_path` must exist: create it first with `CREATE SCHEMA <name>`"
        }
        MigrateError::VersionMissing(_) => {
            "; the database was migrated by a newer Strata: upgrade Strata or use another metadata database"
        }
        MigrateError::VersionMismatch(_) => {
            "; an applied migration differs from the one built into this Strata (a development build?)"
        }
        _ => "",
    }
}

/// `url` with any password replaced by `***`, for error messages.
///
/// Stricter than `strata_types::redact_url_password`, which scans free text: this knows
/// its input is one URL, so it also hides a password containing `/` (everything between
/// the first `:` of the user info and the last `@` before the query goes) and a `password=`
/// query parameter.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let query_start = rest.find(['?', '#']).unwrap_or(rest.len());
    let (before_query, query) = rest.split_at(query_start);

    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    match before_query.rfind('@') {
        Some(at) => {
            let (userinfo, host_and_path) = before_query.split_at(at);
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(host_and_path);
        }
        None => out.push_str(before_query),
    }

    // Query parameters: hide the value of `password=`.
    let mut rest = query;
    while let Some(i) = rest.to_ascii_lowercase().find("password=") {
        let is_param_start = i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&' | b'#');
        let value_start = i + "password=".len();
        out.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        if is_param_start {
            let value_end = rest.find(['&', '#']).unwrap_or(rest.len());
            out.push_str("***");
            rest = &rest[value_end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords() {
        let cases = [
            (
                "postgres://user:secret@host/db",
                "postgres://user:***@host/db",
            ),
            ("postgres://user@host/db", "postgres://user@host/db"),
            ("postgres://host/db", "postgres://host/db"),
            (
                "postgres://user:p@ss/w0rd@host:5432/db?sslmode=require",
                "postgres://user:***@host:5432/db?sslmode=require",
            ),
            (
                "postgresql://host/db?user=u&password=secret&sslmode=off",
                "postgresql://host/db?user=u&password=***&sslmode=off",
            ),
            (
                "postgres://host/db?application_name=old_password=x",
                "postgres://host/db?application_name=old_password=x",
            ),
            (
                "mysql://root:pw@localhost/db",
                "mysql://root:***@localhost/db",
            ),
            ("sqlite://.strata/meta.db", "sqlite://.strata/meta.db"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "redacting {url}");
        }
    }
}
