//! The live access-control state: users, roles, grants, row policies, column masks and API
//! tokens, plus the audit log.
//!
//! `access.yml` in the project declares roles, grants, policies and masks; applying it
//! writes them here. Users and tokens are created at run time. Every change except to the
//! audit log adds one to [`MetaStore::access_version`] in the same transaction, so a server
//! that polls the version reloads policies and notices revoked tokens within one poll.
//!
//! Users and roles share one namespace: a name is a user or a role, never both. Grants,
//! memberships, policies and masks name principals as text and may name users that do not
//! exist yet. Object, table and column names are stored lower-case.
//!
//! This crate never sees a password or a token secret: callers pass an argon2 PHC string
//! and the SHA-256 hex of a token.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use crate::error::is_unique_violation;
use crate::sql::Timestamp;
use crate::store::on_backend;
use crate::{Error, MetaStore, Result};

/// What [`MetaStore::create_user`] records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewUser {
    /// The login name; not empty and not `*`.
    pub name: String,
    /// The password's verifiers made by the caller (Strata's servers store an argon2 PHC
    /// string, a space and a SCRAM-SHA-256 verifier); `None` for a user who logs in by token
    /// only.
    pub password_hash: Option<String>,
    /// Attributes row policies can refer to, e.g. `region` → `EU`.
    pub attributes: BTreeMap<String, String>,
    /// Whether the user bypasses grants, policies and masks.
    pub superuser: bool,
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The login name.
    pub name: String,
    /// See [`NewUser::password_hash`].
    pub password_hash: Option<String>,
    /// See [`NewUser::attributes`].
    pub attributes: BTreeMap<String, String>,
    /// See [`NewUser::superuser`].
    pub superuser: bool,
    /// A disabled user may not log in, by password or by token.
    pub disabled: bool,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
}

/// A role and its direct members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// The role's name.
    pub name: String,
    /// Users and roles that are direct members, sorted.
    pub members: Vec<String>,
}

/// A privilege a grant gives. Stored and shown upper-case (`SELECT`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Privilege {
    /// Read rows.
    Select,
    /// Add rows.
    Insert,
    /// Change rows.
    Update,
    /// Remove rows.
    Delete,
    /// Create tables (in a namespace).
    Create,
    /// See and use a namespace.
    Usage,
    /// Every privilege.
    All,
}

impl Privilege {
    /// Every privilege.
    pub const ALL: [Privilege; 7] = [
        Privilege::Select,
        Privilege::Insert,
        Privilege::Update,
        Privilege::Delete,
        Privilege::Create,
        Privilege::Usage,
        Privilege::All,
    ];

    /// The stored and displayed form, e.g. `SELECT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
            Privilege::Create => "CREATE",
            Privilege::Usage => "USAGE",
            Privilege::All => "ALL",
        }
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Privilege {
    type Err = Error;

    /// Parses a privilege name; case-insensitive, and `ALL PRIVILEGES` means `ALL`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.eq_ignore_ascii_case("all privileges") {
            return Ok(Privilege::All);
        }
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| Error::InvalidValue {
                what: "privilege",
                input: s.to_owned(),
                expected: "one of SELECT, INSERT, UPDATE, DELETE, CREATE, USAGE, ALL",
            })
    }
}

/// What kind of object a grant is on. Stored and shown lower-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// A namespace (schema), e.g. `marts`.
    Namespace,
    /// A table, e.g. `marts.orders`.
    Table,
}

impl ObjectKind {
    /// `namespace` or `table`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Namespace => "namespace",
            ObjectKind::Table => "table",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ObjectKind {
    type Err = Error;

    /// Parses `namespace` (or `schema`) or `table`; case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "namespace" | "schema" => Ok(ObjectKind::Namespace),
            "table" => Ok(ObjectKind::Table),
            _ => Err(Error::InvalidValue {
                what: "object kind",
                input: s.to_owned(),
                expected: "`namespace` or `table`",
            }),
        }
    }
}

/// A privilege on an object for a grantee: what [`MetaStore::grant`] stores and
/// [`MetaStore::revoke`] removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The privilege.
    pub privilege: Privilege,
    /// Whether `object` is a namespace or a table.
    pub object_kind: ObjectKind,
    /// `marts` or `marts.orders`; stored lower-case.
    pub object: String,
    /// Only these columns (tables only; stored lower-case, sorted, without duplicates);
    /// `None` for all columns.
    pub columns: Option<Vec<String>>,
    /// The user or role given the privilege.
    pub grantee: String,
    /// Who granted it (a user name, or e.g. `access.yml`).
    pub granted_by: String,
}

/// A grant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// The grant, normalized as described on [`Grant`].
    pub grant: Grant,
    /// When it was granted.
    pub granted_at: DateTime<Utc>,
}

/// A row filter on a table: who it applies to sees only rows where `predicate` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowPolicy {
    /// The policy's name, unique per table.
    pub name: String,
    /// The table, e.g. `marts.orders`; stored lower-case.
    pub table: String,
    /// A SQL boolean expression over the table's columns, stored verbatim.
    pub predicate: String,
    /// A role or user name, or `*` for everyone.
    pub applies_to: String,
}

