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

    // Access control (see `crate::access`).
    /// Adds one to the access version; run first in every access change.
    pub(crate) bump_access_epoch: &'static str,
    pub(crate) access_version: &'static str,
    /// `user` or `role`: what the name `$1` is taken by, if anything.
    pub(crate) principal_kind: &'static str,
    pub(crate) insert_user: &'static str,
    /// The columns of a `User`, ordered by name; `get_user` adds `WHERE name = $1`.
    pub(crate) list_users: &'static str,
    pub(crate) get_user: &'static str,
    pub(crate) set_password: &'static str,
    pub(crate) set_user_attributes: &'static str,
    pub(crate) set_user_disabled: &'static str,
    pub(crate) delete_user: &'static str,
    /// Removes the memberships of user or role `$1` in roles.
    pub(crate) delete_memberships_of: &'static str,
    /// Removes the members of role `$1` and its memberships in other roles.
    pub(crate) delete_role_memberships: &'static str,
    /// Removes all grants to `$1`.
    pub(crate) delete_grants_to: &'static str,
    /// Removes user `$1`'s API tokens.
    pub(crate) delete_tokens_of: &'static str,
    pub(crate) insert_role: &'static str,
    pub(crate) delete_role: &'static str,
    pub(crate) list_roles: &'static str,
    pub(crate) list_role_members: &'static str,
    /// Adds member `$2` to role `$1` unless it is one already.
    pub(crate) insert_role_member: &'static str,
    pub(crate) delete_role_member: &'static str,
    /// Every role `$1` belongs to, directly or through other roles.
    pub(crate) roles_of: &'static str,
    /// Inserts a grant unless the same one exists.
    pub(crate) insert_grant: &'static str,
    /// `$1` privilege, `$2` object kind, `$3` object, `$4` columns key, `$5` grantee.
    pub(crate) delete_grant: &'static str,
    /// `$1` grantee or NULL.
    pub(crate) list_grants: &'static str,
    /// Inserts or replaces a row policy; affects no row when the stored one is the same.
    pub(crate) upsert_row_policy: &'static str,
    pub(crate) delete_row_policy: &'static str,
    pub(crate) list_row_policies: &'static str,
    /// Inserts or replaces a column mask; affects no row when the stored one is the same.
    pub(crate) upsert_column_mask: &'static str,
    pub(crate) delete_column_mask: &'static str,
    pub(crate) list_column_masks: &'static str,
    pub(crate) insert_token: &'static str,
    /// The columns of an `ApiToken`; `token_by_hash` adds `WHERE token_hash = $1`.
    pub(crate) token_by_hash: &'static str,
    /// `$1` user or NULL.
    pub(crate) list_tokens: &'static str,
    /// Id, SCRAM verifier, expiry and revocation of the tokens of user `$1` that have one.
    pub(crate) token_verifiers: &'static str,
    /// Sets `revoked_at` of token `$1` to `$2` unless it is revoked already.
    pub(crate) revoke_token: &'static str,
    pub(crate) touch_token: &'static str,
    /// The head of an insert into the audit log, up to `VALUES`: each entry adds a tuple of
    /// nine parameters (at, principal, surface, statement, tables, row count, outcome,
    /// error, duration).
    pub(crate) insert_audit: &'static str,
    /// `$1` principal or NULL, `$2` surface or NULL, `$3` limit; newest first.
    pub(crate) list_audit: &'static str,
}

/// The columns [`crate::access`] maps to a `User`.
macro_rules! user_columns {
    () => {
        "SELECT name, password_hash, attributes, superuser, disabled, created_at FROM users"
    };
}

