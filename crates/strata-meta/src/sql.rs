//! The statements, one set per dialect, and the shared value types they bind.
//!
//! Both drivers take `$1`-style placeholders, so the two sets differ only where the column
//! types do: Postgres keeps run ids as `UUID` (bound and read as text with a cast) and
//! timestamps as `TIMESTAMPTZ`; SQLite keeps both as text.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo};
use sqlx::{Encode, Postgres, Sqlite, Type};

/// The statements of one dialect.
pub(crate) struct Statements {
    pub(crate) insert_run: &'static str,
    /// `started_at, status` of run `$1`.
    pub(crate) run_state: &'static str,
    /// Finishes run `$1` if it is still running.
    pub(crate) finish_run: &'static str,
    /// `$1` command or NULL, `$2` status or NULL, `$3` limit.
    pub(crate) list_runs: &'static str,
    pub(crate) get_run: &'static str,
    pub(crate) get_setting: &'static str,
    pub(crate) set_setting: &'static str,
    pub(crate) insert_schema_change: &'static str,
    /// `$1` source or NULL, `$2` limit.
    pub(crate) list_schema_changes: &'static str,
    pub(crate) insert_node_result: &'static str,
    /// Node results of run `$1`, in order.
    pub(crate) list_node_results: &'static str,
    /// Removes model `$1`'s lineage.
    pub(crate) delete_lineage: &'static str,
    pub(crate) insert_lineage: &'static str,
    /// Lineage of model `$1`, by position.
    pub(crate) list_lineage: &'static str,
    /// Edges reading upstream node `$1` (column `$2`, or any when NULL).
    pub(crate) list_downstream: &'static str,
}

/// The columns [`crate::store`] maps to a `RunRecord`, with the id expression first.
macro_rules! run_columns {
    ($id:literal) => {
        concat!(
            $id,
            ", command, args, principal, environment, status, started_at, finished_at, \
             duration_ms, row_count, bytes, error"
        )
    };
}

macro_rules! statements {
    (id_param: $id_param:literal, id_column: $id_column:literal) => {
        Statements {
            insert_run: concat!(
                "INSERT INTO runs (id, command, args, principal, environment, status, started_at) \
                 VALUES (",
                $id_param,
                ", $2, $3, $4, $5, 'running', $6)"
            ),
            run_state: concat!("SELECT started_at, status FROM runs WHERE id = ", $id_param),
            finish_run: concat!(
                "UPDATE runs SET status = $2, finished_at = $3, duration_ms = $4, \
                 row_count = $5, error = $6, bytes = $7 WHERE id = ",
                $id_param,
                " AND status = 'running'"
            ),
            list_runs: concat!(
                "SELECT ",
                run_columns!($id_column),
                " FROM runs WHERE ($1 IS NULL OR command = $1) AND ($2 IS NULL OR status = $2) \
                 ORDER BY started_at DESC, id DESC LIMIT $3"
            ),
            get_run: concat!(
                "SELECT ",
                run_columns!($id_column),
                " FROM runs WHERE id = ",
                $id_param
            ),
            get_setting: "SELECT value FROM kv WHERE key = $1",
            set_setting: "INSERT INTO kv (key, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                 updated_at = excluded.updated_at",
            insert_schema_change: "INSERT INTO schema_changes (at, run_id, source, stream, \
                 table_name, column_name, change, from_type, to_type, action) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            list_schema_changes: "SELECT at, run_id, source, stream, table_name, column_name, \
                 change, from_type, to_type, action FROM schema_changes \
                 WHERE ($1 IS NULL OR source = $1) ORDER BY at DESC, id DESC LIMIT $2",
            insert_node_result: concat!(
                "INSERT INTO node_results (run_id, position, unique_id, status, row_count, \
                 failures, execution_ms, message) VALUES (",
                $id_param,
                ", $2, $3, $4, $5, $6, $7, $8)"
            ),
            list_node_results: concat!(
                "SELECT unique_id, status, row_count, failures, execution_ms, message \
                 FROM node_results WHERE run_id = ",
                $id_param,
                " ORDER BY position"
            ),
            delete_lineage: "DELETE FROM column_lineage WHERE node = $1",
            insert_lineage: "INSERT INTO column_lineage (node, position, column_name, \
                 upstream_node, upstream_column, kind, run_id, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            list_lineage: "SELECT node, position, column_name, upstream_node, upstream_column, \
                 kind FROM column_lineage WHERE node = $1 \
                 ORDER BY position, upstream_node, upstream_column, kind",
            list_downstream: "SELECT node, position, column_name, upstream_node, \
                 upstream_column, kind FROM column_lineage WHERE upstream_node = $1 \
                 AND ($2 IS NULL OR upstream_column = $2) \
                 ORDER BY node, position, upstream_column, kind",
        }
    };
}

pub(crate) static SQLITE: Statements = statements!(id_param: "$1", id_column: "id");

pub(crate) static POSTGRES: Statements =
    statements!(id_param: "$1::uuid", id_column: "id::text AS id");

/// A timestamp as the metadata store keeps it: UTC, truncated to microseconds (Postgres'
/// resolution, so both backends give back what was stored).
///
/// SQLite gets fixed-width RFC 3339 text (`2025-01-02T03:04:05.123456Z`) so that text order
/// is time order; Postgres gets a `TIMESTAMPTZ`. Reading back uses sqlx's own
/// `DateTime<Utc>` decoding, which accepts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub(crate) fn now() -> Self {
        let now = Utc::now();
        let micros = now.timestamp_micros();
        Self(
            DateTime::from_timestamp_micros(micros)
                .expect("a timestamp taken from the clock fits in i64 microseconds"),
        )
    }

    /// Milliseconds from `start` to `self`; zero if the clock went backwards.
    pub(crate) fn millis_since(self, start: DateTime<Utc>) -> i64 {
        (self.0 - start).num_milliseconds().max(0)
    }
}

impl Type<Sqlite> for Timestamp {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for Timestamp {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.0.to_rfc3339_opts(SecondsFormat::Micros, true), buf)
    }
}

impl Type<Postgres> for Timestamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Timestamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_timestamps_sort_as_text() {
        let a = DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap();
        let b = DateTime::from_timestamp_micros(1_700_000_000_000_001).unwrap();
        let text = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
        assert_eq!(text(a), "2023-11-14T22:13:20.000000Z");
        assert!(text(a) < text(b));
    }
}