/// How one column's values are hidden from everyone not exempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMask {
    /// The table, e.g. `marts.customers`; stored lower-case.
    pub table: String,
    /// The column; stored lower-case.
    pub column: String,
    /// The mask spec, stored verbatim: `full`, `null`, `hash`, `email`, `partial(3,2)` or
    /// `expr:<sql>`.
    pub mask: String,
    /// Roles and users who see clear values; stored sorted, without duplicates.
    pub exempt: Vec<String>,
}

/// Identifies one API token. Shown and parsed as a hyphenated UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenId(pub Uuid);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for TokenId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| Error::InvalidValue {
                what: "token id",
                input: s.to_owned(),
                expected: "a UUID like `67e55044-10b1-426f-9247-bb680e5fe0c8`",
            })
    }
}

/// What [`MetaStore::create_token`] records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The user the token logs in as; must exist.
    pub user: String,
    /// A label, e.g. `ci`.
    pub name: String,
    /// The SHA-256 hex of the token's secret (stored lower-case); must be unique.
    pub token_hash: String,
    /// When the token stops working; `None` for never.
    pub expires_at: Option<DateTime<Utc>>,
    /// The token's SCRAM-SHA-256 verifier in PostgreSQL's format, made with its user's
    /// SCRAM salt, so the Postgres surface can log the token in by SCRAM; `None` if the user
    /// has no SCRAM verifier.
    pub scram_verifier: Option<String>,
}

/// An API token as stored, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// The token's id.
    pub id: TokenId,
    /// The user it logs in as.
    pub user: String,
    /// See [`NewToken::name`].
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// See [`NewToken::expires_at`].
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was last used, as recorded by [`MetaStore::touch_token`].
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    /// Whether the token works at `now`: not revoked and not expired. Whether its user is
    /// disabled is the caller's to check.
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expires| now < expires)
    }
}

/// How an audited statement ended. Stored and shown lower-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// It ran.
    Ok,
    /// It failed.
    Error,
    /// Access control refused it.
    Denied,
}

impl AuditOutcome {
    /// Every outcome.
    pub const ALL: [AuditOutcome; 3] =
        [AuditOutcome::Ok, AuditOutcome::Error, AuditOutcome::Denied];

    /// `ok`, `error` or `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Error => "error",
            AuditOutcome::Denied => "denied",
        }
    }
}

impl fmt::Display for AuditOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditOutcome {
    type Err = Error;

    /// Parses the stored form; case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Error::InvalidValue {
                what: "audit outcome",
                input: s.to_owned(),
                expected: "one of ok, error, denied",
            })
    }
}

/// One audited statement: what [`MetaStore::record_audit`] appends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Who ran it.
    pub principal: String,
    /// Through what: `pgwire`, `flight`, `rest`, `cli`, `ui`, ...
    pub surface: String,
    /// The statement or request as received.
    pub statement: String,
    /// The tables it read or wrote.
    pub tables: Vec<String>,
    /// Rows returned or written, if known.
    pub rows: Option<i64>,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The error or refusal message, if any.
    pub error: Option<String>,
    /// How long it took, if known.
    pub duration_ms: Option<i64>,
}

/// An audit-log entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Increasing with each entry.
    pub id: i64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// The entry.
    pub entry: AuditEntry,
}

/// Which entries [`MetaStore::audit`] returns. The default is the newest
/// [`AuditFilter::DEFAULT_LIMIT`] entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only entries of this principal.
    pub principal: Option<String>,
    /// Only entries from this surface.
    pub surface: Option<String>,
    /// At most this many entries; `None` means [`AuditFilter::DEFAULT_LIMIT`].
    pub limit: Option<u32>,
}

impl AuditFilter {
    /// How many entries are returned when no limit is given.
    pub const DEFAULT_LIMIT: u32 = 100;

    /// The newest [`AuditFilter::DEFAULT_LIMIT`] entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only entries of `principal`.
    pub fn principal(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// Only entries from `surface`.
    pub fn surface(mut self, surface: impl Into<String>) -> Self {
        self.surface = Some(surface.into());
        self
    }

    /// At most `limit` entries.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    fn effective_limit(&self) -> i64 {
        i64::from(self.limit.unwrap_or(Self::DEFAULT_LIMIT))
    }
}

/// Opens a transaction on `$pool` that starts by bumping the access version. The bump also
/// takes the write lock (SQLite) or the `access_epoch` row lock (Postgres), so access
/// changes run one at a time and checks made inside the transaction hold until commit.
macro_rules! access_tx {
    ($pool:ident, $sql:ident, $op:expr) => {{
        let mut tx = $pool.begin().await.map_err(Error::query($op))?;
        sqlx::query($sql.bump_access_epoch)
            .execute(&mut *tx)
            .await
            .map_err(Error::query($op))?;
        tx
    }};
}

/// Commits `$tx` if `$changed`, else rolls it back, leaving the access version as it was.
macro_rules! finish_tx {
    ($tx:ident, $changed:expr, $op:expr) => {{
        let finished = if $changed {
            $tx.commit().await
        } else {
            $tx.rollback().await
        };
        finished.map_err(Error::query($op))?;
    }};
}

/// A change to one user, for [`MetaStore::update_user`].
enum UserChange<'a> {
    Password(Option<&'a str>),
    Attributes(String),
    Disabled(bool),
}

