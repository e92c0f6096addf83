//! Catalog queries of Postgres clients that DataFusion cannot plan, rewritten into queries
//! that mean the same against Strata's catalog.
//!
//! Two kinds of rewrite, both applied before the query reaches the Postgres-compatibility
//! parser:
//!
//! - [`CLIENT_SQL_REWRITES`]: fixed fragments one client sends, replaced by text.
//! - A scalar subquery that looks up a column's default (`pg_attrdef`), identity sequence
//!   (`pg_sequence`) or collation (`pg_collation`) for a row of `pg_attribute` is `NULL`:
//!   no column `pg_attribute` lists has a default, is an identity column or has a collation
//!   other than the default (`atthasdef` false, `attidentity` '', `attcollation` 0 on every
//!   row), so in PostgreSQL too each such subquery finds no row. A `CASE` whose every branch
//!   is then `NULL` is `NULL` too. This is how SQLAlchemy's column reflection
//!   (`inspector.get_columns`) asks for them: correlated subqueries inside `CASE`, with
//!   `json_build_object`, which DataFusion cannot plan.

use std::borrow::Cow;
use std::ops::ControlFlow;

use strata_engine::datafusion::sql::sqlparser::ast::{
    BinaryOperator, CastKind, DataType, Expr, FunctionArguments, Ident, ObjectName, Query,
    SelectItem, SetExpr, Statement, TableFactor, TableWithJoins, Value, VisitMut, VisitorMut,
};
use strata_engine::datafusion::sql::sqlparser::ast::{JoinOperator, Visit, Visitor};
use strata_engine::datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use strata_engine::datafusion::sql::sqlparser::parser::Parser;

/// PostgreSQL's `CREATE USER name [WITH] options` as what it means, `CREATE ROLE name [WITH]
/// options LOGIN` (the parser reads `CREATE USER` in Snowflake's form). `None` when `query`
/// is not one `CREATE USER` statement.
fn create_user_as_role(query: &str) -> Option<String> {
    let rest = query.trim_start();
    let (create, rest) = rest.split_once(|c: char| c.is_ascii_whitespace())?;
    let rest = rest.trim_start();
    let (user, body) = rest.split_at_checked(4)?;
    if !create.eq_ignore_ascii_case("create")
        || !user.eq_ignore_ascii_case("user")
        || !body.starts_with(|c: char| c.is_ascii_whitespace())
    {
        return None;
    }
    let body = body.trim_end().trim_end_matches(';').trim_end();
    // With LOGIN added unless the options already say LOGIN or NOLOGIN.
    [
        format!("CREATE ROLE{body} LOGIN"),
        format!("CREATE ROLE{body}"),
    ]
    .into_iter()
    .find(|candidate| {
        matches!(
            Parser::parse_sql(&PostgreSqlDialect {}, candidate).as_deref(),
            Ok([Statement::CreateRole(_)])
        )
    })
}

/// PostgreSQL's `GRANT r1, r2 TO m` / `REVOKE r FROM m` (role membership) as the parser
/// reads it, `GRANT ROLE r1, ROLE r2 TO m`. `None` when `query` is not one such statement
/// (a grant of privileges, or a statement that does not parse either way).
fn grant_role_spelled_out(query: &str) -> Option<String> {
    let text = query.trim().trim_end_matches(';').trim_end();
    let (verb, rest) = text.split_once(|c: char| c.is_ascii_whitespace())?;
    let to = if verb.eq_ignore_ascii_case("grant") {
        "to"
    } else if verb.eq_ignore_ascii_case("revoke") {
        "from"
    } else {
        return None;
    };
    let words: Vec<&str> = rest.split_ascii_whitespace().collect();
    let at = words.iter().position(|w| w.eq_ignore_ascii_case(to))?;
    let listed = words[..at].join(" ");
    let roles: Vec<&str> = listed
        .split(',')
        .map(|r| roles_only(r.trim()))
        .collect::<Option<_>>()?;
    let candidate = format!(
        "{} {} {}",
        verb.to_ascii_uppercase(),
        roles
            .iter()
            .map(|r| format!("ROLE {r}"))
            .collect::<Vec<_>>()
            .join(", "),
        words[at..].join(" ")
    );
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &candidate).ok()?;
    matches!(
        parsed.as_slice(),
        [Statement::Grant(_) | Statement::Revoke(_)]
    )
    .then_some(candidate)
}

