//! Statements that change table data or shape, translated to lake operations:
//! `UPDATE`, `DELETE`, `MERGE INTO`, `TRUNCATE`, `ALTER TABLE … ADD COLUMN`.
//!
//! Each becomes exactly one Delta commit. Expressions are passed to Delta as SQL text over
//! the table's columns (and, for MERGE, the user's aliases), so they mean what they say;
//! every such text is read back first and must be the same expression ([`expr_text`]), and a
//! row policy stays a conjunct of its own.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    AlterTable, AlterTableOperation, Assignment, AssignmentTarget, Delete, Expr, FromTable, Merge,
    MergeAction, MergeClauseKind, MergeInsertKind, ObjectName, TableFactor, TableWithJoins,
    Truncate, Update,
};
use strata_lake::{MergeClause, TableName, WriteOptions};

use crate::access::Privilege;
use crate::engine::{Session, StatementResult};
use crate::{Error, Result};

/// The text of `expr` for the lake, which parses it again (with the generic dialect).
/// SQL printing is not one-to-one (a quote after a backslash in a string literal prints
/// as is), so the text is read back and must be the same expression: no literal can
/// change what the lake executes.
fn expr_text(expr: &Expr) -> Result<String> {
    let text = expr.to_string();
    if reads_back_as(&text, expr) {
        Ok(text)
    } else {
        Err(Error::Invalid(format!(
            "`{text}` cannot be passed on unchanged (a string literal with a backslash before a quote?); write the value without that sequence or bind it differently"
        )))
    }
}

fn reads_back_as(text: &str, expr: &Expr) -> bool {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    Parser::new(&GenericDialect {})
        .try_with_sql(text)
        .and_then(|mut p| {
            let e = p.parse_expr()?;
            // Nothing may follow the expression.
            p.expect_token(&datafusion::sql::sqlparser::tokenizer::Token::EOF)?;
            Ok(e)
        })
        .is_ok_and(|back| &back == expr)
}

fn done(tag: impl Into<String>, rows: Option<u64>) -> Result<StatementResult> {
    Ok(StatementResult::Done {
        tag: tag.into(),
        rows,
    })
}

fn table_of(session: &Session, twj: &TableWithJoins, what: &str) -> Result<TableName> {
    if !twj.joins.is_empty() {
        return Err(Error::Unsupported(format!(
            "{what} with JOIN is not supported; use MERGE INTO … USING (query) ON …"
        )));
    }
    match &twj.relation {
        TableFactor::Table {
            name,
            version: None,
            ..
        } => session.object_name(name),
        other => Err(Error::Invalid(format!(
            "{what} needs a table, not `{other}`"
        ))),
    }
}

fn column_name(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| {
            if i.quote_style.is_some() {
                i.value.clone()
            } else {
                i.value.to_ascii_lowercase()
            }
        })
        .unwrap_or_else(|| name.to_string())
}

fn assignments(list: &[Assignment]) -> Result<Vec<(String, String)>> {
    list.iter()
        .map(|a| match &a.target {
            AssignmentTarget::ColumnName(c) => Ok((column_name(c), expr_text(&a.value)?)),
            AssignmentTarget::Tuple(_) => Err(Error::Unsupported(
                "tuple assignments `(a, b) = (…)` are not supported; assign each column".into(),
            )),
        })
        .collect()
}