impl MetaStore {
    /// The access version: a counter that every change to users, roles, memberships,
    /// grants, row policies, column masks and tokens increases (in the same transaction).
    /// Recording last use of a token and the audit log leave it alone. Poll it and reload
    /// the access state when it changed.
    pub async fn access_version(&self) -> Result<i64> {
        on_backend!(self, |pool, sql| {
            sqlx::query_scalar(sql.access_version)
                .fetch_one(pool)
                .await
                .map_err(Error::query("access_version"))
        })
    }

    /// Creates a user, enabled.
    ///
    /// Fails with [`Error::AlreadyExists`] if a user or role of that name exists, and with
    /// [`Error::InvalidValue`] for an empty name or `*`.
    pub async fn create_user(&self, user: &NewUser) -> Result<()> {
        let op = "create_user";
        check_principal("user name", &user.name)?;
        let attributes = to_json(&user.attributes);
        let now = Timestamp::now();
        on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            let taken: Option<String> = sqlx::query_scalar(sql.principal_kind)
                .bind(&user.name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Error::query(op))?;
            if let Some(kind) = taken {
                return Err(already_exists(&kind, &user.name));
            }
            sqlx::query(sql.insert_user)
                .bind(&user.name)
                .bind(&user.password_hash)
                .bind(&attributes)
                .bind(user.superuser)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        already_exists("user", &user.name)
                    } else {
                        Error::query(op)(e)
                    }
                })?;
            tx.commit().await.map_err(Error::query(op))?;
        });
        tracing::debug!(user = %user.name, "User created.");
        Ok(())
    }

    /// User `name`, if there is one.
    pub async fn user(&self, name: &str) -> Result<Option<User>> {
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.get_user)
                .bind(name)
                .fetch_optional(pool)
                .await
                .map_err(Error::query("user"))?
                .as_ref()
                .map(user_from_row)
                .transpose()
        })
    }

    /// All users, by name.
    pub async fn users(&self) -> Result<Vec<User>> {
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.list_users)
                .fetch_all(pool)
                .await
                .map_err(Error::query("users"))?
                .iter()
                .map(user_from_row)
                .collect()
        })
    }

    /// Sets or (with `None`) removes user `name`'s password hash. Fails with
    /// [`Error::NotFound`] for an unknown user.
    pub async fn set_password(&self, name: &str, password_hash: Option<String>) -> Result<()> {
        let change = UserChange::Password(password_hash.as_deref());
        self.update_user("set_password", name, change).await
    }

    /// Replaces user `name`'s attributes. Fails with [`Error::NotFound`] for an unknown user.
    pub async fn set_user_attributes(
        &self,
        name: &str,
        attributes: BTreeMap<String, String>,
    ) -> Result<()> {
        let change = UserChange::Attributes(to_json(&attributes));
        self.update_user("set_user_attributes", name, change).await
    }

    /// Disables or re-enables user `name`. Fails with [`Error::NotFound`] for an unknown
    /// user.
    pub async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<()> {
        let change = UserChange::Disabled(disabled);
        self.update_user("set_user_disabled", name, change).await
    }

    async fn update_user(
        &self,
        op: &'static str,
        name: &str,
        change: UserChange<'_>,
    ) -> Result<()> {
        let updated = on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            let query = match &change {
                UserChange::Password(hash) => sqlx::query(sql.set_password).bind(name).bind(*hash),
                UserChange::Attributes(json) => {
                    sqlx::query(sql.set_user_attributes).bind(name).bind(json)
                }
                UserChange::Disabled(disabled) => sqlx::query(sql.set_user_disabled)
                    .bind(name)
                    .bind(*disabled),
            };
            let updated = query
                .execute(&mut *tx)
                .await
                .map_err(Error::query(op))?
                .rows_affected()
                > 0;
            finish_tx!(tx, updated, op);
            updated
        });
        if !updated {
            return Err(not_found("user", name));
        }
        Ok(())
    }

    /// Drops user `name` with its role memberships, the grants to it and its API tokens.
    /// Returns whether there was such a user.
    pub async fn drop_user(&self, name: &str) -> Result<bool> {
        let op = "drop_user";
        let dropped = on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            for statement in [
                sql.delete_memberships_of,
                sql.delete_grants_to,
                sql.delete_tokens_of,
            ] {
                sqlx::query(statement)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::query(op))?;
            }
            let dropped = sqlx::query(sql.delete_user)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(Error::query(op))?
                .rows_affected()
                > 0;
            finish_tx!(tx, dropped, op);
            dropped
        });
        if dropped {
            tracing::debug!(user = %name, "User dropped.");
        }
        Ok(dropped)
    }

    /// Creates a role without members.
    ///
    /// Fails with [`Error::AlreadyExists`] if a role or user of that name exists, and with
    /// [`Error::InvalidValue`] for an empty name or `*`.
    pub async fn create_role(&self, name: &str) -> Result<()> {
        let op = "create_role";
        check_principal("role name", name)?;
        let now = Timestamp::now();
        on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            let taken: Option<String> = sqlx::query_scalar(sql.principal_kind)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Error::query(op))?;
            if let Some(kind) = taken {
                return Err(already_exists(&kind, name));
            }
            sqlx::query(sql.insert_role)
                .bind(name)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        already_exists("role", name)
                    } else {
                        Error::query(op)(e)
                    }
                })?;
            tx.commit().await.map_err(Error::query(op))?;
        });
        Ok(())
    }

    /// Drops role `name` with its memberships (its members and its own membership in other
    /// roles) and the grants to it. Returns whether there was such a role.
    pub async fn drop_role(&self, name: &str) -> Result<bool> {
        let op = "drop_role";
        on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            for statement in [sql.delete_role_memberships, sql.delete_grants_to] {
                sqlx::query(statement)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::query(op))?;
            }
            let dropped = sqlx::query(sql.delete_role)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(Error::query(op))?
                .rows_affected()
                > 0;
            finish_tx!(tx, dropped, op);
            Ok(dropped)
        })
    }

    /// All roles with their direct members, by name.
    pub async fn roles(&self) -> Result<Vec<Role>> {
        let op = "roles";
        let (names, members) = on_backend!(self, |pool, sql| {
            let names: Vec<String> = sqlx::query_scalar(sql.list_roles)
                .fetch_all(pool)
                .await
                .map_err(Error::query(op))?;
            let members: Vec<(String, String)> = sqlx::query_as(sql.list_role_members)
                .fetch_all(pool)
                .await
                .map_err(Error::query(op))?;
            (names, members)
        });
        let mut by_role: BTreeMap<String, Vec<String>> =
            names.into_iter().map(|name| (name, Vec::new())).collect();
        for (role, member) in members {
            by_role.entry(role).or_default().push(member);
        }
        Ok(by_role
            .into_iter()
            .map(|(name, members)| Role { name, members })
            .collect())
    }

    /// Makes `member` (a user or role name; a user need not exist yet) a member of `role`.
    /// Returns whether it was not one already.
    ///
    /// Fails with [`Error::NotFound`] if `role` is not a role, and with [`Error::RoleCycle`]
    /// if `member` is `role` or a role that `role` already belongs to, directly or not.
    pub async fn grant_role(&self, role: &str, member: &str) -> Result<bool> {
        let op = "grant_role";
        check_principal("role member", member)?;
        on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            let kind: Option<String> = sqlx::query_scalar(sql.principal_kind)
                .bind(role)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Error::query(op))?;
            if kind.as_deref() != Some("role") {
                return Err(not_found("role", role));
            }
            let above: Vec<String> = sqlx::query_scalar(sql.roles_of)
                .bind(role)
                .fetch_all(&mut *tx)
                .await
                .map_err(Error::query(op))?;
            if role == member || above.iter().any(|r| r == member) {
                return Err(Error::RoleCycle {
                    role: role.to_owned(),
                    member: member.to_owned(),
                });
            }
            let added = sqlx::query(sql.insert_role_member)
                .bind(role)
                .bind(member)
                .execute(&mut *tx)
                .await
                .map_err(Error::query(op))?
                .rows_affected()
                > 0;
            finish_tx!(tx, added, op);
            Ok(added)
        })
    }

    /// Removes `member` from `role`. Returns whether it was a member.
    pub async fn revoke_role(&self, role: &str, member: &str) -> Result<bool> {
        let op = "revoke_role";
        on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            let removed = sqlx::query(sql.delete_role_member)
                .bind(role)
                .bind(member)
                .execute(&mut *tx)
                .await
                .map_err(Error::query(op))?
                .rows_affected()
                > 0;
            finish_tx!(tx, removed, op);
            Ok(removed)
        })
    }

    /// Every role the user or role `principal` belongs to, directly or through other
    /// roles; not `principal` itself.
    pub async fn roles_of(&self, principal: &str) -> Result<BTreeSet<String>> {
        on_backend!(self, |pool, sql| {
            let roles: Vec<String> = sqlx::query_scalar(sql.roles_of)
                .bind(principal)
                .fetch_all(pool)
                .await
                .map_err(Error::query("roles_of"))?;
            Ok(roles.into_iter().collect())
        })
    }

    /// Stores `grant` (normalized as described on [`Grant`]). Returns `false` if the same
    /// grant (privilege, object, columns and grantee) existed, which is left as it was.
    ///
    /// Fails with [`Error::InvalidGrant`] for an empty object, columns on a namespace or an
    /// empty column list.
    pub async fn grant(&self, grant: &Grant) -> Result<bool> {
        let op = "grant";
        let key = GrantKey::of(grant)?;
        let now = Timestamp::now();
        on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            let added = sqlx::query(sql.insert_grant)
                .bind(grant.privilege.as_str())
                .bind(grant.object_kind.as_str())
                .bind(&key.object)
                .bind(&key.columns)
                .bind(key.columns_key())
                .bind(&grant.grantee)
                .bind(&grant.granted_by)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(Error::query(op))?
                .rows_affected()
                > 0;
            finish_tx!(tx, added, op);
            Ok(added)
        })
    }

    /// Removes the grant with `grant`'s privilege, object kind, object, columns and grantee
    /// (`granted_by` is ignored). Returns whether there was one.
    pub async fn revoke(&self, grant: &Grant) -> Result<bool> {
        let op = "revoke";
        let key = GrantKey::of(grant)?;
        on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            let removed = sqlx::query(sql.delete_grant)
                .bind(grant.privilege.as_str())
                .bind(grant.object_kind.as_str())
                .bind(&key.object)
                .bind(key.columns_key())
                .bind(&grant.grantee)
                .execute(&mut *tx)
                .await
                .map_err(Error::query(op))?
                .rows_affected()
                > 0;
            finish_tx!(tx, removed, op);
            Ok(removed)
        })
    }

    /// The grants to `grantee`, or all grants, by grantee and object.
    pub async fn grants(&self, grantee: Option<&str>) -> Result<Vec<GrantRecord>> {
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.list_grants)
                .bind(grantee)
                .fetch_all(pool)
                .await
                .map_err(Error::query("grants"))?
                .iter()
                .map(grant_from_row)
                .collect()
        })
    }

    /// Stores `policy`, replacing the one of the same table and name. Returns whether
    /// anything changed (`false` when the same policy was stored already).
    pub async fn put_row_policy(&self, policy: &RowPolicy) -> Result<bool> {
        let op = "put_row_policy";
        let table = object_name("table", &policy.table)?;
        non_empty("row policy name", &policy.name)?;
        non_empty("row policy predicate", &policy.predicate)?;
        non_empty("row policy principal", &policy.applies_to)?;
        let now = Timestamp::now();
        on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            let changed = sqlx::query(sql.upsert_row_policy)
                .bind(&table)
                .bind(&policy.name)
                .bind(&policy.predicate)
                .bind(&policy.applies_to)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(Error::query(op))?
                .rows_affected()
                > 0;
            finish_tx!(tx, changed, op);
            Ok(changed)
        })
    }

    /// Removes row policy `name` of `table`. Returns whether there was one.
    pub async fn drop_row_policy(&self, table: &str, name: &str) -> Result<bool> {
        let op = "drop_row_policy";
        let table = ident(table);
        on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            let removed = sqlx::query(sql.delete_row_policy)
                .bind(&table)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(Error::query(op))?
                .rows_affected()
                > 0;
            finish_tx!(tx, removed, op);
            Ok(removed)
        })
    }

    /// All row policies, by table and name.
    pub async fn row_policies(&self) -> Result<Vec<RowPolicy>> {
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.list_row_policies)
                .fetch_all(pool)
                .await
                .map_err(Error::query("row_policies"))?
                .iter()
                .map(|row| {
                    let table = "row_policies";
                    Ok(RowPolicy {
                        name: col(row, table, "name")?,
                        table: col(row, table, "table_name")?,
                        predicate: col(row, table, "predicate")?,
                        applies_to: col(row, table, "applies_to")?,
                    })
                })
                .collect()
        })
    }

    /// Stores `mask`, replacing the one of the same table and column. Returns whether
    /// anything changed (`false` when the same mask was stored already).
    pub async fn put_column_mask(&self, mask: &ColumnMask) -> Result<bool> {
        let op = "put_column_mask";
        let table = object_name("table", &mask.table)?;
        let column = object_name("column", &mask.column)?;
        non_empty("column mask", &mask.mask)?;
        let exempt: BTreeSet<&str> = mask.exempt.iter().map(String::as_str).collect();
        let exempt = to_json(&exempt);
        let now = Timestamp::now();
        on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            let changed = sqlx::query(sql.upsert_column_mask)
                .bind(&table)
                .bind(&column)
                .bind(&mask.mask)
                .bind(&exempt)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(Error::query(op))?
                .rows_affected()
                > 0;
            finish_tx!(tx, changed, op);
            Ok(changed)
        })
    }

    /// Removes the mask of `column` of `table`. Returns whether there was one.
    pub async fn drop_column_mask(&self, table: &str, column: &str) -> Result<bool> {
        let op = "drop_column_mask";
        let (table, column) = (ident(table), ident(column));
        on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            let removed = sqlx::query(sql.delete_column_mask)
                .bind(&table)
                .bind(&column)
                .execute(&mut *tx)
                .await
                .map_err(Error::query(op))?
                .rows_affected()
                > 0;
            finish_tx!(tx, removed, op);
            Ok(removed)
        })
    }

    /// All column masks, by table and column.
    pub async fn column_masks(&self) -> Result<Vec<ColumnMask>> {
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.list_column_masks)
                .fetch_all(pool)
                .await
                .map_err(Error::query("column_masks"))?
                .iter()
                .map(|row| {
                    let table = "column_masks";
                    let exempt: String = col(row, table, "exempt")?;
                    Ok(ColumnMask {
                        table: col(row, table, "table_name")?,
                        column: col(row, table, "column_name")?,
                        mask: col(row, table, "mask")?,
                        exempt: from_json(&exempt, table, "exempt")?,
                    })
                })
                .collect()
        })
    }

    /// Records a new API token for an existing user and returns its id.
    ///
    /// Fails with [`Error::NotFound`] for an unknown user and [`Error::AlreadyExists`] if a
    /// token with the same hash exists.
    pub async fn create_token(&self, token: &NewToken) -> Result<TokenId> {
        let op = "create_token";
        non_empty("token hash", &token.token_hash)?;
        let id = TokenId(Uuid::new_v4());
        let hash = normalize_hash(&token.token_hash);
        let now = Timestamp::now();
        let expires_at = token.expires_at.map(Timestamp::from_datetime);
        on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            let kind: Option<String> = sqlx::query_scalar(sql.principal_kind)
                .bind(&token.user)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Error::query(op))?;
            if kind.as_deref() != Some("user") {
                return Err(not_found("user", &token.user));
            }
            sqlx::query(sql.insert_token)
                .bind(id.to_string())
                .bind(&token.user)
                .bind(&token.name)
                .bind(&hash)
                .bind(now)
                .bind(expires_at)
                .bind(&token.scram_verifier)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        already_exists("token hash", &hash)
                    } else {
                        Error::query(op)(e)
                    }
                })?;
            tx.commit().await.map_err(Error::query(op))?;
        });
        tracing::debug!(token_id = %id, user = %token.user, "API token created.");
        Ok(id)
    }

    /// The token whose secret hashes to `token_hash` (SHA-256 hex, any case), if any;
    /// revoked and expired tokens too, so check [`ApiToken::is_valid_at`].
    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        let hash = normalize_hash(token_hash);
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.token_by_hash)
                .bind(&hash)
                .fetch_optional(pool)
                .await
                .map_err(Error::query("token_by_hash"))?
                .as_ref()
                .map(token_from_row)
                .transpose()
        })
    }

    /// The SCRAM verifiers of `user`'s tokens that are valid at `at` (not revoked, not
    /// expired), with the token ids.
    pub async fn token_scram_verifiers(
        &self,
        user: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<(TokenId, String)>> {
        let op = "token_scram_verifiers";
        on_backend!(self, |pool, sql| {
            let rows = sqlx::query(sql.token_verifiers)
                .bind(user)
                .fetch_all(pool)
                .await
                .map_err(Error::query(op))?;
            let table = "api_tokens";
            let mut out = Vec::new();
            for row in &rows {
                let expires_at: Option<DateTime<Utc>> = col(row, table, "expires_at")?;
                let revoked_at: Option<DateTime<Utc>> = col(row, table, "revoked_at")?;
                if revoked_at.is_some() || expires_at.is_some_and(|e| e <= at) {
                    continue;
                }
                let id: String = col(row, table, "id")?;
                out.push((parse(id, table, "id")?, col(row, table, "scram_verifier")?));
            }
            Ok(out)
        })
    }

    /// The tokens of `user`, or of all users, by user and creation time; revoked and
    /// expired ones too.
    pub async fn tokens(&self, user: Option<&str>) -> Result<Vec<ApiToken>> {
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.list_tokens)
                .bind(user)
                .fetch_all(pool)
                .await
                .map_err(Error::query("tokens"))?
                .iter()
                .map(token_from_row)
                .collect()
        })
    }

    /// Revokes token `id` now. Returns `false` if there is no such token or it was revoked
    /// before (its revocation time stays).
    pub async fn revoke_token(&self, id: &TokenId) -> Result<bool> {
        let op = "revoke_token";
        let now = Timestamp::now();
        on_backend!(self, |pool, sql| {
            let mut tx = access_tx!(pool, sql, op);
            let revoked = sqlx::query(sql.revoke_token)
                .bind(id.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(Error::query(op))?
                .rows_affected()
                > 0;
            finish_tx!(tx, revoked, op);
            Ok(revoked)
        })
    }

    /// Records that token `id` was used now. Returns whether there is such a token. Does
    /// not change the access version.
    pub async fn touch_token(&self, id: &TokenId) -> Result<bool> {
        let now = Timestamp::now();
        on_backend!(self, |pool, sql| {
            Ok(sqlx::query(sql.touch_token)
                .bind(id.to_string())
                .bind(now)
                .execute(pool)
                .await
                .map_err(Error::query("touch_token"))?
                .rows_affected()
                > 0)
        })
    }

    /// Appends `entry` to the audit log, stamped now.
    pub async fn record_audit(&self, entry: &AuditEntry) -> Result<()> {
        self.record_audits(std::slice::from_ref(entry)).await
    }

    /// Appends `entries` to the audit log in one transaction, stamped now: a busy server
    /// writes what queued up since its last write at once instead of committing per entry.
    pub async fn record_audits(&self, entries: &[AuditEntry]) -> Result<()> {
        let at = Timestamp::now();
        on_backend!(self, |pool, sql| {
            let mut tx = pool.begin().await.map_err(Error::query("record_audit"))?;
            // Several entries per statement: one round trip to the store for each chunk.
            for chunk in entries.chunks(AUDIT_ROWS_PER_INSERT) {
                // Only the static head and numbered placeholders: the values are bound.
                let text = audit_insert(sql.insert_audit, chunk.len());
                let mut query = sqlx::query(sqlx::AssertSqlSafe(text));
                for entry in chunk {
                    query = query
                        .bind(at)
                        .bind(&entry.principal)
                        .bind(&entry.surface)
                        .bind(&entry.statement)
                        .bind(to_json(&entry.tables))
                        .bind(entry.rows)
                        .bind(entry.outcome.as_str())
                        .bind(&entry.error)
                        .bind(entry.duration_ms);
                }
                query
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::query("record_audit"))?;
            }
            tx.commit().await.map_err(Error::query("record_audit"))?;
        });
        Ok(())
    }

    /// Audit-log entries matching `filter`, newest first.
    pub async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>> {
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.list_audit)
                .bind(&filter.principal)
                .bind(&filter.surface)
                .bind(filter.effective_limit())
                .fetch_all(pool)
                .await
                .map_err(Error::query("audit"))?
                .iter()
                .map(audit_from_row)
                .collect()
        })
    }
}

