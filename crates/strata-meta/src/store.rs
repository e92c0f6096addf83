//! [`MetaStore`]: connecting, migrating, and the queries, written once for both backends.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions};
use sqlx::{ColumnIndex, Connection, Decode, Row, Type};

use crate::error;
use crate::migrations;
use crate::sql::Timestamp;
use crate::{
    Error, LineageEdge, NewRun, NodeResult, Result, RunFilter, RunId, RunOutcome, RunRecord,
    RunStatus, SchemaChange,
};

/// How long a SQLite statement waits for another connection's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Strata's metadata store: the run log and small settings, in SQLite or PostgreSQL.
///
/// Cheap to share by reference; it holds a connection pool. Call [`MetaStore::close`] before
/// exit to let SQLite checkpoint its write-ahead log.
#[derive(Debug)]
pub struct MetaStore {
    pub(crate) backend: Backend,
}

#[derive(Debug)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` once per backend with `$pool` bound to that backend's pool and `$sql` to its
/// [`crate::sql::Statements`]. The body is written once and type-checked against both drivers.
macro_rules! on_backend {
    ($store:expr, |$pool:ident, $sql:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => {
                let $sql = &$crate::sql::SQLITE;
                $body
            }
            $crate::store::Backend::Postgres($pool) => {
                let $sql = &$crate::sql::POSTGRES;
                $body
            }
        }
    };
}
pub(crate) use on_backend;

