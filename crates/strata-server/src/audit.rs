//! The audit log: every statement and every login attempt, with who, through what, which
//! tables, how it ended and how long it took. Entries are written by a background task so
//! a query never waits on the metadata store.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use strata_engine::StrataDialect;
use strata_engine::datafusion::sql::parser::{DFParser, Statement as DFStatement};
use strata_engine::datafusion::sql::sqlparser::ast::visit_relations;
use strata_meta::{AuditEntry, AuditOutcome, MetaStore};
use tokio::sync::mpsc;

/// Entries waiting to be written before new ones are dropped (and counted).
const QUEUE: usize = 10_000;
/// Entries written in one transaction at most.
const BATCH: usize = 1024;
/// The writer's pause after a transaction that did not fill a batch: what arrives meanwhile
/// goes into the next one, so a busy server commits a few dozen times a second, not once per
/// query.
const PACE: Duration = Duration::from_millis(25);
/// Statements longer than this are cut in the log.
const MAX_STATEMENT: usize = 10_000;

/// Where surfaces send audit entries.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<AuditEntry>,
    dropped: Arc<AtomicU64>,
    /// Entries queued, and entries the writer is done with (written, or given up on).
    queued: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
}

impl AuditLog {
    /// Starts the writer task over `meta`.
    pub fn start(meta: Arc<MetaStore>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<AuditEntry>(QUEUE);
        let done = Arc::new(AtomicU64::new(0));
        let written = Arc::clone(&done);
        let writer = tokio::spawn(async move {
            // What queued up while the last write ran goes in one transaction.
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let mut attempt = 0;
                while let Err(e) = meta.record_audits(&batch).await {
                    attempt += 1;
                    if attempt >= 3 {
                        tracing::error!("could not write {} audit entries: {e}", batch.len());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                let full = batch.len() == BATCH;
                written.fetch_add(batch.len() as u64, Ordering::Release);
                batch.clear();
                if !full {
                    tokio::time::sleep(PACE).await;
                }
            }
        });
        (
            Self {
                tx,
                dropped: Arc::default(),
                queued: Arc::default(),
                done,
            },
            writer,
        )
    }

    /// Waits (at most `timeout`) until the entries queued so far are written.
    pub async fn flush(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let queued = self.queued.load(Ordering::Acquire);
        while self.done.load(Ordering::Acquire) < queued && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Queues `entry`; never blocks. A full queue drops the entry and says so in the
    /// server's log.
    pub fn record(&self, mut entry: AuditEntry) {
        if entry.statement.len() > MAX_STATEMENT {
            let mut cut = MAX_STATEMENT;
            while !entry.statement.is_char_boundary(cut) {
                cut -= 1;
            }
            entry.statement.truncate(cut);
            entry.statement.push_str(" …");
        }
        if self.tx.try_send(entry).is_ok() {
            self.queued.fetch_add(1, Ordering::Release);
        } else {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!("audit queue full: {n} entries dropped so far");
        }
    }
}

/// The tables a SQL text names (as written, lower-cased), for the log.
pub fn tables_of(sql: &str) -> Vec<String> {
    let Ok(stmts) = DFParser::parse_sql_with_dialect(sql, &StrataDialect::default()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for stmt in stmts {
        if let DFStatement::Statement(s) = stmt {
            let _ = visit_relations(&*s, |name| {
                let n = name.to_string().to_lowercase();
                if !out.contains(&n) {
                    out.push(n);
                }
                ControlFlow::<()>::Continue(())
            });
        }
    }
    out
}

/// Statements whose tables were found, kept: a prepared statement is logged on every
/// execution, and parsing it each time cost more than the lookup it ran.
const KEPT_STATEMENTS: usize = 1024;

/// [`tables_of`], from the statements already seen where `statement` is one.
fn tables_of_kept(statement: &str) -> Vec<String> {
    static KEPT: std::sync::OnceLock<std::sync::Mutex<HashMap<String, Vec<String>>>> =
        std::sync::OnceLock::new();
    let kept = KEPT.get_or_init(Default::default);
    if let Some(tables) = kept
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(statement)
    {
        return tables.clone();
    }
    let tables = tables_of(statement);
    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() >= KEPT_STATEMENTS {
        kept.clear();
    }
    kept.insert(statement.to_string(), tables.clone());
    tables
}

/// An entry for `statement` by `principal` through `surface`.
pub fn entry(
    principal: &str,
    surface: &str,
    statement: &str,
    outcome: AuditOutcome,
    error: Option<String>,
    elapsed: Duration,
) -> AuditEntry {
    let tables = tables_of_kept(statement);
    entry_on(
        principal, surface, statement, tables, outcome, error, elapsed,
    )
}

/// [`entry`] for a statement whose `tables` the caller knows (no parsing).
pub fn entry_on(
    principal: &str,
    surface: &str,
    statement: &str,
    tables: Vec<String>,
    outcome: AuditOutcome,
    error: Option<String>,
    elapsed: Duration,
) -> AuditEntry {
    AuditEntry {
        principal: principal.to_string(),
        surface: surface.to_string(),
        statement: statement.to_string(),
        tables,
        rows: None,
        outcome,
        error,
        duration_ms: Some(elapsed.as_millis().min(i64::MAX as u128) as i64),
    }
}

/// The entry for a failed login of `user` through `surface` from `from` (an address, or
/// empty), with `why` when there is more to say than a wrong secret.
pub fn login_refused(user: &str, surface: &str, from: &str, why: Option<&str>) -> AuditEntry {
    let mut error = format!("authentication failed from {from}");
    if let Some(why) = why {
        error.push_str(": ");
        error.push_str(why);
    }
    entry(
        user,
        surface,
        "login",
        AuditOutcome::Denied,
        Some(error),
        Duration::ZERO,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_read_from_the_statement() {
        assert_eq!(
            tables_of("select * from marts.orders o join Marts.Customers c on o.id = c.id"),
            vec!["marts.orders", "marts.customers"]
        );
        assert_eq!(
            tables_of("insert into raw.t select * from raw.s"),
            vec!["raw.t", "raw.s"]
        );
        assert!(tables_of("not sql at all").is_empty());
        // Kept statements give the same answer the second time.
        let sql = "select * from marts.kept_orders where id = $1";
        assert_eq!(tables_of_kept(sql), vec!["marts.kept_orders"]);
        assert_eq!(tables_of_kept(sql), vec!["marts.kept_orders"]);
    }
}