/// Audit entries written by one `INSERT` at most (nine parameters each).
const AUDIT_ROWS_PER_INSERT: usize = 32;

/// `head` (an insert up to `VALUES`) with `rows` tuples of nine numbered parameters.
fn audit_insert(head: &str, rows: usize) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(head.len() + rows * 48);
    text.push_str(head);
    for row in 0..rows {
        if row > 0 {
            text.push_str(", ");
        }
        text.push('(');
        for col in 0..9 {
            if col > 0 {
                text.push_str(", ");
            }
            let _ = write!(text, "${}", row * 9 + col + 1);
        }
        text.push(')');
    }
    text
}

/// A grant's object and columns as stored.
struct GrantKey {
    object: String,
    /// JSON array text; `None` for all columns.
    columns: Option<String>,
}

impl GrantKey {
    fn of(grant: &Grant) -> Result<Self> {
        let invalid = |reason| Error::InvalidGrant {
            privilege: grant.privilege,
            object: grant.object.clone(),
            grantee: grant.grantee.clone(),
            reason,
        };
        let object = ident(&grant.object);
        if object.is_empty() {
            return Err(invalid("the object name is empty"));
        }
        if grant.grantee.trim().is_empty() {
            return Err(invalid("the grantee is empty"));
        }
        let columns = match &grant.columns {
            None => None,
            Some(_) if grant.object_kind == ObjectKind::Namespace => {
                return Err(invalid("columns can only be granted on a table"));
            }
            Some(columns) => {
                let columns: BTreeSet<String> =
                    columns.iter().map(String::as_str).map(ident).collect();
                if columns.is_empty() {
                    return Err(invalid(
                        "an empty column list grants nothing; leave `columns` out for all columns",
                    ));
                }
                if columns.contains("") {
                    return Err(invalid("a column name is empty"));
                }
                Some(to_json(&columns))
            }
        };
        Ok(Self { object, columns })
    }

