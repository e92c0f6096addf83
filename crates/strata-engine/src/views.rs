//! Checks on stored views.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::visit_relations;
use strata_lake::TableName;

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