async fn check_columns(session: &Session, t: &TableName, cols: &[&str]) -> Result<()> {
    let info = session.lake().table_info(t).await?;
    for c in cols {
        if info.schema.field_with_name(c).is_err() {
            let names: Vec<&str> = info
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            return Err(Error::Invalid(format!(
                "column `{c}` does not exist in `{t}`; columns are: {}",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// The predicate of an `UPDATE`/`DELETE` on `t`, narrowed to the rows the session's row
/// policies let it see: a principal changes only rows it could read.
fn restricted(
    session: &Session,
    t: &TableName,
    selection: Option<&Expr>,
) -> Result<Option<String>> {
    let policy = session.access().and_then(|a| a.row_predicate(t));
    let selection = selection.map(expr_text).transpose()?;
    Ok(match (selection, policy) {
        (Some(s), Some(p)) => {
            let text = format!("({s}) AND ({p})");
            // The policy must stay a conjunct of its own, whatever the selection holds.
            if !is_conjunction_of(&text, &s, &p) {
                return Err(Error::Invalid(format!(
                    "the condition `{s}` cannot be combined safely with the row policy; simplify it"
                )));
            }
            Some(text)
        }
        (s, p) => s.or(p),
    })
}

/// Whether `text` reads back as `(left) AND (right)`, each part as it reads alone.
fn is_conjunction_of(text: &str, left: &str, right: &str) -> bool {
    use datafusion::sql::sqlparser::ast::BinaryOperator;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let parse = |s: &str| {
        Parser::new(&GenericDialect {})
            .try_with_sql(s)
            .and_then(|mut p| {
                let e = p.parse_expr()?;
                p.expect_token(&datafusion::sql::sqlparser::tokenizer::Token::EOF)?;
                Ok(e)
            })
            .ok()
    };
    let (Some(whole), Some(l), Some(r)) = (parse(text), parse(left), parse(right)) else {
        return false;
    };
    whole
        == Expr::BinaryOp {
            left: Box::new(Expr::Nested(Box::new(l))),
            op: BinaryOperator::And,
            right: Box::new(Expr::Nested(Box::new(r))),
        }
}

pub(crate) async fn update(session: &Session, u: &Update) -> Result<StatementResult> {
    if u.from.is_some() {
        return Err(Error::Unsupported(
            "UPDATE … FROM is not supported; use MERGE INTO target USING source ON … WHEN MATCHED THEN UPDATE SET …".into(),
        ));
    }
    let t = table_of(session, &u.table, "UPDATE")?;
    session.require(Privilege::Update, &t)?;
    let set = assignments(&u.assignments)?;
    let cols: Vec<&str> = set.iter().map(|(c, _)| c.as_str()).collect();
    check_columns(session, &t, &cols).await?;
    let predicate = restricted(session, &t, u.selection.as_ref())?;
    let n = session
        .lake()
        .update(&t, predicate.as_deref(), set, Some(session.session_state()))
        .await?;
    done(format!("UPDATE {n}"), Some(n))
}

pub(crate) async fn delete(session: &Session, d: &Delete) -> Result<StatementResult> {
    if d.using.is_some() || !d.tables.is_empty() {
        return Err(Error::Unsupported(
            "DELETE … USING is not supported; use MERGE INTO … WHEN MATCHED THEN DELETE".into(),
        ));
    }
    let from = match &d.from {
        FromTable::WithFromKeyword(v) | FromTable::WithoutKeyword(v) => v,
    };
    let [twj] = from.as_slice() else {
        return Err(Error::Invalid("DELETE takes exactly one table".into()));
    };
    let t = table_of(session, twj, "DELETE")?;
    session.require(Privilege::Delete, &t)?;
    let predicate = restricted(session, &t, d.selection.as_ref())?;
    let n = session
        .lake()
        .delete(&t, predicate.as_deref(), Some(session.session_state()))
        .await?;
    done(format!("DELETE {n}"), Some(n))
}

pub(crate) async fn truncate(session: &Session, tr: &Truncate) -> Result<StatementResult> {
    for target in &tr.table_names {
        let t = session.object_name(&target.name)?;
        session.require(Privilege::Delete, &t)?;
        if tr.if_exists && !session.lake().table_exists(&t).await? {
            continue;
        }
        session.lake().delete(&t, None, None).await?;
    }
    done("TRUNCATE TABLE", None)
}

pub(crate) async fn merge(session: &Session, m: &Merge) -> Result<StatementResult> {
    let (target, target_alias) = match &m.table {
        TableFactor::Table {
            name,
            alias,
            version: None,
            ..
        } => (
            session.object_name(name)?,
            alias
                .as_ref()
                .map(|a| a.name.value.clone())
                .unwrap_or_else(|| column_name(name)),
        ),
        other => {
            return Err(Error::Invalid(format!(
                "MERGE INTO needs a table, not `{other}`"
            )));
        }
    };
    for clause in &m.clauses {
        session.require(
            match &clause.action {
                MergeAction::Update(_) => Privilege::Update,
                MergeAction::Delete { .. } => Privilege::Delete,
                MergeAction::Insert(_) => Privilege::Insert,
            },
            &target,
        )?;
    }
    let (source_sql, source_alias) = match &m.source {
        TableFactor::Table { name, alias, .. } => (
            format!("SELECT * FROM {name}"),
            alias
                .as_ref()
                .map(|a| a.name.value.clone())
                .unwrap_or_else(|| column_name(name)),
        ),
        TableFactor::Derived {
            subquery,
            alias: Some(alias),
            ..
        } => (subquery.to_string(), alias.name.value.clone()),
        TableFactor::Derived { alias: None, .. } => {
            return Err(Error::Invalid(
                "the MERGE source subquery needs an alias: USING (SELECT …) AS s".into(),
            ));
        }
        other => {
            return Err(Error::Invalid(format!(
                "MERGE … USING takes a table or a subquery, not `{other}`"
            )));
        }
    };
    if source_alias == target_alias {
        return Err(Error::Invalid(format!(
            "source and target are both called `{target_alias}`; give one an alias (MERGE INTO t AS t USING s AS s …)"
        )));
    }
    let source = session.context().sql(&source_sql).await?;
    let target_columns: Vec<String> = session
        .lake()
        .table_info(&target)
        .await?
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut clauses = Vec::new();
    for c in &m.clauses {
        let predicate = c.predicate.as_ref().map(expr_text).transpose()?;
        let clause = match (&c.clause_kind, &c.action) {
            (MergeClauseKind::Matched, MergeAction::Update(u)) => MergeClause::MatchedUpdate {
                predicate,
                set: assignments(&u.assignments)?,
            },
            (MergeClauseKind::Matched, MergeAction::Delete { .. }) => {
                MergeClause::MatchedDelete { predicate }
            }
            (
                MergeClauseKind::NotMatched | MergeClauseKind::NotMatchedByTarget,
                MergeAction::Insert(i),
            ) => {
                let MergeInsertKind::Values(values) = &i.kind else {
                    return Err(Error::Unsupported(
                        "INSERT ROW is not supported; list the values: INSERT (a, b) VALUES (s.a, s.b)".into(),
                    ));
                };
                let [row] = values.rows.as_slice() else {
                    return Err(Error::Invalid(
                        "WHEN NOT MATCHED THEN INSERT takes one row of values".into(),
                    ));
                };
                let cols: Vec<String> = if i.columns.is_empty() {
                    target_columns.clone()
                } else {
                    i.columns.iter().map(column_name).collect()
                };
                if cols.len() != row.len() {
                    return Err(Error::Invalid(format!(
                        "INSERT lists {} columns but {} values",
                        cols.len(),
                        row.len()
                    )));
                }
                MergeClause::NotMatchedInsert {
                    predicate,
                    set: cols
                        .into_iter()
                        .zip(row.iter().map(expr_text).collect::<Result<Vec<_>>>()?)
                        .collect(),
                }
            }
            (MergeClauseKind::NotMatchedBySource, MergeAction::Update(u)) => {
                MergeClause::NotMatchedBySourceUpdate {
                    predicate,
                    set: assignments(&u.assignments)?,
                }
            }
            (MergeClauseKind::NotMatchedBySource, MergeAction::Delete { .. }) => {
                MergeClause::NotMatchedBySourceDelete { predicate }
            }
            (kind, action) => {
                return Err(Error::Invalid(format!(
                    "`WHEN {kind} THEN {action}` is not a valid MERGE clause"
                )));
            }
        };
        clauses.push(clause);
    }
    let out = session
        .lake()
        .merge(
            &target,
            source,
            &source_alias,
            &target_alias,
            &expr_text(&m.on)?,
            clauses,
            session.session_state(),
            &WriteOptions::default(),
        )
        .await?;
    let n = out.inserted + out.updated + out.deleted;
    done(format!("MERGE {n}"), Some(n))
}

pub(crate) async fn alter_table(session: &Session, a: &AlterTable) -> Result<StatementResult> {
    let t = session.object_name(&a.name)?;
    session.require(Privilege::All, &t)?;
    if a.if_exists && !session.lake().table_exists(&t).await? {
        return done("ALTER TABLE", None);
    }
    let info = session.lake().table_info(&t).await?;
    let mut new_fields = Vec::new();
    for op in &a.operations {
        match op {
            AlterTableOperation::AddColumn {
                column_def,
                if_not_exists,
                ..
            } => {
                let name = column_def.name.value.clone();
                if info.schema.field_with_name(&name).is_ok() {
                    if *if_not_exists {
                        continue;
                    }
                    return Err(Error::Invalid(format!(
                        "column `{name}` already exists in `{t}`"
                    )));
                }
                new_fields.push(arrow_field(session, &column_def.to_string()).await?);
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "ALTER TABLE … {other} is not supported; supported: ADD COLUMN"
                )));
            }
        }
    }
    if !new_fields.is_empty() {
        let schema: SchemaRef = Arc::new(Schema::new(new_fields));
        session.lake().add_columns(&t, &schema).await?;
    }
    done("ALTER TABLE", None)
}

/// The Arrow field DataFusion would create for a SQL column definition.
async fn arrow_field(
    session: &Session,
    column_def: &str,
) -> Result<datafusion::arrow::datatypes::Field> {
    let sql = format!("CREATE TABLE strata_column_probe ({column_def})");
    let mut stmts = session.parse(&sql)?;
    let stmt: DFStatement = stmts.remove(0);
    let plan = session.context().state().statement_to_plan(stmt).await?;
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) => Ok(c
            .input
            .schema()
            .as_arrow()
            .field(0)
            .clone()
            .with_nullable(true)),
        _ => Err(Error::Invalid(format!(
            "`{column_def}` is not a column definition"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn expr(sql: &str) -> Expr {
        Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_expr()
            .unwrap()
    }

    #[test]
    fn texts_that_read_back_differently_are_refused() {
        assert_eq!(
            expr_text(&expr("id = 1 AND name = 'a''b'")).unwrap(),
            "id = 1 AND name = 'a''b'"
        );
        // A quote after a backslash prints unescaped: the text would mean something else.
        use datafusion::sql::sqlparser::ast::{BinaryOperator, Ident, Value};
        let e = Expr::BinaryOp {
            left: Box::new(Expr::Identifier(Ident::new("email"))),
            op: BinaryOperator::Eq,
            right: Box::new(Expr::value(Value::SingleQuotedString(
                r"x\') OR (1 = 1".into(),
            ))),
        };
        assert!(expr_text(&e).is_err(), "{e}");
        assert!(is_conjunction_of("(a = 1) AND (b = 2)", "a = 1", "b = 2"));
        assert!(!is_conjunction_of(
            "(a = 1 OR 1 = 1) OR (b = 2)",
            "a = 1 OR 1 = 1",
            "b = 2"
        ));
    }
}