    /// `columns`, or `''` for all columns: part of the grants' primary key.
    fn columns_key(&self) -> &str {
        self.columns.as_deref().unwrap_or("")
    }
}

/// An object, table or column name as stored: trimmed and lower-case.
fn ident(name: &str) -> String {
    name.trim().to_lowercase()
}

/// `name` as stored; fails if it is empty.
fn object_name(what: &'static str, name: &str) -> Result<String> {
    let name = ident(name);
    non_empty(what, &name)?;
    Ok(name)
}

fn non_empty(what: &'static str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::InvalidValue {
            what,
            input: value.to_owned(),
            expected: "a non-empty value",
        });
    }
    Ok(())
}

/// A user, role or member name may not be empty or `*`, which means "everyone".
fn check_principal(what: &'static str, name: &str) -> Result<()> {
    if name.trim().is_empty() || name == "*" {
        return Err(Error::InvalidValue {
            what,
            input: name.to_owned(),
            expected: "a non-empty name other than `*`",
        });
    }
    Ok(())
}

fn normalize_hash(hash: &str) -> String {
    hash.trim().to_ascii_lowercase()
}

fn already_exists(kind: &str, name: &str) -> Error {
    Error::AlreadyExists {
        kind: match kind {
            "user" => "user",
            "role" => "role",
            _ => "token hash",
        },
        name: name.to_owned(),
    }
}