/// `word` if it can only be a role name: an identifier that is no privilege keyword.
fn roles_only(word: &str) -> Option<&str> {
    const PRIVILEGES: &[&str] = &[
        "all",
        "select",
        "insert",
        "update",
        "delete",
        "truncate",
        "references",
        "trigger",
        "create",
        "connect",
        "temporary",
        "temp",
        "execute",
        "usage",
        "role",
        "maintain",
    ];
    let plain = !word.is_empty()
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !word.starts_with(|c: char| c.is_ascii_digit());
    (plain && !PRIVILEGES.iter().any(|p| word.eq_ignore_ascii_case(p))).then_some(word)
}

/// Fragments of the catalog queries clients send that DataFusion cannot plan, each with
/// the text that means the same in Strata.
const CLIENT_SQL_REWRITES: &[(&str, &str)] = &[
    // psql `\d+`: the table's storage options followed by its TOAST table's, built with
    // `ARRAY(subquery)`. Strata tables have neither (`pg_class` has no `reloptions`), and
    // psql's own `\d` asks for `''` in this place.
    (
        "pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')",
        "''",
    ),
];

/// `pg_catalog` relations describing properties no column listed in `pg_attribute` has.
const COLUMN_PROPERTY_RELATIONS: &[&str] = &["pg_sequence", "pg_attrdef", "pg_collation"];

/// Functions a folded subquery may compute: scalar functions, which give no row over no
/// rows (an aggregate such as `count(*)` gives one, so a subquery with one is kept).
const SCALAR_FUNCTIONS: &[&str] = &[
    "json_build_object",
    "jsonb_build_object",
    "pg_get_expr",
    "pg_collation_is_visible",
    "format_type",
    "coalesce",
];

/// `query` with the fixed fragments replaced and column-property lookups folded to `NULL`.
pub(crate) fn rewrite(query: &str) -> Cow<'_, str> {
    if let Some(role) = create_user_as_role(query).or_else(|| grant_role_spelled_out(query)) {
        return Cow::Owned(role);
    }
    let mut out = Cow::Borrowed(query);
    for (from, to) in CLIENT_SQL_REWRITES {
        if out.contains(from) {
            out = Cow::Owned(out.replace(from, to));
        }
    }
    let lower = out.to_ascii_lowercase();
    if lower.contains("pg_class.reloptions")
        && let Some(text) = storage_options_as_null(&out)
    {
        out = Cow::Owned(text);
    }
    let lower = out.to_ascii_lowercase();
    if lower.contains("indkey")
        && (lower.contains("unnest") || lower.contains("generate_subscripts"))
        && let Some(text) = index_keys_as_arrays(&out)
    {
        out = Cow::Owned(text);
    }
    let lower = out.to_ascii_lowercase();
    if !COLUMN_PROPERTY_RELATIONS.iter().any(|r| lower.contains(r)) {
        return out;
    }
    let Ok(mut statements) = Parser::parse_sql(&PostgreSqlDialect {}, &out) else {
        // The query's own parse reports the error.
        return out;
    };
    let mut folder = FoldEmptySubqueries::default();
    let _ = VisitMut::visit(&mut statements, &mut folder);
    if !folder.folded {
        return out;
    }
    if !folder.dropped.is_empty() && !keep_parameters(&mut statements, folder.dropped) {
        return out;
    }
    let text: Vec<String> = statements.iter().map(ToString::to_string).collect();
    Cow::Owned(text.join("; "))
}