impl MetaStore {
    /// Opens the store at `url` and applies any pending migrations.
    ///
    /// `url` is either
    /// - `sqlite://<path>` (relative to the working directory; `sqlite:///<path>` for an
    ///   absolute one): the file and its parent directories are created if missing, and
    ///   connections use WAL mode, a 5 s busy timeout and foreign keys; `sqlite::memory:`
    ///   gives a private in-memory store for tests; or
    /// - `postgres://…` / `postgresql://…`, with any parameter sqlx understands, e.g.
    ///   `?options=-csearch_path%3D<schema>` to keep Strata's tables in their own schema
    ///   (which must exist).
    pub async fn connect(url: &str) -> Result<Self> {
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let backend = match scheme.as_str() {
            "sqlite" => Backend::Sqlite(connect_sqlite(url).await?),
            "postgres" | "postgresql" if url[scheme.len()..].starts_with("://") => {
                Backend::Postgres(connect_postgres(url).await?)
            }
            _ => {
                return Err(Error::UnsupportedUrl {
                    url: url.to_owned(),
                });
            }
        };
        Ok(Self { backend })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Records the start of a run, with status `running` and `started_at` now, and returns
    /// its new id.
    pub async fn start_run(&self, run: NewRun) -> Result<RunId> {
        let id = RunId::new_random();
        let started_at = Timestamp::now();
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.insert_run)
                .bind(id.to_string())
                .bind(&run.command)
                .bind(&run.args)
                .bind(&run.principal)
                .bind(&run.environment)
                .bind(started_at)
                .execute(pool)
                .await
                .map_err(Error::query("start_run"))?;
        });
        tracing::debug!(run_id = %id, command = %run.command, "Run started.");
        Ok(id)
    }

    /// Records how run `id` ended: its status, rows and error, `finished_at` now and the
    /// duration since it started.
    ///
    /// Fails with [`Error::RunNotFound`] for an unknown id, [`Error::RunAlreadyFinished`] if
    /// the run was finished before, and [`Error::UnfinishedOutcome`] for status `running`.
    pub async fn finish_run(&self, id: &RunId, outcome: RunOutcome) -> Result<()> {
        if !outcome.status.is_finished() {
            return Err(Error::UnfinishedOutcome { id: *id });
        }
        let finished_at = Timestamp::now();
        let op = "finish_run";
        let updated = on_backend!(self, |pool, sql| {
            let Some(row) = sqlx::query(sql.run_state)
                .bind(id.to_string())
                .fetch_optional(pool)
                .await
                .map_err(Error::query(op))?
            else {
                return Err(Error::RunNotFound { id: *id });
            };
            let started_at: DateTime<Utc> = get(&row, "started_at", id)?;
            let status = parse_status(get(&row, "status", id)?, id)?;
            if status.is_finished() {
                return Err(Error::RunAlreadyFinished { id: *id, status });
            }
            sqlx::query(sql.finish_run)
                .bind(id.to_string())
                .bind(outcome.status.as_str())
                .bind(finished_at)
                .bind(finished_at.millis_since(started_at))
                .bind(outcome.rows)
                .bind(&outcome.error)
                .bind(outcome.bytes)
                .execute(pool)
                .await
                .map_err(Error::query(op))?
                .rows_affected()
        });
        if updated == 0 {
            // Finished by someone else between our read and our write.
            return Err(match self.get_run(id).await? {
                Some(run) => Error::RunAlreadyFinished {
                    id: *id,
                    status: run.status,
                },
                None => Error::RunNotFound { id: *id },
            });
        }
        tracing::debug!(run_id = %id, status = %outcome.status, "Run finished.");
        Ok(())
    }

    /// Runs matching `filter`, newest first.
    pub async fn runs(&self, filter: RunFilter) -> Result<Vec<RunRecord>> {
        let status = filter.status.map(RunStatus::as_str);
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.list_runs)
                .bind(&filter.command)
                .bind(status)
                .bind(filter.effective_limit())
                .fetch_all(pool)
                .await
                .map_err(Error::query("runs"))?
                .iter()
                .map(run_from_row)
                .collect()
        })
    }

    /// Run `id`, if there is one.
    pub async fn get_run(&self, id: &RunId) -> Result<Option<RunRecord>> {
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.get_run)
                .bind(id.to_string())
                .fetch_optional(pool)
                .await
                .map_err(Error::query("get_run"))?
                .as_ref()
                .map(run_from_row)
                .transpose()
        })
    }

    /// The value stored under `key`, if any.
    pub async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        on_backend!(self, |pool, sql| {
            sqlx::query_scalar(sql.get_setting)
                .bind(key)
                .fetch_optional(pool)
                .await
                .map_err(Error::query("get_setting"))
        })
    }

    /// Stores `value` under `key`, replacing any previous value.
    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let now = Timestamp::now();
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.set_setting)
                .bind(key)
                .bind(value)
                .bind(now)
                .execute(pool)
                .await
                .map_err(Error::query("set_setting"))?;
        });
        Ok(())
    }

    /// Appends changes of a source's columns to the schema-change log, stamped now.
    pub async fn record_schema_changes(&self, changes: &[SchemaChange]) -> Result<()> {
        let at = Timestamp::now();
        for c in changes {
            on_backend!(self, |pool, sql| {
                sqlx::query(sql.insert_schema_change)
                    .bind(at)
                    .bind(c.run_id.map(|r| r.to_string()))
                    .bind(&c.source)
                    .bind(&c.stream)
                    .bind(&c.table)
                    .bind(&c.column)
                    .bind(&c.change)
                    .bind(&c.from_type)
                    .bind(&c.to_type)
                    .bind(&c.action)
                    .execute(pool)
                    .await
                    .map_err(Error::query("record_schema_changes"))?;
            });
        }
        Ok(())
    }

    /// The schema-change log, newest first, of one source or all.
    pub async fn schema_changes(
        &self,
        source: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(DateTime<Utc>, SchemaChange)>> {
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.list_schema_changes)
                .bind(source)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
                .map_err(Error::query("schema_changes"))?
                .iter()
                .map(|row| {
                    let text =
                        |c: &str| -> std::result::Result<String, sqlx::Error> { row.try_get(c) };
                    let opt = |c: &str| -> std::result::Result<Option<String>, sqlx::Error> {
                        row.try_get(c)
                    };
                    let at: DateTime<Utc> = row.try_get("at")?;
                    Ok((
                        at,
                        SchemaChange {
                            run_id: opt("run_id")?.and_then(|r| r.parse().ok()),
                            source: text("source")?,
                            stream: text("stream")?,
                            table: text("table_name")?,
                            column: text("column_name")?,
                            change: text("change")?,
                            from_type: opt("from_type")?,
                            to_type: opt("to_type")?,
                            action: text("action")?,
                        },
                    ))
                })
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(Error::query("schema_changes"))
        })
    }

    /// Records how each node of run `run` ended, in order.
    pub async fn record_node_results(&self, run: &RunId, results: &[NodeResult]) -> Result<()> {
        for (position, r) in results.iter().enumerate() {
            on_backend!(self, |pool, sql| {
                sqlx::query(sql.insert_node_result)
                    .bind(run.to_string())
                    .bind(position as i64)
                    .bind(&r.unique_id)
                    .bind(&r.status)
                    .bind(r.rows)
                    .bind(r.failures)
                    .bind(r.execution_ms)
                    .bind(&r.message)
                    .execute(pool)
                    .await
                    .map_err(Error::query("record_node_results"))?;
            });
        }
        Ok(())
    }

    /// The node results of run `run`, in the order they ended.
    pub async fn node_results(&self, run: &RunId) -> Result<Vec<NodeResult>> {
        on_backend!(self, |pool, sql| {
            sqlx::query(sql.list_node_results)
                .bind(run.to_string())
                .fetch_all(pool)
                .await
                .map_err(Error::query("node_results"))?
                .iter()
                .map(|row| {
                    Ok(NodeResult {
                        unique_id: row.try_get("unique_id")?,
                        status: row.try_get("status")?,
                        rows: row.try_get("row_count")?,
                        failures: row.try_get("failures")?,
                        execution_ms: row.try_get("execution_ms")?,
                        message: row.try_get("message")?,
                    })
                })
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(Error::query("node_results"))
        })
    }

    /// Replaces model `node`'s column-level lineage with `edges`, in one transaction, so a
    /// reader sees the old lineage or the new one.
    pub async fn replace_column_lineage(
        &self,
        run: Option<&RunId>,
        node: &str,
        edges: &[LineageEdge],
    ) -> Result<()> {
        let at = Timestamp::now();
        let run = run.map(|r| r.to_string());
        on_backend!(self, |pool, sql| {
            let fail = || Error::query("replace_column_lineage");
            let mut tx = pool.begin().await.map_err(fail())?;
            sqlx::query(sql.delete_lineage)
                .bind(node)
                .execute(&mut *tx)
                .await
                .map_err(fail())?;
            for e in edges {
                sqlx::query(sql.insert_lineage)
                    .bind(node)
                    .bind(e.position)
                    .bind(&e.column)
                    .bind(&e.upstream_node)
                    .bind(&e.upstream_column)
                    .bind(&e.kind)
                    .bind(&run)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(fail())?;
            }
            tx.commit().await.map_err(fail())?;
        });
        Ok(())
    }

    /// Model `node`'s column-level lineage as last recorded, by output column position
    /// (filter and join columns first, at position -1).
    pub async fn column_lineage(&self, node: &str) -> Result<Vec<LineageEdge>> {
        self.lineage_rows("column_lineage", node, None, true).await
    }

    /// The lineage edges that read `upstream_node` (only its column `column` when given):
    /// the model columns directly downstream of it.
    pub async fn column_lineage_downstream(
        &self,
        upstream_node: &str,
        column: Option<&str>,
    ) -> Result<Vec<LineageEdge>> {
        self.lineage_rows("column_lineage_downstream", upstream_node, column, false)
            .await
    }

    async fn lineage_rows(
        &self,
        what: &'static str,
        node: &str,
        column: Option<&str>,
        of_node: bool,
    ) -> Result<Vec<LineageEdge>> {
        on_backend!(self, |pool, sql| {
            let query = if of_node {
                sqlx::query(sql.list_lineage).bind(node)
            } else {
                sqlx::query(sql.list_downstream).bind(node).bind(column)
            };
            query
                .fetch_all(pool)
                .await
                .map_err(Error::query(what))?
                .iter()
                .map(|row| {
                    Ok(LineageEdge {
                        node: row.try_get("node")?,
                        position: row.try_get::<i64, _>("position")?,
                        column: row.try_get("column_name")?,
                        upstream_node: row.try_get("upstream_node")?,
                        upstream_column: row.try_get("upstream_column")?,
                        kind: row.try_get("kind")?,
                    })
                })
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
                .map_err(Error::query(what))
        })
    }

    /// Closes all connections, waiting for queries in flight.
    pub async fn close(self) {
        match self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

// Migrations run through `Migrator::run_direct`, not `run`: `run`'s `Acquire<'a>` bound
// makes the `connect` future fail to be `Send` ("implementation of `Acquire` is not general
// enough"), so it could not be spawned. sqlx keeps `run_direct` public for this reason.

async fn connect_sqlite(url: &str) -> Result<SqlitePool> {
    let backend = "sqlite";
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|source| Error::InvalidUrl {
            backend,
            url: url.to_owned(),
            source,
        })?
        .create_if_missing(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);
    // WAL is not set here but by `enable_wal` on the first connection: it is a lasting
    // property of the file, and switching at connect time from several processes at once
    // fails with SQLITE_BUSY.

    let path = options.get_filename().to_owned();
    // sqlx turns `sqlite::memory:` into a shared-cache database with a generated name.
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let target = if in_memory {
        "`:memory:`".to_owned()
    } else {
        format!("`{}`", path.display())
    };
    let connect_err = |source| Error::Connect {
        backend,
        target: target.clone(),
        source,
    };
    if !in_memory {
        create_parent_dirs(&path)?;
    }

    // One direct connection first: its error names the real cause, and for an in-memory
    // database it keeps the database alive until the pool holds a connection.
    let mut first = SqliteConnection::connect_with(&options)
        .await
        .map_err(connect_err)?;
    if !in_memory {
        enable_wal(&mut first).await.map_err(connect_err)?;
    }
    migrate_sqlite(&mut first)
        .await
        .map_err(|source| Error::Migrate {
            backend,
            target: target.clone(),
            source,
        })?;

    let pool_options = if in_memory {
        // All connections must share the one database, which lives while one is open.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        SqlitePoolOptions::new()
    };
    let pool = pool_options
        .connect_with(options)
        .await
        .map_err(connect_err)?;
    close_quietly(first).await;
    tracing::debug!(backend, %target, "Metadata store open.");
    Ok(pool)
}