fn not_found(kind: &'static str, name: &str) -> Error {
    Error::NotFound {
        kind,
        name: name.to_owned(),
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("string maps and lists serialize to JSON")
}

fn from_json<T: DeserializeOwned>(text: &str, table: &str, column: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt {
        what: format!("column `{table}.{column}` holds `{text}`, which does not decode: {e}"),
    })
}

/// Reads column `column` of a row of `table`, naming both if the value does not decode.
fn col<'r, R, T>(row: &'r R, table: &str, column: &'static str) -> Result<T>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(column).map_err(|source| Error::Corrupt {
        what: format!("column `{table}.{column}`: {source}"),
    })
}

fn parse<T: FromStr>(text: String, table: &str, column: &str) -> Result<T> {
    text.parse().map_err(|_| Error::Corrupt {
        what: format!("column `{table}.{column}` holds unknown value `{text}`"),
    })
}

/// Maps a row of [`crate::sql::Statements::list_users`].
fn user_from_row<'r, R>(row: &'r R) -> Result<User>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    DateTime<Utc>: Decode<'r, R::Database> + Type<R::Database>,
{
    let table = "users";
    let attributes: String = col(row, table, "attributes")?;
    Ok(User {
        name: col(row, table, "name")?,
        password_hash: col(row, table, "password_hash")?,
        attributes: from_json(&attributes, table, "attributes")?,
        superuser: col(row, table, "superuser")?,
        disabled: col(row, table, "disabled")?,
        created_at: col(row, table, "created_at")?,
    })
}