/// The columns [`crate::access`] maps to an `ApiToken`.
macro_rules! token_columns {
    () => {
        "SELECT id, user_name, name, created_at, expires_at, revoked_at, last_used_at \
         FROM api_tokens"
    };
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

            bump_access_epoch: "UPDATE access_epoch SET version = version + 1 WHERE id = 1",
            access_version: "SELECT version FROM access_epoch WHERE id = 1",
            principal_kind: "SELECT 'user' AS kind FROM users WHERE name = $1 \
                 UNION ALL SELECT 'role' AS kind FROM roles WHERE name = $1",
            insert_user: "INSERT INTO users (name, password_hash, attributes, superuser, \
                 disabled, created_at) VALUES ($1, $2, $3, $4, FALSE, $5)",
            list_users: concat!(user_columns!(), " ORDER BY name"),
            get_user: concat!(user_columns!(), " WHERE name = $1"),
            set_password: "UPDATE users SET password_hash = $2 WHERE name = $1",
            set_user_attributes: "UPDATE users SET attributes = $2 WHERE name = $1",
            set_user_disabled: "UPDATE users SET disabled = $2 WHERE name = $1",
            delete_user: "DELETE FROM users WHERE name = $1",
            delete_memberships_of: "DELETE FROM role_members WHERE member = $1",
            delete_role_memberships: "DELETE FROM role_members WHERE role = $1 OR member = $1",
            delete_grants_to: "DELETE FROM grants WHERE grantee = $1",
            delete_tokens_of: "DELETE FROM api_tokens WHERE user_name = $1",
            insert_role: "INSERT INTO roles (name, created_at) VALUES ($1, $2)",
            delete_role: "DELETE FROM roles WHERE name = $1",
            list_roles: "SELECT name FROM roles ORDER BY name",
            list_role_members: "SELECT role, member FROM role_members ORDER BY role, member",
            insert_role_member: "INSERT INTO role_members (role, member) VALUES ($1, $2) \
                 ON CONFLICT (role, member) DO NOTHING",
            delete_role_member: "DELETE FROM role_members WHERE role = $1 AND member = $2",
            roles_of: "WITH RECURSIVE up (name) AS ( \
                 SELECT role FROM role_members WHERE member = $1 \
                 UNION SELECT m.role FROM role_members m JOIN up ON m.member = up.name) \
                 SELECT name FROM up WHERE name <> $1 ORDER BY name",
            insert_grant: "INSERT INTO grants (privilege, object_kind, object, columns, \
                 columns_key, grantee, granted_by, granted_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (grantee, object_kind, object, privilege, columns_key) DO NOTHING",
            delete_grant: "DELETE FROM grants WHERE privilege = $1 AND object_kind = $2 \
                 AND object = $3 AND columns_key = $4 AND grantee = $5",
            list_grants: "SELECT privilege, object_kind, object, columns, grantee, granted_by, \
                 granted_at FROM grants WHERE ($1 IS NULL OR grantee = $1) \
                 ORDER BY grantee, object_kind, object, privilege, columns_key",
            upsert_row_policy: "INSERT INTO row_policies (table_name, name, predicate, \
                 applies_to, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (table_name, name) DO UPDATE SET predicate = excluded.predicate, \
                 applies_to = excluded.applies_to \
                 WHERE row_policies.predicate <> excluded.predicate \
                 OR row_policies.applies_to <> excluded.applies_to",
            delete_row_policy: "DELETE FROM row_policies WHERE table_name = $1 AND name = $2",
            list_row_policies: "SELECT table_name, name, predicate, applies_to \
                 FROM row_policies ORDER BY table_name, name",
            upsert_column_mask: "INSERT INTO column_masks (table_name, column_name, mask, \
                 exempt, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (table_name, column_name) DO UPDATE SET mask = excluded.mask, \
                 exempt = excluded.exempt \
                 WHERE column_masks.mask <> excluded.mask \
                 OR column_masks.exempt <> excluded.exempt",
            delete_column_mask: "DELETE FROM column_masks \
                 WHERE table_name = $1 AND column_name = $2",
            list_column_masks: "SELECT table_name, column_name, mask, exempt \
                 FROM column_masks ORDER BY table_name, column_name",
            insert_token: "INSERT INTO api_tokens (id, user_name, name, token_hash, created_at, \
                 expires_at, scram_verifier) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            token_by_hash: concat!(token_columns!(), " WHERE token_hash = $1"),
            list_tokens: concat!(
                token_columns!(),
                " WHERE ($1 IS NULL OR user_name = $1) ORDER BY user_name, created_at, id"
            ),
            token_verifiers: "SELECT id, scram_verifier, expires_at, revoked_at FROM api_tokens \
                 WHERE user_name = $1 AND scram_verifier IS NOT NULL ORDER BY created_at, id",
            revoke_token: "UPDATE api_tokens SET revoked_at = $2 \
                 WHERE id = $1 AND revoked_at IS NULL",
            touch_token: "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1",
            insert_audit: "INSERT INTO audit_log (at, principal, surface, statement, tables, \
                 row_count, outcome, error, duration_ms) VALUES ",
            list_audit: "SELECT id, at, principal, surface, statement, tables, row_count, \
                 outcome, error, duration_ms FROM audit_log \
                 WHERE ($1 IS NULL OR principal = $1) AND ($2 IS NULL OR surface = $2) \
                 ORDER BY id DESC LIMIT $3",
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
        Self::from_datetime(Utc::now())
    }

    /// `at`, truncated to microseconds.
    pub(crate) fn from_datetime(at: DateTime<Utc>) -> Self {
        Self(
            DateTime::from_timestamp_micros(at.timestamp_micros())
                .expect("a chrono timestamp fits in i64 microseconds"),
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