/// Puts the database file in WAL mode (readers do not block the writer), once for good.
///
/// Two processes switching a new file at the same moment can deadlock on the lock
/// upgrade, which SQLite reports at once as SQLITE_BUSY instead of waiting. The other
/// process is done within milliseconds, after which the switch is a no-op; so try again.
async fn enable_wal(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    const ATTEMPTS: u32 = 50;
    let mut attempt = 1;
    loop {
        let result = sqlx::query_scalar::<_, String>("PRAGMA journal_mode = WAL")
            .fetch_one(&mut *conn)
            .await;
        match result {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                tracing::warn!(%mode, "SQLite kept its journal mode instead of WAL; concurrent access may block.");
                return Ok(());
            }
            Err(error) if error::is_sqlite_busy(&error) && attempt < ATTEMPTS => attempt += 1,
            Err(error) => return Err(error),
        }
    }
}

/// Applies the SQLite migrations under the database's write lock.
///
/// sqlx takes no migration lock on SQLite (Postgres gets an advisory lock), so two
/// processes opening a new store at once would both apply `0001` and the slower one fail
/// with `table runs already exists`. `BEGIN IMMEDIATE` waits (up to the busy timeout) for
/// any other writer, so the second process finds the migrations applied; sqlx runs each
/// migration in a savepoint inside it. All pending migrations commit together.
async fn migrate_sqlite(conn: &mut SqliteConnection) -> Result<(), MigrateError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    migrations::SQLITE.run_direct(None, &mut *tx, false).await?;
    tx.commit().await?;
    Ok(())
}