/// Maps a row of [`crate::sql::Statements::list_grants`].
fn grant_from_row<'r, R>(row: &'r R) -> Result<GrantRecord>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    DateTime<Utc>: Decode<'r, R::Database> + Type<R::Database>,
{
    let table = "grants";
    let columns: Option<String> = col(row, table, "columns")?;
    Ok(GrantRecord {
        grant: Grant {
            privilege: parse(col(row, table, "privilege")?, table, "privilege")?,
            object_kind: parse(col(row, table, "object_kind")?, table, "object_kind")?,
            object: col(row, table, "object")?,
            columns: columns
                .map(|c| from_json(&c, table, "columns"))
                .transpose()?,
            grantee: col(row, table, "grantee")?,
            granted_by: col(row, table, "granted_by")?,
        },
        granted_at: col(row, table, "granted_at")?,
    })
}

/// Maps a row of [`crate::sql::Statements::list_tokens`].
fn token_from_row<'r, R>(row: &'r R) -> Result<ApiToken>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    DateTime<Utc>: Decode<'r, R::Database> + Type<R::Database>,
{
    let table = "api_tokens";
    Ok(ApiToken {
        id: parse(col(row, table, "id")?, table, "id")?,
        user: col(row, table, "user_name")?,
        name: col(row, table, "name")?,
        created_at: col(row, table, "created_at")?,
        expires_at: col(row, table, "expires_at")?,
        revoked_at: col(row, table, "revoked_at")?,
        last_used_at: col(row, table, "last_used_at")?,
    })
}

