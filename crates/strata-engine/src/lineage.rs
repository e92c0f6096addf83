//! Column-level lineage from the planned query.
//!
//! A `SELECT` is planned (not optimized, so every projection and alias survives) and the
//! logical plan is walked bottom-up. Each output column of each node carries the set of
//! upstream `(table, column)` pairs it derives from and how:
//!
//! * `copied`: a column reference passed through, maybe renamed;
//! * `transformed`: an expression over columns (a cast, a `CASE`, a function…);
//! * `aggregated`: inside an aggregate or aggregate window function.
//!
//! Columns read by filters, join conditions, `HAVING`, `EXISTS` / `IN` subqueries and
//! `DISTINCT ON` are reported as `filtered_by` for the whole query.
//!
//! A table is named by its catalog name (`analytics.stg_orders`). A stored view is a
//! relation of its own: lineage stops at it rather than looking through its definition.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, TableReference};
use datafusion::logical_expr::{
    Distinct, Expr, LogicalPlan, WindowFunctionDefinition, expr::WindowFunction,
};
use serde::Serialize;

use crate::{Result, Session};

/// How an output column derives from an upstream column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LineageKind {
    /// Passed through unchanged, maybe renamed.
    Copied,
    /// An expression over the column.
    Transformed,
    /// Inside an aggregate.
    Aggregated,
}

impl LineageKind {
    /// `copied`, `transformed` or `aggregated`.
    pub fn as_str(self) -> &'static str {
        match self {
            LineageKind::Copied => "copied",
            LineageKind::Transformed => "transformed",
            LineageKind::Aggregated => "aggregated",
        }
    }
}

impl std::fmt::Display for LineageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An upstream column and how an output column derives from it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SourceColumn {
    /// The relation: `namespace.table`.
    pub table: String,
    /// The column of that relation.
    pub column: String,
    /// How it is used.
    pub kind: LineageKind,
}

/// An upstream column read by a filter or join condition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ColumnRef {
    /// The relation: `namespace.table`.
    pub table: String,
    /// The column of that relation.
    pub column: String,
}

/// The lineage of one output column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnLineage {
    /// The output column's name.
    pub column: String,
    /// What it derives from, sorted by table and column.
    pub sources: Vec<SourceColumn>,
}

/// The lineage of a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryLineage {
    /// One entry per output column, in output order.
    pub columns: Vec<ColumnLineage>,
    /// Upstream columns read by filters, join conditions and `HAVING`, sorted.
    pub filtered_by: Vec<ColumnRef>,
}

/// Plans `sql` (one `SELECT`) in `session` and computes the lineage of its output columns.
pub async fn column_lineage(session: &Session, sql: &str) -> Result<QueryLineage> {
    let state = session.context().state();
    let mut stmts = session.parse(sql)?;
    if stmts.len() != 1 {
        return Err(crate::Error::Invalid(format!(
            "lineage needs exactly one query, got {} statements",
            stmts.len()
        )));
    }
    let plan = state.statement_to_plan(stmts.remove(0)).await?;
    let opts = state.config_options();
    Ok(plan_lineage(
        &plan,
        &opts.catalog.default_catalog,
        &opts.catalog.default_schema,
    ))
}

/// Computes the lineage of an (unoptimized) logical plan. Table names are resolved against
/// `default_catalog` and `default_schema`; the catalog is left out of names in the default
/// catalog.
pub fn plan_lineage(
    plan: &LogicalPlan,
    default_catalog: &str,
    default_schema: &str,
) -> QueryLineage {
    let mut w = Walker {
        default_catalog,
        default_schema,
        filtered: BTreeSet::new(),
        work_tables: Vec::new(),
    };
    let plan = match plan {
        LogicalPlan::Explain(e) => e.plan.as_ref(),
        p => p,
    };
    let cols = w.plan(plan);
    let columns = plan
        .schema()
        .fields()
        .iter()
        .zip(cols)
        .map(|(f, s)| ColumnLineage {
            column: f.name().clone(),
            sources: s
                .into_iter()
                .map(|((table, column), kind)| SourceColumn {
                    table,
                    column,
                    kind,
                })
                .collect(),
        })
        .collect();
    QueryLineage {
        columns,
        filtered_by: w
            .filtered
            .into_iter()
            .map(|(table, column)| ColumnRef { table, column })
            .collect(),
    }
}