fn create_parent_dirs(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                path: dir.to_owned(),
                source,
            })
        }
        _ => Ok(()),
    }
}

async fn connect_postgres(url: &str) -> Result<PgPool> {
    let backend = "postgres";
    let options = PgConnectOptions::from_str(url).map_err(|source| Error::InvalidUrl {
        backend,
        url: url.to_owned(),
        source,
    })?;
    let target = format!(
        "{}:{} (database `{}`, user `{}`)",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or(options.get_username()),
        options.get_username(),
    );

    let connect_err = |source| Error::Connect {
        backend,
        target: target.clone(),
        source,
    };

    // One direct connection first: the pool retries refused connections until its acquire
    // timeout and then reports only the timeout, while this fails at once with the cause.
    let mut first = PgConnection::connect_with(&options)
        .await
        .map_err(connect_err)?;
    migrations::POSTGRES
        .run_direct(None, &mut first, false)
        .await
        .map_err(|source| Error::Migrate {
            backend,
            target: target.clone(),
            source,
        })?;
    close_quietly(first).await;

    let pool = PgPoolOptions::new()
        .connect_with(options)
        .await
        .map_err(connect_err)?;
    tracing::debug!(backend, %target, "Metadata store open.");
    Ok(pool)
}

async fn close_quietly<C: Connection>(conn: C) {
    if let Err(error) = conn.close().await {
        tracing::debug!(%error, "Closing the metadata store's setup connection failed.");
    }
}