/// Maps a row of [`crate::sql::Statements::list_audit`].
fn audit_from_row<'r, R>(row: &'r R) -> Result<AuditRecord>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    DateTime<Utc>: Decode<'r, R::Database> + Type<R::Database>,
{
    let table = "audit_log";
    let tables: String = col(row, table, "tables")?;
    Ok(AuditRecord {
        id: col(row, table, "id")?,
        at: col(row, table, "at")?,
        entry: AuditEntry {
            principal: col(row, table, "principal")?,
            surface: col(row, table, "surface")?,
            statement: col(row, table, "statement")?,
            tables: from_json(&tables, table, "tables")?,
            rows: col(row, table, "row_count")?,
            outcome: parse(col(row, table, "outcome")?, table, "outcome")?,
            error: col(row, table, "error")?,
            duration_ms: col(row, table, "duration_ms")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_inserts_number_every_rows_parameters() {
        assert_eq!(
            audit_insert("INSERT INTO t VALUES ", 2),
            "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9), \
             ($10, $11, $12, $13, $14, $15, $16, $17, $18)"
        );
    }

    #[test]
    fn privileges_round_trip_through_text() {
        for privilege in Privilege::ALL {
            assert_eq!(
                privilege.to_string().parse::<Privilege>().unwrap(),
                privilege
            );
        }
        assert_eq!("select".parse::<Privilege>().unwrap(), Privilege::Select);
        assert_eq!(
            "all privileges".parse::<Privilege>().unwrap(),
            Privilege::All
        );
        let err = "drop".parse::<Privilege>().unwrap_err().to_string();
        assert!(err.contains("`drop`"), "{err}");
        assert!(err.contains("SELECT, INSERT"), "{err}");
    }

    #[test]
    fn object_kinds_and_outcomes_round_trip_through_text() {
        for kind in [ObjectKind::Namespace, ObjectKind::Table] {
            assert_eq!(kind.to_string().parse::<ObjectKind>().unwrap(), kind);
        }
        assert_eq!(
            "SCHEMA".parse::<ObjectKind>().unwrap(),
            ObjectKind::Namespace
        );
        assert!("view".parse::<ObjectKind>().is_err());
        for outcome in AuditOutcome::ALL {
            assert_eq!(
                outcome.to_string().parse::<AuditOutcome>().unwrap(),
                outcome
            );
        }
        assert!("fine".parse::<AuditOutcome>().is_err());
    }

    #[test]
    fn grant_keys_are_normalized() {
        let grant = Grant {
            privilege: Privilege::Select,
            object_kind: ObjectKind::Table,
            object: " Marts.Orders ".into(),
            columns: Some(vec!["Amount".into(), "id".into(), "amount".into()]),
            grantee: "analyst".into(),
            granted_by: "admin".into(),
        };
        let key = GrantKey::of(&grant).unwrap();
        assert_eq!(key.object, "marts.orders");
        assert_eq!(key.columns_key(), r#"["amount","id"]"#);

        let all = GrantKey::of(&Grant {
            columns: None,
            ..grant.clone()
        })
        .unwrap();
        assert_eq!(all.columns_key(), "");

        let on_namespace = Grant {
            object_kind: ObjectKind::Namespace,
            ..grant.clone()
        };
        assert!(matches!(
            GrantKey::of(&on_namespace),
            Err(Error::InvalidGrant { .. })
        ));
        let empty = Grant {
            columns: Some(Vec::new()),
            ..grant
        };
        assert!(matches!(
            GrantKey::of(&empty),
            Err(Error::InvalidGrant { .. })
        ));
    }

    #[test]
    fn token_validity() {
        let now = Utc::now();
        let token = ApiToken {
            id: TokenId(Uuid::new_v4()),
            user: "ana".into(),
            name: "ci".into(),
            created_at: now,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        assert!(token.is_valid_at(now));
        let expiring = ApiToken {
            expires_at: Some(now + chrono::Duration::minutes(5)),
            ..token.clone()
        };
        assert!(expiring.is_valid_at(now));
        assert!(!expiring.is_valid_at(now + chrono::Duration::minutes(5)));
        let revoked = ApiToken {
            revoked_at: Some(now),
            ..token
        };
        assert!(!revoked.is_valid_at(now));
    }
}
