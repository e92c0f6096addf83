//! Stored views: cycle checks, and the cache of their plans.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::visit_relations;
use strata_lake::{Lake, TableName, ViewDef};

use crate::engine::Session;
use crate::{Error, Result};

/// Refuses a view definition that would reach `view` again through the views it reads.
pub(crate) async fn check_no_cycle(session: &Session, view: &TableName, query: &str) -> Result<()> {
    let mut stack = vec![(query.to_string(), vec![view.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((sql, path)) = stack.pop() {
        for name in referenced(session, &sql)? {
            if &name == view {
                let mut chain = path.clone();
                chain.push(name.to_string());
                return Err(Error::Invalid(format!(
                    "view `{view}` would depend on itself: {}",
                    chain.join(" → ")
                )));
            }
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(def) = session.lake().view(&name).await? {
                let mut chain = path.clone();
                chain.push(name.to_string());
                stack.push((def.sql, chain));
            }
        }
    }
    Ok(())
}

fn referenced(session: &Session, sql: &str) -> Result<Vec<TableName>> {
    let mut out = Vec::new();
    for stmt in session.parse(sql)? {
        if let datafusion::sql::parser::Statement::Statement(s) = stmt {
            let _ = visit_relations(&*s, |name| {
                if let Ok(t) = session.object_name(name) {
                    out.push(t);
                }
                ControlFlow::<()>::Continue(())
            });
        }
    }
    Ok(out)
}

/// What planning a query read from the lake.
#[derive(Debug, Default)]
pub(crate) struct Dependencies {
    /// Tables and the versions they were opened at.
    tables: Vec<(TableName, u64)>,
    /// Stored views.
    views: Vec<TableName>,
}

tokio::task_local! {
    static PLANNING: RefCell<Dependencies>;
}

/// Runs `planning` and returns, with its result, the tables and views it opened. The
/// catalog reports them ([`record_table`], [`record_view`]) from the planning task itself:
/// DataFusion resolves table references inline, without spawning.
pub(crate) async fn collecting_dependencies<T>(
    planning: impl Future<Output = T>,
) -> (T, Dependencies) {
    PLANNING
        .scope(RefCell::new(Dependencies::default()), async {
            let out = planning.await;
            (out, PLANNING.with(|d| d.take()))
        })
        .await
}

/// Notes that the statement being planned reads `t` at `version`.
pub(crate) fn record_table(t: &TableName, version: u64) {
    let _ = PLANNING.try_with(|d| d.borrow_mut().tables.push((t.clone(), version)));
}

/// Notes that the statement being planned reads the stored view `t`.
pub(crate) fn record_view(t: &TableName) {
    let _ = PLANNING.try_with(|d| d.borrow_mut().views.push(t.clone()));
}

#[derive(Debug)]
struct CachedView {
    sql: String,
    /// The stamp of the definition it was planned from.
    stamp: Option<String>,
    plan: LogicalPlan,
    /// Every view beneath this one, with the stamp of the definition it was planned from.
    views: Vec<(TableName, Option<String>)>,
    /// Every table beneath this one, with the version its scan reads.
    tables: Vec<(TableName, u64)>,
}

/// Plans of stored views. A plan holds scans of its tables at the versions it was planned
/// at, so it is reused only after checking, with a listing of each table's log, that no
/// table beneath the view has a newer version and that no view beneath it was redefined.
#[derive(Debug, Default)]
pub(crate) struct ViewPlans {
    plans: Mutex<HashMap<TableName, Arc<CachedView>>>,
}

impl ViewPlans {
    /// The cached plan of `view`, if it is still current.
    pub(crate) async fn get(&self, lake: &Lake, view: &ViewDef) -> Option<LogicalPlan> {
        let cached = self.lock().get(&view.name).cloned()?;
        if cached.sql != view.sql || cached.stamp.is_none() || cached.stamp != view.stamp {
            return None;
        }
        if !cached.views.is_empty() {
            let stamps = lake.view_stamps(None).await.ok()?;
            for (name, stamp) in &cached.views {
                if stamp.is_none() || stamps.get(name) != stamp.as_ref() {
                    return None;
                }
            }
        }
        for (t, version) in &cached.tables {
            match lake.latest_version(t).await {
                Ok(Some(latest)) if latest == *version => {}
                _ => return None,
            }
        }
        Some(cached.plan.clone())
    }

    /// Keeps the plan of `view`, which read `deps`. Views it read were planned (or found
    /// current) just before, so their own dependencies are in the cache.
    pub(crate) fn insert(&self, view: &ViewDef, plan: &LogicalPlan, deps: Dependencies) {
        let mut plans = self.lock();
        let mut views: BTreeMap<TableName, Option<String>> = BTreeMap::new();
        let mut tables: BTreeMap<TableName, u64> = deps.tables.into_iter().collect();
        for v in deps.views {
            let Some(inner) = plans.get(&v) else {
                // Replaced meanwhile by another statement: do not cache what cannot be checked.
                plans.remove(&view.name);
                return;
            };
            views.insert(v.clone(), inner.stamp.clone());
            views.extend(inner.views.iter().cloned());
            tables.extend(inner.tables.iter().cloned());
        }
        plans.insert(
            view.name.clone(),
            Arc::new(CachedView {
                sql: view.sql.clone(),
                stamp: view.stamp.clone(),
                plan: plan.clone(),
                views: views.into_iter().collect(),
                tables: tables.into_iter().collect(),
            }),
        );
    }

    /// Every stored view that a query which read `deps` reaches, through the views it
    /// reads; `None` when one of them is no longer in the cache.
    pub(crate) fn reachable_views(&self, deps: &Dependencies) -> Option<BTreeSet<TableName>> {
        let plans = self.lock();
        let mut out = BTreeSet::new();
        for v in &deps.views {
            let inner = plans.get(v)?;
            out.insert(v.clone());
            out.extend(inner.views.iter().map(|(name, _)| name.clone()));
        }
        Some(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TableName, Arc<CachedView>>> {
        self.plans.lock().unwrap_or_else(|e| e.into_inner())
    }
}