/// Reads column `column` of a row of run `id`, naming both if the value does not decode.
fn get<'r, R, T>(row: &'r R, column: &'static str, id: &RunId) -> Result<T>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(column).map_err(|source| Error::Corrupt {
        what: format!("run {id}: column `runs.{column}`: {source}"),
    })
}

fn parse_status(text: String, id: &RunId) -> Result<RunStatus> {
    text.parse().map_err(|_| Error::Corrupt {
        what: format!("run {id}: column `runs.status` holds unknown status `{text}`"),
    })
}

/// Maps a row of [`crate::sql::Statements::list_runs`] or
/// [`crate::sql::Statements::get_run`].
fn run_from_row<'r, R>(row: &'r R) -> Result<RunRecord>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    DateTime<Utc>: Decode<'r, R::Database> + Type<R::Database>,
{
    let id_text: String = row.try_get("id").map_err(|source| Error::Corrupt {
        what: format!("column `runs.id`: {source}"),
    })?;
    let id: RunId = id_text.parse().map_err(|_| Error::Corrupt {
        what: format!("column `runs.id` holds `{id_text}`, which is not a UUID"),
    })?;
    Ok(RunRecord {
        command: get(row, "command", &id)?,
        args: get(row, "args", &id)?,
        principal: get(row, "principal", &id)?,
        environment: get(row, "environment", &id)?,
        status: parse_status(get(row, "status", &id)?, &id)?,
        started_at: get(row, "started_at", &id)?,
        finished_at: get(row, "finished_at", &id)?,
        duration_ms: get(row, "duration_ms", &id)?,
        rows: get(row, "row_count", &id)?,
        bytes: get(row, "bytes", &id)?,
        error: get(row, "error", &id)?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compile-time check: every future can be spawned on a multi-threaded runtime.
    #[allow(dead_code)]
    fn futures_are_send(store: &MetaStore, id: &RunId) {
        fn send<T: Send>(_: T) {}
        send(MetaStore::connect(""));
        send(store.start_run(NewRun {
            command: String::new(),
            args: String::new(),
            principal: String::new(),
            environment: None,
        }));
        send(store.finish_run(id, RunOutcome::cancelled()));
        send(store.runs(RunFilter::new()));
        send(store.get_run(id));
        send(store.get_setting(""));
        send(store.set_setting("", ""));
        send(store.create_user(&crate::NewUser::default()));
        send(store.set_password("", None));
        send(store.grant_role("", ""));
        send(store.roles());
        send(store.access_version());
    }
}
