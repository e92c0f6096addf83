//! The run log: one [`RunRecord`] per invocation of a Strata command.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

/// Identifies one run. Shown and parsed as a hyphenated UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub Uuid);

impl RunId {
    pub(crate) fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for RunId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|source| Error::InvalidRunId {
                input: s.to_owned(),
                source,
            })
    }
}

/// Where a run is in its life. Stored as lowercase text (`running`, `success`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Started and not finished yet (or the process died before it could say).
    Running,
    /// Finished without error.
    Success,
    /// Finished with an error.
    Failed,
    /// Stopped on request before finishing.
    Cancelled,
}

impl RunStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [RunStatus; 4] = [
        RunStatus::Running,
        RunStatus::Success,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// The stored and displayed form: `running`, `success`, `failed` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Whether a run with this status has finished.
    pub fn is_finished(self) -> bool {
        self != RunStatus::Running
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = Error;

    /// Parses the stored form; case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::InvalidRunStatus {
                input: s.to_owned(),
            })
    }
}

/// What [`MetaStore::start_run`](crate::MetaStore::start_run) records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    /// The command, e.g. `run` or `ingest`.
    pub command: String,
    /// The command's arguments as the user gave them.
    pub args: String,
    /// Who started the run (a user name or a service principal).
    pub principal: String,
    /// The target environment, e.g. `dev` or `prod`, if the command has one.
    pub environment: Option<String>,
}

/// How a run ended; given to [`MetaStore::finish_run`](crate::MetaStore::finish_run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// The final status; [`RunStatus::Running`] is rejected.
    pub status: RunStatus,
    /// Rows written or processed, if the command counts them.
    pub rows: Option<i64>,
    /// Bytes read or written, if the command counts them.
    pub bytes: Option<i64>,
    /// The error message, for failed or cancelled runs.
    pub error: Option<String>,
}

impl RunOutcome {
    /// The same outcome with a byte count.
    pub fn with_bytes(mut self, bytes: i64) -> Self {
        self.bytes = Some(bytes);
        self
    }

    /// A successful outcome.
    pub fn success(rows: Option<i64>) -> Self {
        Self {
            status: RunStatus::Success,
            rows,
            bytes: None,
            error: None,
        }
    }

    /// A failed outcome with its error message.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            status: RunStatus::Failed,
            rows: None,
            bytes: None,
            error: Some(error.into()),
        }
    }

    /// A cancelled outcome.
    pub fn cancelled() -> Self {
        Self {
            status: RunStatus::Cancelled,
            rows: None,
            bytes: None,
            error: None,
        }
    }
}

/// One run as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id.
    pub id: RunId,
    /// See [`NewRun::command`].
    pub command: String,
    /// See [`NewRun::args`].
    pub args: String,
    /// See [`NewRun::principal`].
    pub principal: String,
    /// See [`NewRun::environment`].
    pub environment: Option<String>,
    /// The current status.
    pub status: RunStatus,
    /// When the run started (UTC, microsecond precision).
    pub started_at: DateTime<Utc>,
    /// When the run finished; `None` while running.
    pub finished_at: Option<DateTime<Utc>>,
    /// `finished_at - started_at` in milliseconds; `None` while running.
    pub duration_ms: Option<i64>,
    /// See [`RunOutcome::rows`].
    pub rows: Option<i64>,
    /// See [`RunOutcome::bytes`].
    pub bytes: Option<i64>,
    /// See [`RunOutcome::error`].
    pub error: Option<String>,
}

/// Which runs [`MetaStore::runs`](crate::MetaStore::runs) returns. The default is the
/// newest [`RunFilter::DEFAULT_LIMIT`] runs of any command and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs of this command.
    pub command: Option<String>,
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// At most this many runs; `None` means [`RunFilter::DEFAULT_LIMIT`].
    pub limit: Option<u32>,
}

impl RunFilter {
    /// How many runs are returned when no limit is given.
    pub const DEFAULT_LIMIT: u32 = 50;

    /// The newest [`RunFilter::DEFAULT_LIMIT`] runs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only runs of `command`.
    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }

    /// Only runs with `status`.
    pub fn status(mut self, status: RunStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// At most `limit` runs.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    pub(crate) fn effective_limit(&self) -> i64 {
        i64::from(self.limit.unwrap_or(Self::DEFAULT_LIMIT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_text() {
        for status in RunStatus::ALL {
            assert_eq!(status.to_string().parse::<RunStatus>().unwrap(), status);
        }
        assert_eq!("FAILED".parse::<RunStatus>().unwrap(), RunStatus::Failed);
        let err = "done".parse::<RunStatus>().unwrap_err().to_string();
        assert!(err.contains("`done`"), "{err}");
        assert!(err.contains("running, success, failed, cancelled"), "{err}");
    }

    #[test]
    fn run_id_round_trips_through_text() {
        let id = RunId::new_random();
        assert_eq!(id.to_string().parse::<RunId>().unwrap(), id);
        let err = "nope".parse::<RunId>().unwrap_err().to_string();
        assert!(err.contains("`nope`"), "{err}");
    }
}

/// A change of a source's columns met by ingestion, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange {
    /// The ingest run that met it.
    pub run_id: Option<RunId>,
    /// Source name.
    pub source: String,
    /// Stream name.
    pub stream: String,
    /// Destination table.
    pub table: String,
    /// The column.
    pub column: String,
    /// `added`, `removed`, `widened` or `incompatible`.
    pub change: String,
    /// The column's type before, when it had one.
    pub from_type: Option<String>,
    /// The column's type now, when it has one.
    pub to_type: Option<String>,
    /// What ingestion did: `applied`, `kept (NULL from now on)`, `stopped`,
    /// `quarantined`, `retyped to text`.
    pub action: String,
}

/// How one node (model, test, seed, snapshot) of a modeling run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeResult {
    /// dbt's unique id, e.g. `model.shop.orders`.
    pub unique_id: String,
    /// `success`, `error`, `skipped`, `pass`, `warn` or `fail`.
    pub status: String,
    /// Rows written, when the node writes rows.
    pub rows: Option<i64>,
    /// Failing rows, for tests.
    pub failures: Option<i64>,
    /// How long the node took.
    pub execution_ms: i64,
    /// The error or test message, if any.
    pub message: Option<String>,
}

/// One edge of a model's column-level lineage: an output column (or, with no column, the
/// model's filters and joins) and an upstream column it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageEdge {
    /// The model's unique id, e.g. `model.shop.orders`.
    pub node: String,
    /// The output column's position (0-based); `-1` for filter and join columns.
    pub position: i64,
    /// The output column; `None` for filter and join columns.
    pub column: Option<String>,
    /// The upstream node's unique id (`model.…`, `seed.…`, `snapshot.…`, `source.…`), or the
    /// relation's name when no node produces it.
    pub upstream_node: String,
    /// The upstream column.
    pub upstream_column: String,
    /// `copied`, `transformed`, `aggregated` or `filtered_by`.
    pub kind: String,
}