/// `SELECT … pg_class.reloptions …` (SQLAlchemy's table and index reflection asks for the
/// storage options of relations): no relation has any here, and `pg_class` has no such
/// column, so the item is `NULL AS reloptions`. `None` when nothing was rewritten.
fn storage_options_as_null(query: &str) -> Option<String> {
    struct Options {
        rewrote: bool,
    }
    impl VisitorMut for Options {
        type Break = ();
        fn post_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            let SetExpr::Select(select) = q.body.as_mut() else {
                return ControlFlow::Continue(());
            };
            for item in &mut select.projection {
                let SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) = item else {
                    continue;
                };
                let names: Vec<String> = parts.iter().map(|p| p.value.to_lowercase()).collect();
                if names.ends_with(&["pg_class".to_string(), "reloptions".to_string()]) {
                    *item = SelectItem::ExprWithAlias {
                        expr: Expr::Cast {
                            kind: CastKind::Cast,
                            expr: Box::new(Expr::value(Value::Null)),
                            data_type: DataType::Text,
                            array: false,
                            format: None,
                        },
                        alias: Ident::new("reloptions"),
                    };
                    self.rewrote = true;
                }
            }
            ControlFlow::Continue(())
        }
    }
    rewrite_statements(query, |statements| {
        let mut visitor = Options { rewrote: false };
        let _ = VisitMut::visit(statements, &mut visitor);
        visitor.rewrote
    })
}

/// Parses `query` (PostgreSQL dialect), lets `rewrite` change the statements, and prints them
/// back if it says it changed something.
fn rewrite_statements(
    query: &str,
    rewrite: impl FnOnce(&mut Vec<Statement>) -> bool,
) -> Option<String> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, query).ok()?;
    if !rewrite(&mut statements) {
        return None;
    }
    let text: Vec<String> = statements.iter().map(ToString::to_string).collect();
    Some(text.join("; "))
}

/// The element type of a `pg_index` column of PostgreSQL's vector types (`int2vector`,
/// `oidvector`), which are text here (`'1 2'`), from the column's (qualified) name.
fn vector_type(column: &str) -> Option<&'static str> {
    let column = column.to_ascii_lowercase();
    let name = column.rsplit('.').next().unwrap_or(&column);
    match name {
        "indkey" | "indoption" => Some("SMALLINT"),
        "indclass" | "indcollation" => Some("BIGINT"),
        _ => None,
    }
}

/// `unnest(v)` and `generate_subscripts(v, dim)` of a `pg_index` vector column ([`vector_type`])
/// read it as the array it is. This is how SQLAlchemy's primary-key and index reflection lists
/// a key's columns, in order. `None` when nothing was rewritten.
fn index_keys_as_arrays(query: &str) -> Option<String> {
    struct IndexKeys {
        rewrote: bool,
    }
    impl VisitorMut for IndexKeys {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            let Expr::Function(f) = expr else {
                return ControlFlow::Continue(());
            };
            let name = f.name.to_string().to_ascii_lowercase();
            let FunctionArguments::List(list) = &f.args else {
                return ControlFlow::Continue(());
            };
            let args: Vec<String> = list.args.iter().map(ToString::to_string).collect();
            let keys = |a: &str| format!("string_to_array({a}, ' ')");
            let text = match (name.as_str(), args.as_slice()) {
                ("unnest" | "pg_catalog.unnest", [a]) if vector_type(a).is_some() => {
                    let element = vector_type(a).unwrap_or("BIGINT");
                    format!("unnest(CAST({} AS {element}[]))", keys(a))
                }
                // One dimension: subscripts 1..n for dimension 1, none for any other.
                ("generate_subscripts" | "pg_catalog.generate_subscripts", [a, dim])
                    if vector_type(a).is_some() =>
                {
                    format!(
                        "unnest(range(1, CASE WHEN CAST({dim} AS BIGINT) = 1 THEN CAST(cardinality({}) AS BIGINT) + 1 ELSE 1 END))",
                        keys(a)
                    )
                }
                _ => return ControlFlow::Continue(()),
            };
            if let Ok(e) = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(&text)
                .and_then(|mut p| p.parse_expr())
            {
                *expr = e;
                self.rewrote = true;
            }
            ControlFlow::Continue(())
        }
    }
    rewrite_statements(query, |statements| {
        let mut visitor = IndexKeys { rewrote: false };
        let _ = VisitMut::visit(statements, &mut visitor);
        visitor.rewrote
    })
}

#[derive(Default)]
struct FoldEmptySubqueries {
    folded: bool,
    /// Parameters (`$n`, with their cast if they have one) that were only in folded
    /// expressions.
    dropped: Vec<Expr>,
}

