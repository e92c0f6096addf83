//! Time travel: `SELECT … FROM t VERSION AS OF 3`, `TIMESTAMP AS OF '2026-01-01 10:00'` and
//! `FOR SYSTEM_TIME AS OF '…'`.
//!
//! DataFusion's planner ignores version clauses, so before planning each versioned table
//! reference is pinned: the table is opened at that version, registered under a unique name
//! in the `strata_snapshots` catalog, and the reference rewritten to it (keeping the
//! original name as its alias so qualified columns still resolve).

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, TimestampMicrosecondArray};
use datafusion::common::TableReference;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, Ident, ObjectName, TableAlias, TableFactor, TableVersion, Value, VisitMut, VisitorMut,
};

use crate::access::Privilege;
use crate::engine::{SNAPSHOT_CATALOG, Session};
use crate::{Error, Result};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Snapshot tables registered for one statement; release them after planning.
#[derive(Debug, Default)]
pub(crate) struct Pinned(Vec<String>);

impl Pinned {
    pub(crate) fn release(self, ctx: &SessionContext) {
        for name in self.0 {
            let _ = ctx.deregister_table(TableReference::full(SNAPSHOT_CATALOG, "v", name));
        }
    }
}

#[derive(Default)]
struct Collect {
    found: Vec<(ObjectName, TableVersion)>,
}

impl VisitorMut for Collect {
    type Break = ();
    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            version: Some(v),
            ..
        } = tf
        {
            self.found.push((name.clone(), v.clone()));
        }
        ControlFlow::Continue(())
    }
}

struct Rewrite {
    names: std::vec::IntoIter<String>,
}

impl VisitorMut for Rewrite {
    type Break = ();
    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            alias,
            version,
            ..
        } = tf
            && version.is_some()
            && let Some(pinned) = self.names.next()
        {
            if alias.is_none() {
                let last = name
                    .0
                    .last()
                    .and_then(|p| p.as_ident().cloned())
                    .unwrap_or_else(|| Ident::new("t"));
                *alias = Some(TableAlias {
                    explicit: true,
                    name: last,
                    columns: vec![],
                    at: None,
                });
            }
            *name = ObjectName::from(vec![
                Ident::new(SNAPSHOT_CATALOG),
                Ident::new("v"),
                Ident::new(pinned),
            ]);
            *version = None;
        }
        ControlFlow::Continue(())
    }
}

fn visit(stmt: &mut DFStatement, v: &mut impl VisitorMut<Break = ()>) {
    match stmt {
        DFStatement::Statement(s) => {
            let _ = s.visit(v);
        }
        DFStatement::Explain(e) => visit(&mut e.statement, v),
        DFStatement::CopyTo(c) => {
            if let CopyToSource::Query(q) = &mut c.source {
                let _ = q.visit(v);
            }
        }
        _ => {}
    }
}

/// Pins every versioned table reference of `stmt` (see the module docs).
pub(crate) async fn pin_versions(session: &Session, stmt: &mut DFStatement) -> Result<Pinned> {
    let mut collect = Collect::default();
    visit(stmt, &mut collect);
    if collect.found.is_empty() {
        return Ok(Pinned::default());
    }
    let mut pinned = Pinned::default();
    for (name, version) in collect.found {
        let t = session.object_name(&name)?;
        session.require(Privilege::Select, &t)?;
        let table = match &version {
            TableVersion::VersionAsOf(e) => {
                let v = version_number(e)?;
                session.lake().open_table_version(&t, v).await?
            }
            TableVersion::TimestampAsOf(e) | TableVersion::ForSystemTimeAsOf(e) => {
                let ts = evaluate_timestamp(session, e).await?;
                session.lake().open_table_at(&t, ts).await?
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "`{other}` is not supported; use `VERSION AS OF <n>` or `TIMESTAMP AS OF '<timestamp>'`"
                )));
            }
        };
        let provider = crate::provider::delta_provider(&table).await?;
        let id = format!(
            "{}_v{}_{}",
            t.name,
            table.version().unwrap_or(0),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        crate::engine::EngineInner::ensure_snapshot_catalog(session.context());
        session.context().register_table(
            TableReference::full(SNAPSHOT_CATALOG, "v", id.as_str()),
            provider,
        )?;
        if let Some(access) = session.access() {
            access.register_snapshot(&id, &t);
        }
        pinned.0.push(id);
    }
    let mut rewrite = Rewrite {
        names: pinned.0.clone().into_iter(),
    };
    visit(stmt, &mut rewrite);
    Ok(pinned)
}

fn version_number(e: &Expr) -> Result<u64> {
    if let Expr::Value(v) = e
        && let Value::Number(n, _) = &v.value
        && let Ok(v) = n.parse::<u64>()
    {
        return Ok(v);
    }
    Err(Error::Invalid(format!(
        "VERSION AS OF takes a version number (0, 1, 2, …), not `{e}`"
    )))
}

async fn evaluate_timestamp(session: &Session, e: &Expr) -> Result<DateTime<Utc>> {
    let sql = format!("SELECT arrow_cast({e}, 'Timestamp(Microsecond, Some(\"UTC\"))')");
    let batches = session
        .context()
        .sql(&sql)
        .await
        .map_err(|err| Error::Invalid(format!("TIMESTAMP AS OF `{e}`: {err}")))?
        .collect()
        .await
        .map_err(|err| Error::Invalid(format!("TIMESTAMP AS OF `{e}`: {err}")))?;
    let value = batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
        })
        .filter(|a| a.len() == 1 && a.is_valid(0))
        .map(|a| a.value(0));
    value
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .ok_or_else(|| Error::Invalid(format!("TIMESTAMP AS OF `{e}` is not a timestamp")))
}
