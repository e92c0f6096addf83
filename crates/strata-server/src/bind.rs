//! Bound parameters of statements Strata runs itself: the placeholders `$1`, `$2`… are
//! replaced with the values as literals of the statement's syntax tree, never as text
//! spliced into SQL.

use std::ops::ControlFlow;

use strata_engine::datafusion::common::ScalarValue;
use strata_engine::datafusion::sql::sqlparser::ast::{
    Expr, Statement, Value, VisitMut, VisitorMut,
};

/// Replaces every `$n` of `stmt` with `values[n - 1]`; `Err` names a placeholder without
/// a value.
pub(crate) fn bind_parameters(stmt: &mut Statement, values: &[ScalarValue]) -> Result<(), String> {
    struct Bind<'a> {
        values: &'a [ScalarValue],
    }
    impl VisitorMut for Bind<'_> {
        type Break = String;
        fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<String> {
            let Expr::Value(v) = expr else {
                return ControlFlow::Continue(());
            };
            let Value::Placeholder(p) = &v.value else {
                return ControlFlow::Continue(());
            };
            let Some(i) = p
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|i| (1..=self.values.len()).contains(i))
            else {
                return ControlFlow::Break(format!("parameter {p} has no bound value"));
            };
            v.value = literal(&self.values[i - 1]);
            ControlFlow::Continue(())
        }
    }
    match stmt.visit(&mut Bind { values }) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

fn literal(value: &ScalarValue) -> Value {
    if value.is_null() {
        return Value::Null;
    }
    match value {
        ScalarValue::Boolean(Some(b)) => Value::Boolean(*b),
        ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Float32(_)
        | ScalarValue::Float64(_)
        | ScalarValue::Decimal128(..) => Value::Number(value.to_string(), false),
        // Text, dates, timestamps…: a string literal the statement's target column type is
        // cast from.
        other => Value::SingleQuotedString(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use strata_engine::datafusion::sql::sqlparser::parser::Parser;

    #[test]
    fn values_become_literals() {
        let mut stmt = Parser::parse_sql(
            &PostgreSqlDialect {},
            "insert into t values ($1, $2, $3, $1)",
        )
        .unwrap()
        .remove(0);
        bind_parameters(
            &mut stmt,
            &[
                ScalarValue::Int64(Some(7)),
                ScalarValue::Utf8(Some("x'); drop table t; --".into())),
                ScalarValue::Null,
            ],
        )
        .unwrap();
        assert_eq!(
            stmt.to_string(),
            "INSERT INTO t VALUES (7, 'x''); drop table t; --', NULL, 7)"
        );
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, "select $4")
            .unwrap()
            .remove(0);
        assert!(bind_parameters(&mut stmt, &[]).unwrap_err().contains("$4"));
    }
}