impl VisitorMut for FoldEmptySubqueries {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let fold = match expr {
            Expr::Subquery(q) => is_column_property_lookup(q),
            Expr::Case {
                conditions,
                else_result,
                ..
            } => {
                conditions.iter().all(|c| is_null(&c.result))
                    && else_result.as_deref().is_none_or(is_null)
            }
            _ => false,
        };
        if fold {
            parameters(expr, &mut self.dropped);
            *expr = Expr::value(Value::Null);
            self.folded = true;
        }
        ControlFlow::Continue(())
    }
}

/// Adds the parameters in `e` to `out`, each once, with the cast written on it.
fn parameters(e: &Expr, out: &mut Vec<Expr>) {
    struct Collect<'a>(&'a mut Vec<Expr>);
    impl Visitor for Collect<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            let placeholder = |e: &Expr| match e {
                Expr::Value(v) => matches!(v.value, Value::Placeholder(_)),
                _ => false,
            };
            let found = match e {
                Expr::Cast { expr, .. } if placeholder(expr) => Some((e.clone(), expr)),
                _ if placeholder(e) => Some((e.clone(), &Box::new(e.clone()))),
                _ => None,
            };
            if let Some((whole, p)) = found {
                let name = p.to_string();
                if !self.0.iter().any(|d| placeholder_name(d) == name) {
                    self.0.push(whole);
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = Visit::visit(e, &mut Collect(out));
}

fn placeholder_name(e: &Expr) -> String {
    match e {
        Expr::Cast { expr, .. } => expr.to_string(),
        other => other.to_string(),
    }
}

/// Keeps the parameters of folded expressions in the statement: a client binds every
/// parameter it wrote, by position, so each must still be there, with its type. They
/// are added to the outermost `WHERE` as conditions that always hold. Whether the
/// statement could take them.
fn keep_parameters(statements: &mut [Statement], dropped: Vec<Expr>) -> bool {
    let [Statement::Query(q)] = statements else {
        return false;
    };
    let SetExpr::Select(select) = q.body.as_mut() else {
        return false;
    };
    for p in dropped {
        // `$n IS NULL OR TRUE`
        let always = Expr::BinaryOp {
            left: Box::new(Expr::IsNull(Box::new(p))),
            op: BinaryOperator::Or,
            right: Box::new(Expr::value(Value::Boolean(true))),
        };
        let always = Expr::Nested(Box::new(always));
        select.selection = Some(match select.selection.take() {
            Some(w) => Expr::BinaryOp {
                left: Box::new(w),
                op: BinaryOperator::And,
                right: Box::new(always),
            },
            None => always,
        });
    }
    true
}

fn is_null(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if v.value == Value::Null)
}

/// Whether `q` looks up a property of a `pg_attribute` row in a relation that has none for
/// it: a plain `SELECT` of scalar expressions from one of [`COLUMN_PROPERTY_RELATIONS`],
/// joined to others only by inner joins, whose condition refers to the outer row's
/// `att…` columns (those relations' own columns are named `ad…`, `seq…`, `coll…`).
fn is_column_property_lookup(q: &Query) -> bool {
    if q.with.is_some() {
        return false;
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return false;
    };
    let grouped = !matches!(
        &select.group_by,
        strata_engine::datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(e, m)
            if e.is_empty() && m.is_empty()
    );
    if grouped || select.having.is_some() || select.from.len() != 1 {
        return false;
    }
    let TableWithJoins { relation, joins } = &select.from[0];
    let inner_only = joins.iter().all(|j| {
        matches!(
            j.join_operator,
            JoinOperator::Inner(_) | JoinOperator::Join(_) | JoinOperator::CrossJoin(_)
        )
    });
    let property = std::iter::once(relation)
        .chain(joins.iter().map(|j| &j.relation))
        .any(is_column_property_relation);
    let correlated = select
        .selection
        .as_ref()
        .is_some_and(refers_to_attribute_columns);
    property && inner_only && correlated && select.projection.iter().all(scalar_item)
}

