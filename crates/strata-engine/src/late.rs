//! Values computed only to be shown are computed after a top-K sort, not before it.
//!
//! ```text
//!   Sort: amount DESC, fetch=100                 Projection: mask(email) AS email, amount
//!     Projection: mask(email) AS email, amount     Sort: amount DESC, fetch=100
//!       TableScan: orders              ──▶           TableScan: orders
//! ```
//!
//! A column mask is a projection over its table's scan, so a listing such as
//! `SELECT email, amount FROM orders ORDER BY amount DESC LIMIT 100` (a BI table, a REST
//! page) would mask every row the sort sees to show a hundred. When the sort's keys are
//! columns the projection passes through unchanged, and what it computes gives the same
//! answer whenever it is computed, computing it on the rows the sort keeps gives the same
//! result. Predicates, joins and aggregates above are untouched: they still see the masked
//! values, in the same place.
//!
//! DataFusion's physical optimizer pushes a projection back below a sort only when it
//! narrows the rows; this one keeps every column the sort passes on.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DataFusionError};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, Sort};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// Sorts keeping more rows than this are left as they are: the rows the sort holds carry
/// the columns the projection would have dropped.
const MAX_FETCH: usize = 65_536;

/// Moves a projection that computes something above the top-K sort over it.
#[derive(Debug, Default)]
pub(crate) struct ProjectAfterTopK;

impl OptimizerRule for ProjectAfterTopK {
    fn name(&self) -> &str {
        "strata_project_after_top_k"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>, DataFusionError> {
        let LogicalPlan::Sort(sort) = plan else {
            return Ok(Transformed::no(plan));
        };
        let movable = match (sort.fetch, sort.input.as_ref()) {
            (Some(fetch), LogicalPlan::Projection(p)) if fetch <= MAX_FETCH => {
                computes(p) && same_everywhere(p) && keys_pass_through(&sort, p)
            }
            _ => false,
        };
        if !movable {
            return Ok(Transformed::no(LogicalPlan::Sort(sort)));
        }
        let Sort { expr, input, fetch } = sort;
        let LogicalPlan::Projection(p) = Arc::unwrap_or_clone(input) else {
            unreachable!("checked above");
        };
        let sorted = LogicalPlan::Sort(Sort {
            expr,
            input: p.input,
            fetch,
        });
        let projected = Projection::try_new_with_schema(p.expr, Arc::new(sorted), p.schema)?;
        Ok(Transformed::yes(LogicalPlan::Projection(projected)))
    }
}

/// Whether `p` computes anything (beyond passing, renaming or stating values).
fn computes(p: &Projection) -> bool {
    p.expr.iter().any(|e| {
        !matches!(
            e.clone().unalias_nested().data,
            Expr::Column(_) | Expr::Literal(..)
        )
    })
}

/// Whether every expression of `p` gives the same value for the same row whenever it runs.
fn same_everywhere(p: &Projection) -> bool {
    p.expr.iter().all(|e| {
        !e.is_volatile()
            && !e
                .exists(|e| {
                    Ok(matches!(
                        e,
                        Expr::ScalarSubquery(_)
                            | Expr::Exists(_)
                            | Expr::InSubquery(_)
                            | Expr::ScalarVariable(..)
                            | Expr::Placeholder(_)
                    ))
                })
                .unwrap_or(true)
    })
}

/// Whether each column the sort's keys read is one `p` passes through as it is, so the
/// keys mean the same over `p`'s input.
fn keys_pass_through(sort: &Sort, p: &Projection) -> bool {
    let passed: Vec<&Column> = p
        .expr
        .iter()
        .filter_map(|e| match e {
            Expr::Column(c) => Some(c),
            _ => None,
        })
        .collect();
    sort.expr.iter().all(|k| {
        k.expr.column_refs().into_iter().all(|c| {
            passed.contains(&c) && p.schema.has_column(c) && p.input.schema().has_column(c)
        })
    })
}