/// (table, column) → strongest use.
type Sources = BTreeMap<(String, String), LineageKind>;

struct Walker<'a> {
    default_catalog: &'a str,
    default_schema: &'a str,
    filtered: BTreeSet<(String, String)>,
    /// Names of the recursive CTEs being walked: their work tables are not relations.
    work_tables: Vec<String>,
}

fn merge(into: &mut Sources, from: &Sources) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_insert(*v);
        *e = (*e).max(*v);
    }
}

fn at_least(s: Sources, kind: LineageKind) -> Sources {
    s.into_iter().map(|(k, v)| (k, v.max(kind))).collect()
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        e => e,
    }
}

impl Walker<'_> {
    fn table_name(&self, t: &TableReference) -> String {
        let r = t.clone().resolve(self.default_catalog, self.default_schema);
        if r.catalog.as_ref() == self.default_catalog {
            format!("{}.{}", r.schema, r.table)
        } else {
            format!("{}.{}.{}", r.catalog, r.schema, r.table)
        }
    }

    fn relation(&self, t: &TableReference, schema: &DFSchema) -> Vec<Sources> {
        let name = self.table_name(t);
        schema
            .fields()
            .iter()
            .map(|f| Sources::from([((name.clone(), f.name().clone()), LineageKind::Copied)]))
            .collect()
    }

    /// The lineage of each output column of `plan`.
    fn plan(&mut self, plan: &LogicalPlan) -> Vec<Sources> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                if let TableReference::Bare { table } = &scan.table_name
                    && self.work_tables.iter().any(|w| w == table.as_ref())
                {
                    return vec![Sources::new(); scan.projected_schema.fields().len()];
                }
                let cols = self.relation(&scan.table_name, &scan.projected_schema);
                for f in &scan.filters {
                    self.filter_expr(f, plan, &cols);
                }
                cols
            }
            // A qualified alias is a stored view inlined by the planner: a relation of its own.
            LogicalPlan::SubqueryAlias(a) if !matches!(a.alias, TableReference::Bare { .. }) => {
                self.relation(&a.alias, &a.schema)
            }
            LogicalPlan::SubqueryAlias(a) => self.plan(&a.input),
            LogicalPlan::Subquery(s) => self.plan(&s.subquery),
            LogicalPlan::Projection(p) => {
                let input = self.plan(&p.input);
                p.expr
                    .iter()
                    .map(|e| self.expr(e, &p.input, &input))
                    .collect()
            }
            LogicalPlan::Filter(f) => {
                let input = self.plan(&f.input);
                self.filter_expr(&f.predicate, &f.input, &input);
                input
            }
            LogicalPlan::Aggregate(a) => {
                let input = self.plan(&a.input);
                let mut out = Vec::new();
                let grouping_set = matches!(a.group_expr.as_slice(), [Expr::GroupingSet(_)]);
                for e in &a.group_expr {
                    match e {
                        Expr::GroupingSet(gs) => {
                            for g in gs.distinct_expr() {
                                out.push(self.expr(g, &a.input, &input));
                            }
                        }
                        e => out.push(self.expr(e, &a.input, &input)),
                    }
                }
                if grouping_set {
                    out.push(Sources::new());
                }
                for e in &a.aggr_expr {
                    let s = self.expr(e, &a.input, &input);
                    out.push(at_least(s, LineageKind::Aggregated));
                }
                out
            }
            LogicalPlan::Window(win) => {
                let mut out = self.plan(&win.input);
                let input = out.clone();
                for e in &win.window_expr {
                    let kind = match strip_alias(e) {
                        Expr::WindowFunction(wf) => match wf.as_ref() {
                            WindowFunction {
                                fun: WindowFunctionDefinition::AggregateUDF(_),
                                ..
                            } => LineageKind::Aggregated,
                            _ => LineageKind::Transformed,
                        },
                        _ => LineageKind::Transformed,
                    };
                    let s = self.expr(e, &win.input, &input);
                    out.push(at_least(s, kind));
                }
                out
            }
            LogicalPlan::Join(j) => {
                let left = self.plan(&j.left);
                let right = self.plan(&j.right);
                let both = || left.iter().chain(right.iter()).cloned().collect::<Vec<_>>();
                let joined = both();
                for (l, r) in &j.on {
                    self.filter_expr(l, &j.left, &left);
                    self.filter_expr(r, &j.right, &right);
                }
                if let Some(f) = &j.filter {
                    let mut schema = j.left.schema().as_ref().clone();
                    schema.merge(j.right.schema());
                    let cols = self.columns_of(f, &schema, &joined);
                    self.filtered.extend(cols.into_keys());
                    self.subqueries(f, true);
                }
                j.schema
                    .iter()
                    .map(|(q, f)| {
                        let c = Column::new(q.cloned(), f.name());
                        if let Some(i) = j.left.schema().maybe_index_of_column(&c) {
                            left[i].clone()
                        } else if let Some(i) = j.right.schema().maybe_index_of_column(&c) {
                            right[i].clone()
                        } else {
                            Sources::new()
                        }
                    })
                    .collect()
            }
            LogicalPlan::Union(u) => {
                let mut out = vec![Sources::new(); u.schema.fields().len()];
                for input in &u.inputs {
                    for (o, s) in out.iter_mut().zip(self.plan(input)) {
                        merge(o, &s);
                    }
                }
                out
            }
            LogicalPlan::RecursiveQuery(r) => {
                let mut out = self.plan(&r.static_term);
                self.work_tables.push(r.name.clone());
                let rec = self.plan(&r.recursive_term);
                self.work_tables.pop();
                for (o, s) in out.iter_mut().zip(rec) {
                    merge(o, &s);
                }
                out
            }
            LogicalPlan::Distinct(Distinct::All(input)) => self.plan(input),
            LogicalPlan::Distinct(Distinct::On(d)) => {
                let input = self.plan(&d.input);
                for e in &d.on_expr {
                    self.filter_expr(e, &d.input, &input);
                }
                d.select_expr
                    .iter()
                    .map(|e| self.expr(e, &d.input, &input))
                    .collect()
            }
            LogicalPlan::Sort(s) => self.plan(&s.input),
            LogicalPlan::Limit(l) => self.plan(&l.input),
            LogicalPlan::Repartition(r) => self.plan(&r.input),
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
                vec![Sources::new(); plan.schema().fields().len()]
            }
            other => self.passthrough(other),
        }
    }

    /// Any other node: an output column found by name in an input keeps its lineage; the
    /// others derive (transformed) from every input column.
    fn passthrough(&mut self, plan: &LogicalPlan) -> Vec<Sources> {
        let inputs: Vec<(&LogicalPlan, Vec<Sources>)> = plan
            .inputs()
            .into_iter()
            .map(|p| (p, self.plan(p)))
            .collect();
        plan.schema()
            .iter()
            .map(|(q, f)| {
                let c = Column::new(q.cloned(), f.name());
                for (p, cols) in &inputs {
                    if let Some(i) = p.schema().maybe_index_of_column(&c) {
                        return cols[i].clone();
                    }
                }
                let mut all = Sources::new();
                for (_, cols) in &inputs {
                    for s in cols {
                        merge(&mut all, s);
                    }
                }
                at_least(all, LineageKind::Transformed)
            })
            .collect()
    }

    /// The lineage of an expression over `input`, whose columns have lineage `cols`.
    fn expr(&mut self, e: &Expr, input: &LogicalPlan, cols: &[Sources]) -> Sources {
        let e = strip_alias(e);
        let mut s = self.columns_of(e, input.schema(), cols);
        let scalar = self.subqueries(e, false);
        merge(&mut s, &scalar);
        if matches!(e, Expr::Column(_)) {
            s
        } else {
            at_least(s, LineageKind::Transformed)
        }
    }

    /// Records the upstream columns of a predicate as filters.
    fn filter_expr(&mut self, e: &Expr, input: &LogicalPlan, cols: &[Sources]) {
        let s = self.columns_of(e, input.schema(), cols);
        self.filtered.extend(s.into_keys());
        let scalar = self.subqueries(e, true);
        self.filtered.extend(scalar.into_keys());
    }

    /// The lineage of the columns an expression references (not looking into subqueries).
    fn columns_of(&self, e: &Expr, schema: &DFSchema, cols: &[Sources]) -> Sources {
        let mut s = Sources::new();
        for c in e.column_refs() {
            if let Some(i) = schema.maybe_index_of_column(c) {
                merge(&mut s, &cols[i]);
            }
        }
        s
    }

    /// Walks the subqueries of an expression. `EXISTS` and `IN` subqueries, and every
    /// subquery of a predicate, only filter; the columns of scalar subqueries outside
    /// predicates are returned.
    fn subqueries(&mut self, e: &Expr, predicate: bool) -> Sources {
        let mut plans = Vec::new();
        e.apply(|x| {
            match x {
                Expr::ScalarSubquery(q) => {
                    plans.push((std::sync::Arc::clone(&q.subquery), predicate))
                }
                Expr::Exists(q) => plans.push((std::sync::Arc::clone(&q.subquery.subquery), true)),
                Expr::InSubquery(q) => {
                    plans.push((std::sync::Arc::clone(&q.subquery.subquery), true))
                }
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .expect("walking an expression cannot fail");
        let mut out = Sources::new();
        for (p, filters) in plans {
            for s in self.plan(&p) {
                if filters {
                    self.filtered.extend(s.into_keys());
                } else {
                    merge(&mut out, &s);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::catalog::MemorySchemaProvider;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;
    use LineageKind::{Aggregated, Copied, Transformed};

    fn ctx() -> SessionContext {
        let ctx = SessionContext::new();
        let catalog = ctx.catalog("datafusion").expect("default catalog");
        catalog
            .register_schema("analytics", Arc::new(MemorySchemaProvider::new()))
            .expect("schema");
        let tables: [(&str, &[(&str, DataType)]); 2] = [
            (
                "analytics.orders",
                &[
                    ("order_id", DataType::Int64),
                    ("customer_id", DataType::Int64),
                    ("amount", DataType::Float64),
                    ("status", DataType::Utf8),
                ],
            ),
            (
                "analytics.customers",
                &[
                    ("customer_id", DataType::Int64),
                    ("name", DataType::Utf8),
                    ("country", DataType::Utf8),
                ],
            ),
        ];
        for (name, cols) in tables {
            let schema = Arc::new(Schema::new(
                cols.iter()
                    .map(|(n, t)| Field::new(*n, t.clone(), true))
                    .collect::<Vec<_>>(),
            ));
            let table = MemTable::try_new(schema, vec![vec![]]).expect("table");
            ctx.register_table(name, Arc::new(table)).expect("register");
        }
        ctx
    }

    async fn lineage(sql: &str) -> QueryLineage {
        let ctx = ctx();
        let plan = ctx.state().create_logical_plan(sql).await.expect("plan");
        plan_lineage(&plan, "datafusion", "public")
    }

    fn src(table: &str, column: &str, kind: LineageKind) -> SourceColumn {
        SourceColumn {
            table: format!("analytics.{table}"),
            column: column.into(),
            kind,
        }
    }

    fn col(table: &str, column: &str) -> ColumnRef {
        ColumnRef {
            table: format!("analytics.{table}"),
            column: column.into(),
        }
    }

    fn columns(l: &QueryLineage) -> Vec<(&str, Vec<SourceColumn>)> {
        l.columns
            .iter()
            .map(|c| (c.column.as_str(), c.sources.clone()))
            .collect()
    }

    #[tokio::test]
    async fn lineage_copied_and_renamed() {
        let l = lineage("SELECT order_id, amount AS total FROM analytics.orders o").await;
        assert_eq!(
            columns(&l),
            vec![
                ("order_id", vec![src("orders", "order_id", Copied)]),
                ("total", vec![src("orders", "amount", Copied)]),
            ]
        );
        assert!(l.filtered_by.is_empty());
    }

    #[tokio::test]
    async fn lineage_expression() {
        let l = lineage(
            "SELECT amount * 100 AS cents, CASE WHEN status = 'x' THEN amount END AS x_amount, \
             'const' AS c FROM analytics.orders",
        )
        .await;
        assert_eq!(
            columns(&l),
            vec![
                ("cents", vec![src("orders", "amount", Transformed)]),
                (
                    "x_amount",
                    vec![
                        src("orders", "amount", Transformed),
                        src("orders", "status", Transformed)
                    ]
                ),
                ("c", vec![]),
            ]
        );
    }

    #[tokio::test]
    async fn lineage_aggregate_with_having() {
        let l = lineage(
            "SELECT customer_id, sum(amount) AS revenue, count(*) AS n, max(amount) + 1 AS top \
             FROM analytics.orders GROUP BY customer_id HAVING count(order_id) > 1",
        )
        .await;
        assert_eq!(
            columns(&l),
            vec![
                ("customer_id", vec![src("orders", "customer_id", Copied)]),
                ("revenue", vec![src("orders", "amount", Aggregated)]),
                ("n", vec![]),
                ("top", vec![src("orders", "amount", Aggregated)]),
            ]
        );
        assert_eq!(l.filtered_by, vec![col("orders", "order_id")]);
    }

    #[tokio::test]
    async fn lineage_join_with_filter() {
        let l = lineage(
            "SELECT o.order_id, c.name AS customer_name, upper(c.country) AS country \
             FROM analytics.orders o JOIN analytics.customers c ON o.customer_id = c.customer_id \
             WHERE o.status = 'completed'",
        )
        .await;
        assert_eq!(
            columns(&l),
            vec![
                ("order_id", vec![src("orders", "order_id", Copied)]),
                ("customer_name", vec![src("customers", "name", Copied)]),
                ("country", vec![src("customers", "country", Transformed)]),
            ]
        );
        assert_eq!(
            l.filtered_by,
            vec![
                col("customers", "customer_id"),
                col("orders", "customer_id"),
                col("orders", "status"),
            ]
        );
    }

    #[tokio::test]
    async fn lineage_through_ctes() {
        let l = lineage(
            "WITH o AS (SELECT customer_id AS cid, amount AS amt FROM analytics.orders), \
             agg AS (SELECT cid, sum(amt) AS total FROM o GROUP BY cid) \
             SELECT a.cid AS customer_id, a.total, c.name FROM agg a \
             LEFT JOIN analytics.customers c ON c.customer_id = a.cid",
        )
        .await;
        assert_eq!(
            columns(&l),
            vec![
                ("customer_id", vec![src("orders", "customer_id", Copied)]),
                ("total", vec![src("orders", "amount", Aggregated)]),
                ("name", vec![src("customers", "name", Copied)]),
            ]
        );
        assert_eq!(
            l.filtered_by,
            vec![
                col("customers", "customer_id"),
                col("orders", "customer_id")
            ]
        );
    }

    #[tokio::test]
    async fn lineage_union_window_and_subqueries() {
        let l = lineage(
            "SELECT customer_id AS id, name AS label FROM analytics.customers \
             UNION ALL SELECT order_id, status FROM analytics.orders \
             WHERE customer_id IN (SELECT customer_id FROM analytics.customers WHERE country = 'NL')",
        )
        .await;
        assert_eq!(
            columns(&l),
            vec![
                (
                    "id",
                    vec![
                        src("customers", "customer_id", Copied),
                        src("orders", "order_id", Copied)
                    ]
                ),
                (
                    "label",
                    vec![
                        src("customers", "name", Copied),
                        src("orders", "status", Copied)
                    ]
                ),
            ]
        );
        assert_eq!(
            l.filtered_by,
            vec![
                col("customers", "country"),
                col("customers", "customer_id"),
                col("orders", "customer_id"),
            ]
        );

        let l = lineage(
            "SELECT order_id, sum(amount) OVER (PARTITION BY customer_id) AS running, \
             row_number() OVER (ORDER BY amount) AS rn FROM analytics.orders ORDER BY order_id LIMIT 5",
        )
        .await;
        assert_eq!(
            columns(&l),
            vec![
                ("order_id", vec![src("orders", "order_id", Copied)]),
                (
                    "running",
                    vec![
                        src("orders", "amount", Aggregated),
                        src("orders", "customer_id", Aggregated)
                    ]
                ),
                ("rn", vec![src("orders", "amount", Transformed)]),
            ]
        );
    }
}