/// Whether `e` names a `pg_attribute` column (`attrelid`, `a.attnum`, …).
fn refers_to_attribute_columns(e: &Expr) -> bool {
    struct Find;
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            let name = match e {
                Expr::Identifier(i) => Some(i),
                Expr::CompoundIdentifier(parts) => parts.last(),
                _ => None,
            };
            match name {
                Some(i) if i.value.to_ascii_lowercase().starts_with("att") => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    Visit::visit(e, &mut Find).is_break()
}

fn is_column_property_relation(t: &TableFactor) -> bool {
    let TableFactor::Table { name, .. } = t else {
        return false;
    };
    relation_name(name).is_some_and(|n| COLUMN_PROPERTY_RELATIONS.contains(&n.as_str()))
}

/// `pg_x` or `pg_catalog.pg_x`, lowercased; other names are not catalog relations.
fn relation_name(name: &ObjectName) -> Option<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [n] => Some(n.clone()),
        [schema, n] if schema == "pg_catalog" => Some(n.clone()),
        _ => None,
    }
}

/// Whether a projected item computes only scalar functions of its row.
fn scalar_item(item: &SelectItem) -> bool {
    struct OnlyScalar;
    impl Visitor for OnlyScalar {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            match e {
                Expr::Function(f) => {
                    let name = f.name.0.last().and_then(|p| p.as_ident());
                    let known = name.is_some_and(|i| {
                        SCALAR_FUNCTIONS.contains(&i.value.to_ascii_lowercase().as_str())
                    });
                    let plain = matches!(f.args, FunctionArguments::List(_))
                        && f.over.is_none()
                        && f.filter.is_none();
                    if known && plain {
                        ControlFlow::Continue(())
                    } else {
                        ControlFlow::Break(())
                    }
                }
                // A nested query could itself aggregate; keep the subquery.
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
            Visit::visit(e, &mut OnlyScalar).is_continue()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn psql_verbose_describe_fragment_is_rewritten() {
        let q = "SELECT c.relchecks, pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')\nFROM pg_catalog.pg_class c";
        assert_eq!(
            rewrite(q),
            "SELECT c.relchecks, ''\nFROM pg_catalog.pg_class c"
        );
        assert_eq!(rewrite("select 1"), "select 1");
    }

    #[test]
    fn index_keys_are_read_as_arrays() {
        let q = "SELECT unnest(pg_catalog.pg_index.indkey) AS attnum, generate_subscripts(pg_catalog.pg_index.indkey, $1::INTEGER) AS ord FROM pg_catalog.pg_index";
        assert_eq!(
            rewrite(q),
            "SELECT unnest(CAST(string_to_array(pg_catalog.pg_index.indkey, ' ') AS SMALLINT[])) AS attnum, \
             unnest(range(1, CASE WHEN CAST($1::INTEGER AS BIGINT) = 1 THEN CAST(cardinality(string_to_array(pg_catalog.pg_index.indkey, ' ')) AS BIGINT) + 1 ELSE 1 END)) AS ord \
             FROM pg_catalog.pg_index"
        );
        // Other arrays are left alone.
        let q = "SELECT unnest(conkey) FROM pg_catalog.pg_constraint";
        assert_eq!(rewrite(q), q);
    }

    #[test]
    fn storage_options_are_null() {
        assert_eq!(
            rewrite(
                "SELECT pg_catalog.pg_class.oid, pg_catalog.pg_class.reloptions, NULL AS relhasoids FROM pg_catalog.pg_class"
            ),
            "SELECT pg_catalog.pg_class.oid, CAST(NULL AS TEXT) AS reloptions, NULL AS relhasoids FROM pg_catalog.pg_class"
        );
    }

    #[test]
    fn grant_role_to_member_is_spelled_out() {
        assert_eq!(
            rewrite("GRANT analyst, auditor TO alice;"),
            "GRANT ROLE analyst, ROLE auditor TO alice"
        );
        assert_eq!(
            rewrite("revoke analyst from alice"),
            "REVOKE ROLE analyst from alice"
        );
        // Privileges stay as they are.
        for q in [
            "GRANT SELECT ON marts.orders TO analyst",
            "GRANT ALL TO analyst",
            "REVOKE USAGE ON SCHEMA marts FROM analyst",
        ] {
            assert_eq!(rewrite(q), q);
        }
    }

    #[test]
    fn create_user_is_create_role_with_login() {
        assert_eq!(
            rewrite("CREATE USER bob WITH PASSWORD 'pw' IN ROLE viewer;"),
            "CREATE ROLE bob WITH PASSWORD 'pw' IN ROLE viewer LOGIN"
        );
        assert_eq!(rewrite("create  user carol"), "CREATE ROLE carol LOGIN");
        assert_eq!(
            rewrite("CREATE USER dave NOLOGIN"),
            "CREATE ROLE dave NOLOGIN"
        );
        assert_eq!(
            rewrite("CREATE USER erin LOGIN SUPERUSER"),
            "CREATE ROLE erin LOGIN SUPERUSER"
        );
        assert_eq!(rewrite("CREATE USERS_TABLE"), "CREATE USERS_TABLE");
        assert_eq!(
            rewrite("CREATE TABLE users (id int)"),
            "CREATE TABLE users (id int)"
        );
    }

    #[test]
    fn column_property_lookups_fold_to_null() {
        // The shape of SQLAlchemy's column reflection.
        let q = "SELECT a.attname, CASE WHEN a.atthasdef THEN (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef AS d WHERE a.atthasdef AND d.adrelid = a.attrelid AND d.adnum = a.attnum) ELSE NULL END AS \"default\", CASE WHEN (a.attcollation != 0 AND (SELECT t.typcollation FROM pg_catalog.pg_type AS t WHERE t.oid = a.atttypid) != a.attcollation) THEN (SELECT json_build_object('name', c.collname, 'schema', CASE WHEN (pg_catalog.pg_collation_is_visible(c.oid)) THEN NULL ELSE n.nspname END) FROM pg_catalog.pg_collation AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.collnamespace WHERE c.oid = a.attcollation) ELSE NULL END AS collation FROM pg_catalog.pg_attribute AS a";
        assert_eq!(
            rewrite(q),
            "SELECT a.attname, NULL AS \"default\", NULL AS collation FROM pg_catalog.pg_attribute AS a"
        );
    }

    #[test]
    fn parameters_of_folded_subqueries_stay_in_the_statement() {
        // The client binds $1..$3 by position: each keeps its place and its type.
        let q = "SELECT a.attname, CASE WHEN a.attidentity != $1::VARCHAR THEN (SELECT json_build_object($2::VARCHAR, s.seqstart) FROM pg_catalog.pg_sequence AS s WHERE a.attidentity != $1::VARCHAR) ELSE NULL END AS identity FROM pg_catalog.pg_attribute AS a WHERE a.attnum > $3";
        assert_eq!(
            rewrite(q),
            "SELECT a.attname, NULL AS identity FROM pg_catalog.pg_attribute AS a WHERE a.attnum > $3 AND ($2::VARCHAR IS NULL OR true) AND ($1::VARCHAR IS NULL OR true)"
        );
    }

    #[test]
    fn other_subqueries_are_kept() {
        for q in [
            // An aggregate gives one row over no rows.
            "SELECT (SELECT count(*) FROM pg_catalog.pg_sequence WHERE seqrelid = a.attrelid) AS n FROM pg_attribute a",
            // An outer join keeps the other side's rows.
            "SELECT (SELECT n.nspname FROM pg_namespace n LEFT JOIN pg_collation c ON c.collnamespace = n.oid WHERE c.oid = a.attcollation LIMIT 1) AS x FROM pg_attribute a",
            // Not a lookup for a pg_attribute row: the system collations are there.
            "SELECT (SELECT collname FROM pg_collation WHERE oid = 100) AS x",
            // A relation of the same name outside pg_catalog may have rows.
            "SELECT (SELECT s.v FROM marts.pg_sequence s WHERE s.attnum = 1) AS x",
        ] {
            assert_eq!(rewrite(q), q);
        }
        // The CASE's subquery is folded, the CASE is kept.
        assert_eq!(
            rewrite(
                "SELECT CASE WHEN true THEN 1 ELSE (SELECT seqstart FROM pg_sequence WHERE seqrelid = a.attrelid) END FROM pg_attribute AS a"
            ),
            "SELECT CASE WHEN true THEN 1 ELSE NULL END FROM pg_attribute AS a"
        );
    }
}
