//! PostgreSQL and DuckDB compatibility, so dbt projects written for either run unchanged.
//!
//! Two halves:
//! - [`register`] adds the functions DataFusion lacks (`date_diff`, `date_sub`, `age`,
//!   `epoch_ms`, `len`, `mode`) and replaces `to_char` with one that understands PostgreSQL
//!   patterns (`'YYYY-MM-DD HH24:MI'`) as well as strftime ones (`'%Y-%m'`).
//! - [`rewrite`] translates parsed statements before planning: `ORDER BY ALL` (by position),
//!   `TIMESTAMP 'YYYY-MM-DD HH:MM'` without seconds, and calls that have an exact DataFusion
//!   equivalent (`day(x)` → `date_part('day', x)`, `count_if(c)` →
//!   `count(CASE WHEN c THEN 1 END)`, `strftime` → `to_char`, PostgreSQL patterns of `to_date`
//!   / `to_timestamp` → strftime ones, …). A translated call that is a whole select item keeps
//!   its original text as its column name.
//!
//! `Session::parse` runs [`rewrite`], so stored views keep the translated text and plan
//! without it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::sync::Arc;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, Int64Builder, IntervalMonthDayNanoBuilder, StringBuilder,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, IntervalMonthDayNano, TimeUnit};
use datafusion::common::{DataFusionError, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility, function::AccumulatorArgs, function::StateFieldsArgs,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, DataType as SqlType, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, ObjectName, OrderByExpr, OrderByKind, Query, Select, SelectItem,
    SetExpr, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::parser::Parser;

use crate::dialect::StrataDialect;
use crate::{Error, Result};

type DFResult<T> = std::result::Result<T, DataFusionError>;

/// Registers the compatibility functions on a new session.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(DateDiff::new(
        DiffKind::Boundaries,
    )));
    ctx.register_udf(ScalarUDF::new_from_impl(DateDiff::new(DiffKind::Complete)));
    ctx.register_udf(ScalarUDF::new_from_impl(Age::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(ToChar::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(Len::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(IntervalMul::new()));
    for unit in [
        TimeUnit::Millisecond,
        TimeUnit::Microsecond,
        TimeUnit::Nanosecond,
    ] {
        ctx.register_udf(ScalarUDF::new_from_impl(Epoch::new(unit)));
    }
    ctx.register_udaf(AggregateUDF::new_from_impl(Mode::new()));
}

// ---------------------------------------------------------------------------------------------
// Statement rewriting
// ---------------------------------------------------------------------------------------------

/// Translates the PostgreSQL / DuckDB forms DataFusion does not plan (see the module docs).
pub(crate) fn rewrite(mut stmt: DFStatement) -> Result<DFStatement> {
    let mut v = Compat;
    let flow = match &mut stmt {
        DFStatement::Statement(s) => s.visit(&mut v),
        DFStatement::Explain(e) => match e.statement.as_mut() {
            DFStatement::Statement(s) => s.visit(&mut v),
            _ => ControlFlow::Continue(()),
        },
        DFStatement::CopyTo(c) => match &mut c.source {
            CopyToSource::Query(q) => q.visit(&mut v),
            _ => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    };
    match flow {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(stmt),
    }
}

struct Compat;

impl VisitorMut for Compat {
    type Break = Error;

    fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<Error> {
        // Name translated select items after their original text, as DuckDB does.
        for_each_select(&mut q.body, &mut |s| {
            for item in &mut s.projection {
                if let SelectItem::UnnamedExpr(e) = item
                    && (matches!(&*e, Expr::Function(f) if matches!(translate(f), Ok(Some(_))))
                        || is_interval_product(e))
                {
                    let alias = Ident::with_quote('"', e.to_string());
                    *item = SelectItem::ExprWithAlias {
                        expr: e.clone(),
                        alias,
                    };
                }
            }
            Ok(())
        })
        .map_or_else(ControlFlow::Break, ControlFlow::Continue)
    }

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<Error> {
        // PostgreSQL `INTERVAL '1 day' * n` (DataFusion has no interval × number).
        if is_interval_product(e)
            && let Expr::BinaryOp { left, right, .. } = &*e
        {
            let args = if matches!(**left, Expr::Interval(_)) {
                [(**left).clone(), (**right).clone()]
            } else {
                [(**right).clone(), (**left).clone()]
            };
            match template("interval_mul({0}, {1})", &args) {
                Ok(new) => *e = new,
                Err(err) => return ControlFlow::Break(err),
            }
            return ControlFlow::Continue(());
        }
        match e {
            Expr::Function(f) => match translate(f) {
                Ok(Some(new)) => *e = new,
                Ok(None) => {}
                Err(err) => return ControlFlow::Break(err),
            },
            // `TIMESTAMP '2024-01-02 10:00'`: PostgreSQL and DuckDB allow leaving out seconds.
            Expr::TypedString(ts) if matches!(ts.data_type, SqlType::Timestamp(..)) => {
                if let Value::SingleQuotedString(v) = &mut ts.value.value {
                    add_seconds(v);
                }
            }
            Expr::Cast {
                expr,
                data_type: SqlType::Timestamp(..),
                ..
            } => {
                if let Expr::Value(v) = expr.as_mut()
                    && let Value::SingleQuotedString(v) = &mut v.value
                {
                    add_seconds(v);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, q: &mut Query) -> ControlFlow<Error> {
        // ORDER BY ALL: DataFusion orders by plain columns only, and ignores it after a set
        // operation; spell it out by position.
        if let Some(ob) = &mut q.order_by
            && let OrderByKind::All(options) = &ob.kind
            && let Some(n) = first_select(&q.body).and_then(expr_items)
        {
            let options = *options;
            ob.kind = OrderByKind::Expressions(
                (1..=n)
                    .map(|i| OrderByExpr {
                        expr: number(i),
                        options,
                        with_fill: None,
                    })
                    .collect(),
            );
        }
        ControlFlow::Continue(())
    }
}

/// `INTERVAL '…' * n` or `n * INTERVAL '…'`.
fn is_interval_product(e: &Expr) -> bool {
    matches!(e, Expr::BinaryOp { left, op: BinaryOperator::Multiply, right }
        if matches!(**left, Expr::Interval(_)) || matches!(**right, Expr::Interval(_)))
}

/// `YYYY-MM-DD HH:MM` → `YYYY-MM-DD HH:MM:00` (Arrow requires the seconds).
fn add_seconds(v: &mut String) {
    let b = v.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() == 16
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b' ' || b[10] == b'T')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
    {
        v.push_str(":00");
    }
}

/// The leftmost `SELECT` of a query body: it names the columns of a set operation.
fn first_select(body: &SetExpr) -> Option<&Select> {
    match body {
        SetExpr::Select(s) => Some(s),
        SetExpr::SetOperation { left, .. } => first_select(left),
        SetExpr::Query(q) => first_select(&q.body),
        _ => None,
    }
}

/// Calls `f` on every `SELECT` of a query body (set operations included, subqueries not).
fn for_each_select(
    body: &mut SetExpr,
    f: &mut impl FnMut(&mut Select) -> Result<()>,
) -> Result<()> {
    match body {
        SetExpr::Select(s) => f(s),
        SetExpr::SetOperation { left, right, .. } => {
            for_each_select(left, f)?;
            for_each_select(right, f)
        }
        _ => Ok(()),
    }
}

/// The number of select items when none is a wildcard.
fn expr_items(s: &Select) -> Option<usize> {
    s.projection
        .iter()
        .all(|i| {
            matches!(
                i,
                SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. }
            )
        })
        .then_some(s.projection.len())
}

fn number(i: usize) -> Expr {
    Expr::value(Value::Number(i.to_string(), false))
}

fn string(s: &str) -> Expr {
    Expr::value(Value::SingleQuotedString(s.to_string()))
}

/// The lower-cased name of an unqualified function.
fn function_name(f: &Function) -> Option<String> {
    match f.name.0.as_slice() {
        [part] => part.as_ident().map(|i| i.value.to_ascii_lowercase()),
        _ => None,
    }
}

/// The arguments of `f` when they are plain positional expressions.
fn plain_args(f: &Function) -> Option<Vec<Expr>> {
    let FunctionArguments::List(list) = &f.args else {
        return match &f.args {
            FunctionArguments::None => Some(vec![]),
            _ => None,
        };
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return None;
    }
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Parses `template` with `{0}`, `{1}`… replaced by the (parenthesized) arguments.
fn template(template: &str, args: &[Expr]) -> Result<Expr> {
    let mut sql = template.to_string();
    for (i, a) in args.iter().enumerate() {
        sql = sql.replace(&format!("{{{i}}}"), &format!("({a})"));
    }
    Parser::new(&StrataDialect::default())
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| Error::Invalid(format!("internal translation `{sql}` does not parse: {e}")))
}

fn literal_string(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

const DATE_PART_FUNCTIONS: &[(&str, &str)] = &[
    ("year", "year"),
    ("quarter", "quarter"),
    ("month", "month"),
    ("week", "week"),
    ("weekofyear", "week"),
    ("day", "day"),
    ("dayofmonth", "day"),
    ("dayofweek", "dow"),
    ("weekday", "dow"),
    ("isodow", "isodow"),
    ("dayofyear", "doy"),
    ("hour", "hour"),
    ("minute", "minute"),
    ("second", "second"),
    ("millisecond", "millisecond"),
    ("microsecond", "microsecond"),
];

/// The DataFusion form of a PostgreSQL / DuckDB call, or `None` to keep it.
fn translate(f: &Function) -> Result<Option<Expr>> {
    let Some(name) = function_name(f) else {
        return Ok(None);
    };
    let windowed = f.over.is_some();
    // Aggregates: translated with their FILTER and OVER clauses kept.
    let aggregate = match name.as_str() {
        "count_if" | "countif" => Some("count(CASE WHEN {0} THEN 1 END)"),
        "arg_max" | "max_by" | "argmax" if !windowed => {
            Some("first_value({0} ORDER BY {1} DESC) FILTER (WHERE {1} IS NOT NULL)")
        }
        "arg_min" | "min_by" | "argmin" if !windowed => {
            Some("first_value({0} ORDER BY {1} ASC) FILTER (WHERE {1} IS NOT NULL)")
        }
        _ => None,
    };
    if let Some(t) = aggregate {
        let Some(args) = plain_args(f) else {
            return Ok(None);
        };
        let arity = if t.contains("{1}") { 2 } else { 1 };
        if args.len() != arity {
            return Ok(None);
        }
        let mut e = template(t, &args)?;
        if let Expr::Function(g) = &mut e {
            g.over = f.over.clone();
            g.filter = match (g.filter.take(), f.filter.clone()) {
                (Some(a), Some(b)) => Some(Box::new(Expr::BinaryOp {
                    left: a,
                    op: BinaryOperator::And,
                    right: Box::new(Expr::Nested(b)),
                })),
                (a, b) => a.or(b),
            };
        }
        return Ok(Some(e));
    }
    let renamed = match name.as_str() {
        "variance" => Some("var_samp"),
        "approx_count_distinct" => Some("approx_distinct"),
        "first" => Some("first_value"),
        "list" => Some("array_agg"),
        "last" => Some("last_value"),
        _ => None,
    };
    if let Some(to) = renamed {
        return Ok(Some(rename(f, to)));
    }
    // PostgreSQL `mode() WITHIN GROUP (ORDER BY x)` → `mode(x)`.
    if name == "mode" && f.within_group.len() == 1 && plain_args(f).is_some_and(|a| a.is_empty()) {
        let mut g = f.clone();
        g.args = FunctionArguments::List(datafusion::sql::sqlparser::ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(
                f.within_group[0].expr.clone(),
            ))],
            clauses: vec![],
        });
        g.within_group = vec![];
        return Ok(Some(Expr::Function(g)));
    }
    if windowed || f.filter.is_some() || !f.within_group.is_empty() {
        return Ok(None);
    }
    let Some(args) = plain_args(f) else {
        return Ok(None);
    };
    if let Some((_, part)) = DATE_PART_FUNCTIONS.iter().find(|(n, _)| *n == name) {
        if args.len() != 1 {
            return Ok(None);
        }
        return template(&format!("date_part('{part}', {{0}})"), &args).map(Some);
    }
    let t = match (name.as_str(), args.len()) {
        ("epoch", 1) => "date_part('epoch', {0})",
        ("dayname", 1) => "to_char({0}, '%A')",
        ("monthname", 1) => "to_char({0}, '%B')",
        ("last_day", 1) => {
            "CAST(date_trunc('month', {0}) + INTERVAL '1 month' - INTERVAL '1 day' AS DATE)"
        }
        ("regexp_matches", 2 | 3) => {
            return Ok(Some(rename(f, "regexp_like")));
        }
        ("gen_random_uuid", 0) => return Ok(Some(rename(f, "uuid"))),
        ("string_split" | "str_split", 2) => return Ok(Some(rename(f, "string_to_array"))),
        // DuckDB: the first match (or capture group), '' when there is none.
        ("regexp_extract", 2) => {
            "CASE WHEN {0} IS NULL OR {1} IS NULL THEN NULL ELSE coalesce(array_element(regexp_match({0}, concat('(', {1}, ')')), 1), '') END"
        }
        ("regexp_extract", 3) => {
            "CASE WHEN {0} IS NULL OR {1} IS NULL THEN NULL ELSE coalesce(array_element(regexp_match({0}, concat('(', {1}, ')')), ({2}) + 1), '') END"
        }
        ("make_timestamp", 6) => {
            "to_timestamp_micros(CAST(date_part('epoch', make_date({0}, {1}, {2})) AS BIGINT) * 1000000 + CAST(({3}) * 3600000000 + ({4}) * 60000000 + ({5}) * 1000000 AS BIGINT))"
        }
        ("date_add", 2) => "{0} + {1}",
        ("date_sub", 2) => "{0} - {1}",
        ("strftime", 2) => {
            let fmt = match literal_string(&args[1]) {
                Some(fmt) => string(&duckdb_format(fmt)),
                None => args[1].clone(),
            };
            return template("to_char({0}, {1})", &[args[0].clone(), fmt]).map(Some);
        }
        ("strptime", 2) => {
            let Some(fmt) = literal_string(&args[1]) else {
                return template("to_timestamp({0}, {1})", &args).map(Some);
            };
            return template(
                "to_timestamp({0}, {1})",
                &[args[0].clone(), string(&duckdb_format(fmt))],
            )
            .map(Some);
        }
        ("to_date" | "to_timestamp", 2) => {
            // PostgreSQL patterns; strftime ones (with `%`) are DataFusion's own.
            let Some(fmt) = literal_string(&args[1]) else {
                return Ok(None);
            };
            if fmt.contains('%') {
                return Ok(None);
            }
            let chrono_fmt = pg_parse_format(fmt, &name)?;
            return template(
                &format!("{name}({{0}}, {{1}})"),
                &[args[0].clone(), string(&chrono_fmt)],
            )
            .map(Some);
        }
        ("date_diff" | "datediff" | "date_sub", 3) => {
            // Snowflake / SQL Server style unquoted part: `datediff(day, a, b)`.
            if let Expr::Identifier(i) = &args[0]
                && i.quote_style.is_none()
                && parse_part(&i.value).is_ok()
            {
                let mut g = f.clone();
                let mut new_args = args.clone();
                new_args[0] = string(&i.value.to_ascii_lowercase());
                set_args(&mut g, new_args);
                return Ok(Some(Expr::Function(g)));
            }
            return Ok(None);
        }
        _ => return Ok(None),
    };
    template(t, &args).map(Some)
}

fn rename(f: &Function, name: &str) -> Expr {
    let mut g = f.clone();
    g.name = ObjectName::from(vec![Ident::new(name)]);
    Expr::Function(g)
}

fn set_args(f: &mut Function, args: Vec<Expr>) {
    f.args = FunctionArguments::List(datafusion::sql::sqlparser::ast::FunctionArgumentList {
        duplicate_treatment: None,
        args: args
            .into_iter()
            .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
            .collect(),
        clauses: vec![],
    });
}

/// DuckDB's strftime codes → chrono's: the same letters except the sub-second ones.
fn duckdb_format(fmt: &str) -> String {
    let mut out = String::with_capacity(fmt.len());
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('f') => out.push_str("%6f"),
            Some('g') => out.push_str("%3f"),
            Some('n') => out.push_str("%9f"),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL date/time patterns
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Upper,
    Capital,
    Lower,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PgField {
    Year4,
    Year3,
    Year2,
    Year1,
    IsoYear,
    Month,
    MonthName(Case),
    MonthAbbr(Case),
    Day,
    DayOfYear,
    DayOfWeek,
    IsoDayOfWeek,
    DayName(Case),
    DayAbbr(Case),
    Hour24,
    Hour12,
    Minute,
    Second,
    Millis,
    Micros,
    SecondsOfDay,
    Meridiem(Case, bool),
    Era(Case, bool),
    Quarter,
    WeekOfYear,
    IsoWeek,
    Century,
    Julian,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PgToken {
    Literal(String),
    Field {
        field: PgField,
        fill: bool,
        ordinal: Option<Case>,
    },
}

/// Patterns PostgreSQL knows that Strata does not implement.
const PG_UNSUPPORTED: &[&str] = &[
    "TZH", "TZM", "TZ", "OF", "RM", "Y,YYY", "IYY", "IY", "FX", "TM", "W",
];

fn case_of(s: &str) -> Case {
    let mut chars = s.chars().filter(|c| c.is_alphabetic());
    let first = chars.next().is_some_and(|c| c.is_uppercase());
    let rest_upper = chars.clone().all(|c| c.is_uppercase());
    let rest_lower = chars.all(|c| c.is_lowercase());
    match (first, rest_upper, rest_lower) {
        (true, true, _) => Case::Upper,
        (true, false, true) => Case::Capital,
        _ => Case::Lower,
    }
}

type FieldMaker = fn(Case) -> PgField;

/// Splits a PostgreSQL `to_char` pattern into tokens; errors name the unsupported pattern.
fn pg_tokens(pattern: &str) -> std::result::Result<Vec<PgToken>, String> {
    let fields: &[(&str, FieldMaker)] = &[
        ("SSSSS", |_| PgField::SecondsOfDay),
        ("SSSS", |_| PgField::SecondsOfDay),
        ("HH24", |_| PgField::Hour24),
        ("HH12", |_| PgField::Hour12),
        ("IYYY", |_| PgField::IsoYear),
        ("YYYY", |_| PgField::Year4),
        ("MONTH", PgField::MonthName),
        ("A.M.", |c| PgField::Meridiem(c, true)),
        ("P.M.", |c| PgField::Meridiem(c, true)),
        ("A.D.", |c| PgField::Era(c, true)),
        ("B.C.", |c| PgField::Era(c, true)),
        ("YYY", |_| PgField::Year3),
        ("MON", PgField::MonthAbbr),
        ("DAY", PgField::DayName),
        ("DDD", |_| PgField::DayOfYear),
        ("HH", |_| PgField::Hour12),
        ("MI", |_| PgField::Minute),
        ("SS", |_| PgField::Second),
        ("MS", |_| PgField::Millis),
        ("US", |_| PgField::Micros),
        ("AM", |c| PgField::Meridiem(c, false)),
        ("PM", |c| PgField::Meridiem(c, false)),
        ("AD", |c| PgField::Era(c, false)),
        ("BC", |c| PgField::Era(c, false)),
        ("YY", |_| PgField::Year2),
        ("MM", |_| PgField::Month),
        ("DD", |_| PgField::Day),
        ("DY", PgField::DayAbbr),
        ("ID", |_| PgField::IsoDayOfWeek),
        ("IW", |_| PgField::IsoWeek),
        ("WW", |_| PgField::WeekOfYear),
        ("CC", |_| PgField::Century),
        ("Y", |_| PgField::Year1),
        ("D", |_| PgField::DayOfWeek),
        ("Q", |_| PgField::Quarter),
        ("J", |_| PgField::Julian),
    ];
    let chars: Vec<char> = pattern.chars().collect();
    let at = |i: usize, word: &str| -> bool {
        let w: Vec<char> = word.chars().collect();
        i + w.len() <= chars.len()
            && chars[i..i + w.len()]
                .iter()
                .zip(&w)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    };
    let mut out: Vec<PgToken> = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    let mut fill = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                literal.push(chars[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '\\' && i + 1 < chars.len() {
            literal.push(chars[i + 1]);
            i += 2;
            continue;
        }
        if at(i, "FM") {
            fill = true;
            i += 2;
            continue;
        }
        // A TH / th suffix turns the previous number into an ordinal.
        if (at(i, "TH"))
            && literal.is_empty()
            && let Some(PgToken::Field { ordinal, .. }) = out.last_mut()
            && ordinal.is_none()
        {
            *ordinal = Some(if chars[i] == 't' {
                Case::Lower
            } else {
                Case::Upper
            });
            i += 2;
            continue;
        }
        let field = fields.iter().find(|(w, _)| at(i, w));
        let field_len = field.map_or(0, |(w, _)| w.chars().count());
        if let Some(word) = PG_UNSUPPORTED
            .iter()
            .find(|w| at(i, w) && w.chars().count() >= field_len)
        {
            let text: String = chars[i..i + word.chars().count()].iter().collect();
            return Err(format!(
                "PostgreSQL pattern `{text}` is not supported (in '{pattern}'); supported: YYYY YYY YY Y IYYY MM Month Mon DD DDD D ID Day Dy HH24 HH12 HH MI SS MS US SSSS AM PM AD BC Q WW IW CC J, FM and TH modifiers, \"quoted text\""
            ));
        }
        if let Some((word, make)) = field {
            let n = word.chars().count();
            let text: String = chars[i..i + n].iter().collect();
            if !literal.is_empty() {
                out.push(PgToken::Literal(std::mem::take(&mut literal)));
            }
            out.push(PgToken::Field {
                field: make(case_of(&text)),
                fill,
                ordinal: None,
            });
            fill = false;
            i += n;
            continue;
        }
        literal.push(c);
        i += 1;
    }
    if !literal.is_empty() {
        out.push(PgToken::Literal(literal));
    }
    Ok(out)
}

fn cased(s: &str, case: Case) -> String {
    match case {
        Case::Upper => s.to_uppercase(),
        Case::Lower => s.to_lowercase(),
        Case::Capital => s.to_string(),
    }
}

fn ordinal_suffix(n: i64) -> &'static str {
    match (n % 100, n % 10) {
        (11..=13, _) => "th",
        (_, 1) => "st",
        (_, 2) => "nd",
        (_, 3) => "rd",
        _ => "th",
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Formats `t` with PostgreSQL `to_char` tokens.
fn pg_format(t: &NaiveDateTime, tokens: &[PgToken]) -> String {
    let mut out = String::new();
    for tok in tokens {
        let (field, fill, ordinal) = match tok {
            PgToken::Literal(s) => {
                out.push_str(s);
                continue;
            }
            PgToken::Field {
                field,
                fill,
                ordinal,
            } => (field, *fill, *ordinal),
        };
        let num = |n: i64, width: usize| -> (i64, usize) { (n, width) };
        let numeric = match field {
            PgField::Year4 => Some(num(t.year() as i64, 4)),
            PgField::Year3 => Some(num((t.year() % 1000) as i64, 3)),
            PgField::Year2 => Some(num((t.year() % 100) as i64, 2)),
            PgField::Year1 => Some(num((t.year() % 10) as i64, 1)),
            PgField::IsoYear => Some(num(t.iso_week().year() as i64, 4)),
            PgField::Month => Some(num(t.month() as i64, 2)),
            PgField::Day => Some(num(t.day() as i64, 2)),
            PgField::DayOfYear => Some(num(t.ordinal() as i64, 3)),
            PgField::DayOfWeek => Some(num(t.weekday().number_from_sunday() as i64, 1)),
            PgField::IsoDayOfWeek => Some(num(t.weekday().number_from_monday() as i64, 1)),
            PgField::Hour24 => Some(num(t.hour() as i64, 2)),
            PgField::Hour12 => Some(num(t.hour12().1 as i64, 2)),
            PgField::Minute => Some(num(t.minute() as i64, 2)),
            PgField::Second => Some(num(t.second() as i64, 2)),
            PgField::Millis => Some(num((t.nanosecond() / 1_000_000) as i64, 3)),
            PgField::Micros => Some(num((t.nanosecond() / 1_000) as i64, 6)),
            PgField::SecondsOfDay => Some(num(t.num_seconds_from_midnight() as i64, 1)),
            PgField::Quarter => Some(num(((t.month() - 1) / 3 + 1) as i64, 1)),
            PgField::WeekOfYear => Some(num(((t.ordinal() - 1) / 7 + 1) as i64, 2)),
            PgField::IsoWeek => Some(num(t.iso_week().week() as i64, 2)),
            PgField::Century => {
                let y = t.year() as i64;
                Some(num(if y > 0 { (y + 99) / 100 } else { y / 100 - 1 }, 2))
            }
            PgField::Julian => Some(num(t.date().num_days_from_ce() as i64 + 1_721_425, 1)),
            _ => None,
        };
        if let Some((n, width)) = numeric {
            if fill {
                let _ = write!(out, "{n}");
            } else {
                let _ = write!(out, "{n:0width$}");
            }
            if let Some(case) = ordinal {
                out.push_str(&cased(ordinal_suffix(n), case));
            }
            continue;
        }
        let text = match field {
            PgField::MonthName(c) => {
                let s = cased(MONTHS[t.month0() as usize], *c);
                if fill { s } else { format!("{s:<9}") }
            }
            PgField::MonthAbbr(c) => cased(&MONTHS[t.month0() as usize][..3], *c),
            PgField::DayName(c) => {
                let s = cased(DAYS[t.weekday().num_days_from_sunday() as usize], *c);
                if fill { s } else { format!("{s:<9}") }
            }
            PgField::DayAbbr(c) => {
                cased(&DAYS[t.weekday().num_days_from_sunday() as usize][..3], *c)
            }
            PgField::Meridiem(c, dots) => {
                let pm = t.hour12().0;
                let s = match (pm, dots) {
                    (false, false) => "AM",
                    (true, false) => "PM",
                    (false, true) => "A.M.",
                    (true, true) => "P.M.",
                };
                cased(
                    s,
                    if *c == Case::Lower {
                        Case::Lower
                    } else {
                        Case::Upper
                    },
                )
            }
            PgField::Era(c, dots) => {
                let bc = t.year() <= 0;
                let s = match (bc, dots) {
                    (false, false) => "AD",
                    (true, false) => "BC",
                    (false, true) => "A.D.",
                    (true, true) => "B.C.",
                };
                cased(
                    s,
                    if *c == Case::Lower {
                        Case::Lower
                    } else {
                        Case::Upper
                    },
                )
            }
            _ => String::new(),
        };
        out.push_str(&text);
    }
    out
}

/// A PostgreSQL `to_date` / `to_timestamp` pattern as a chrono parse format.
fn pg_parse_format(pattern: &str, function: &str) -> Result<String> {
    let tokens = pg_tokens(pattern).map_err(|e| Error::Unsupported(format!("{function}: {e}")))?;
    let mut out = String::new();
    for tok in tokens {
        match tok {
            PgToken::Literal(s) => out.push_str(&s.replace('%', "%%")),
            PgToken::Field { field, .. } => {
                let spec = match field {
                    PgField::Year4 => "%Y",
                    PgField::Year2 => "%y",
                    PgField::Month => "%m",
                    PgField::MonthName(_) => "%B",
                    PgField::MonthAbbr(_) => "%b",
                    PgField::Day => "%d",
                    PgField::DayOfYear => "%j",
                    PgField::DayName(_) => "%A",
                    PgField::DayAbbr(_) => "%a",
                    PgField::Hour24 => "%H",
                    PgField::Hour12 => "%I",
                    PgField::Minute => "%M",
                    PgField::Second => "%S",
                    PgField::Millis => "%3f",
                    PgField::Micros => "%6f",
                    PgField::Meridiem(_, false) => "%p",
                    other => {
                        return Err(Error::Unsupported(format!(
                            "{function}: pattern field {other:?} (in '{pattern}') is not supported for parsing; use YYYY YY MM Month Mon DD DDD Day Dy HH24 HH12 HH MI SS MS US AM PM"
                        )));
                    }
                };
                out.push_str(spec);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Scalar functions
// ---------------------------------------------------------------------------------------------

fn scalar_str(v: &ColumnarValue) -> Option<Option<String>> {
    match v {
        ColumnarValue::Scalar(s) => s.try_as_str().map(|o| o.map(str::to_string)),
        ColumnarValue::Array(_) => None,
    }
}

/// Date, timestamp or timestamp-like text as naive microsecond timestamps.
fn as_micros(a: &ArrayRef, function: &str) -> DFResult<TimestampMicrosecondArray> {
    match a.data_type() {
        DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(_, _)
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Null => {}
        other => return exec_err!("{function}: expected a date or timestamp, got {other}"),
    }
    let c = cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    Ok(
        c.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>()
            .clone(),
    )
}

fn naive(us: i64) -> DFResult<NaiveDateTime> {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(|d| d.naive_utc())
        .ok_or_else(|| DataFusionError::Execution(format!("timestamp {us}µs is out of range")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    Millennium,
    Century,
    Decade,
    Year,
    Quarter,
    Month,
    Week,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
    Microsecond,
}

fn parse_part(s: &str) -> Result<Part, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "millennium" | "millennia" | "millenniums" | "mil" | "mils" => Part::Millennium,
        "century" | "centuries" | "cent" | "c" => Part::Century,
        "decade" | "decades" | "dec" | "decs" => Part::Decade,
        "year" | "years" | "y" | "yr" | "yrs" | "yyyy" => Part::Year,
        "quarter" | "quarters" | "q" | "qtr" => Part::Quarter,
        "month" | "months" | "mon" | "mons" | "mm" => Part::Month,
        "week" | "weeks" | "w" | "wk" | "weekofyear" => Part::Week,
        "day" | "days" | "d" | "dd" | "dayofmonth" => Part::Day,
        "hour" | "hours" | "h" | "hr" | "hrs" | "hh" => Part::Hour,
        "minute" | "minutes" | "m" | "min" | "mins" | "mi" => Part::Minute,
        "second" | "seconds" | "s" | "sec" | "secs" | "ss" => Part::Second,
        "millisecond" | "milliseconds" | "ms" | "msec" | "msecs" => Part::Millisecond,
        "microsecond" | "microseconds" | "us" | "usec" | "usecs" => Part::Microsecond,
        other => return Err(other.to_string()),
    })
}

fn month_index(t: &NaiveDateTime) -> i64 {
    t.year() as i64 * 12 + t.month0() as i64
}

fn days_in_month(y: i32, m: u32) -> u32 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|d| d.pred_opt())
        .map_or(31, |d| d.day())
}

fn micros_per(part: Part) -> Option<i64> {
    Some(match part {
        Part::Week => 7 * 86_400_000_000,
        Part::Day => 86_400_000_000,
        Part::Hour => 3_600_000_000,
        Part::Minute => 60_000_000,
        Part::Second => 1_000_000,
        Part::Millisecond => 1_000,
        Part::Microsecond => 1,
        _ => return None,
    })
}

/// DuckDB `date_diff`: part boundaries crossed from `a` to `b`.
fn boundaries(part: Part, a: i64, b: i64) -> DFResult<i64> {
    let (ta, tb) = (naive(a)?, naive(b)?);
    Ok(match part {
        Part::Millennium => (tb.year() / 1000 - ta.year() / 1000) as i64,
        Part::Century => (tb.year() / 100 - ta.year() / 100) as i64,
        Part::Decade => (tb.year() / 10 - ta.year() / 10) as i64,
        Part::Year => (tb.year() - ta.year()) as i64,
        Part::Quarter => {
            (tb.year() as i64 * 4 + tb.month0() as i64 / 3)
                - (ta.year() as i64 * 4 + ta.month0() as i64 / 3)
        }
        Part::Month => month_index(&tb) - month_index(&ta),
        Part::Week => {
            let monday = |t: &NaiveDateTime| {
                t.date() - chrono::Duration::days(t.weekday().num_days_from_monday() as i64)
            };
            (monday(&tb) - monday(&ta)).num_days() / 7
        }
        Part::Day => (tb.date() - ta.date()).num_days(),
        other => {
            let unit = micros_per(other).expect("sub-day part");
            b.div_euclid(unit) - a.div_euclid(unit)
        }
    })
}

/// DuckDB `date_sub`: complete parts between `a` and `b`.
fn complete(part: Part, a: i64, b: i64) -> DFResult<i64> {
    if let Some(unit) = micros_per(part) {
        return Ok((b - a) / unit);
    }
    let months = complete_months(a, b)?;
    Ok(match part {
        Part::Millennium => months / 12_000,
        Part::Century => months / 1_200,
        Part::Decade => months / 120,
        Part::Year => months / 12,
        Part::Quarter => months / 3,
        _ => months,
    })
}

fn complete_months(a: i64, b: i64) -> DFResult<i64> {
    if a > b {
        return complete_months(b, a).map(|m| -m);
    }
    let (mut ta, tb) = (naive(a)?, naive(b)?);
    // From a later day of month to the last day of a shorter month is a complete month.
    let end_days = days_in_month(tb.year(), tb.month());
    if tb.day() == end_days
        && ta.day() > end_days
        && let Some(d) = NaiveDate::from_ymd_opt(ta.year(), ta.month(), end_days)
    {
        ta = d.and_time(ta.time());
    }
    let mut m = month_index(&tb) - month_index(&ta);
    if (tb.day(), tb.time()) < (ta.day(), ta.time()) {
        m -= 1;
    }
    Ok(m)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DiffKind {
    /// `date_diff` / `datediff`.
    Boundaries,
    /// DuckDB's three-argument `date_sub`.
    Complete,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DateDiff {
    kind: DiffKind,
    signature: Signature,
    aliases: Vec<String>,
}

impl DateDiff {
    fn new(kind: DiffKind) -> Self {
        Self {
            kind,
            signature: Signature::any(3, Volatility::Immutable),
            aliases: match kind {
                DiffKind::Boundaries => vec!["datediff".into()],
                DiffKind::Complete => vec![],
            },
        }
    }
}

impl ScalarUDFImpl for DateDiff {
    fn name(&self) -> &str {
        match self.kind {
            DiffKind::Boundaries => "date_diff",
            DiffKind::Complete => "date_sub",
        }
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DFResult<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let name = self.name();
        let Some(part) = scalar_str(&args.args[0]) else {
            return exec_err!("{name}: the part must be a constant string such as 'day'");
        };
        let Some(part) = part else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Int64(None)));
        };
        let part = parse_part(&part).map_err(|p| {
            DataFusionError::Execution(format!(
                "{name}: unknown date part '{p}'; use year, quarter, month, week, day, hour, minute, second, millisecond, microsecond, decade, century or millennium"
            ))
        })?;
        let arrays = ColumnarValue::values_to_arrays(&args.args[1..])?;
        let a = as_micros(&arrays[0], name)?;
        let b = as_micros(&arrays[1], name)?;
        let mut out = Int64Builder::with_capacity(a.len());
        for i in 0..a.len() {
            if a.is_null(i) || b.is_null(i) {
                out.append_null();
                continue;
            }
            let (x, y) = (a.value(i), b.value(i));
            out.append_value(match self.kind {
                DiffKind::Boundaries => boundaries(part, x, y)?,
                DiffKind::Complete => complete(part, x, y)?,
            });
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// PostgreSQL `age(a, b)` (and `age(a)` from today's midnight): years, months and days.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Age {
    signature: Signature,
}

impl Age {
    fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Stable),
        }
    }
}

/// PostgreSQL's `timestamp_age`: field-wise difference, borrowing from higher fields.
fn pg_age(t1: &NaiveDateTime, t2: &NaiveDateTime) -> IntervalMonthDayNano {
    let neg = t1 < t2;
    let sign = if neg { -1 } else { 1 };
    let mut usec = sign * ((t1.nanosecond() / 1000) as i64 - (t2.nanosecond() / 1000) as i64);
    let mut sec = sign * (t1.second() as i64 - t2.second() as i64);
    let mut min = sign * (t1.minute() as i64 - t2.minute() as i64);
    let mut hour = sign * (t1.hour() as i64 - t2.hour() as i64);
    let mut mday = sign * (t1.day() as i64 - t2.day() as i64);
    let mut mon = sign * (t1.month() as i64 - t2.month() as i64);
    let mut year = sign * (t1.year() as i64 - t2.year() as i64);
    while usec < 0 {
        usec += 1_000_000;
        sec -= 1;
    }
    while sec < 0 {
        sec += 60;
        min -= 1;
    }
    while min < 0 {
        min += 60;
        hour -= 1;
    }
    while hour < 0 {
        hour += 24;
        mday -= 1;
    }
    while mday < 0 {
        let t = if neg { t1 } else { t2 };
        mday += days_in_month(t.year(), t.month()) as i64;
        mon -= 1;
    }
    while mon < 0 {
        mon += 12;
        year -= 1;
    }
    let nanos = (((hour * 60 + min) * 60 + sec) * 1_000_000 + usec) * 1000;
    IntervalMonthDayNano::new(
        (sign * (year * 12 + mon)) as i32,
        (sign * mday) as i32,
        sign * nanos,
    )
}

impl ScalarUDFImpl for Age {
    fn name(&self) -> &str {
        "age"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DFResult<DataType> {
        if !(1..=2).contains(&args.len()) {
            return plan_err!(
                "age takes one or two timestamps, got {} arguments",
                args.len()
            );
        }
        Ok(DataType::Interval(
            datafusion::arrow::datatypes::IntervalUnit::MonthDayNano,
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let a = as_micros(&arrays[0], "age")?;
        let b = match arrays.get(1) {
            Some(b) => Some(as_micros(b, "age")?),
            None => None,
        };
        let midnight = Utc::now().date_naive().and_time(chrono::NaiveTime::MIN);
        let mut out = IntervalMonthDayNanoBuilder::with_capacity(a.len());
        for i in 0..a.len() {
            let (t1, t2) = match &b {
                Some(b) if a.is_valid(i) && b.is_valid(i) => {
                    (naive(a.value(i))?, naive(b.value(i))?)
                }
                None if a.is_valid(i) => (midnight, naive(a.value(i))?),
                _ => {
                    out.append_null();
                    continue;
                }
            };
            out.append_value(pg_age(&t1, &t2));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `to_char(ts, pattern)`: PostgreSQL patterns; a constant pattern with a `%` is a strftime
/// one and goes to DataFusion's own `to_char`, unchanged.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToChar {
    signature: Signature,
    strftime: Arc<ScalarUDF>,
}

impl ToChar {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
            strftime: datafusion::functions::datetime::to_char(),
        }
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
}

enum Pattern {
    Pg(Vec<PgToken>),
    Strftime(Vec<Item<'static>>),
}

fn compile_pattern(p: &str) -> DFResult<Pattern> {
    if p.contains('%') {
        let items: Vec<Item<'static>> = StrftimeItems::new(p).map(|i| i.to_owned()).collect();
        if items.iter().any(|i| matches!(i, Item::Error)) {
            return exec_err!("to_char: invalid strftime pattern '{p}'");
        }
        Ok(Pattern::Strftime(items))
    } else {
        pg_tokens(p)
            .map(Pattern::Pg)
            .map_err(|e| DataFusionError::Execution(format!("to_char: {e}")))
    }
}

impl ScalarUDFImpl for ToChar {
    fn name(&self) -> &str {
        "to_char"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DFResult<DataType> {
        match &args[0] {
            DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Duration(_)
            | DataType::Utf8
            | DataType::Utf8View
            | DataType::LargeUtf8
            | DataType::Null => Ok(DataType::Utf8),
            t if t.is_numeric() => plan_err!(
                "to_char: numeric patterns are not supported; use CAST(x AS VARCHAR), round() or printf-style concatenation"
            ),
            other => plan_err!("to_char: expected a date or timestamp, got {other}"),
        }
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let value_type = args.arg_fields[0].data_type().clone();
        let strftime = matches!(scalar_str(&args.args[1]), Some(Some(p)) if p.contains('%'));
        if (strftime && !is_text(&value_type) && value_type != DataType::Null)
            || matches!(
                value_type,
                DataType::Time32(_) | DataType::Time64(_) | DataType::Duration(_)
            )
        {
            // DataFusion's to_char takes its pattern as Utf8.
            if let ColumnarValue::Scalar(p) = &args.args[1] {
                args.args[1] = ColumnarValue::Scalar(p.cast_to(&DataType::Utf8)?);
            } else if let ColumnarValue::Array(p) = &args.args[1] {
                args.args[1] = ColumnarValue::Array(cast(p, &DataType::Utf8)?);
            }
            args.arg_fields[1] = Arc::new(Field::new("format", DataType::Utf8, true));
            return self.strftime.invoke_with_args(args);
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let values = as_micros(&arrays[0], "to_char")?;
        let patterns = cast(&arrays[1], &DataType::Utf8)?;
        let patterns = patterns.as_string::<i32>();
        let mut cache: HashMap<String, Pattern> = HashMap::new();
        let mut out = StringBuilder::with_capacity(values.len(), values.len() * 16);
        for i in 0..values.len() {
            if values.is_null(i) || patterns.is_null(i) {
                out.append_null();
                continue;
            }
            let p = patterns.value(i);
            if !cache.contains_key(p) {
                cache.insert(p.to_string(), compile_pattern(p)?);
            }
            let t = naive(values.value(i))?;
            match &cache[p] {
                Pattern::Pg(tokens) => out.append_value(pg_format(&t, tokens)),
                Pattern::Strftime(items) => {
                    let mut s = String::new();
                    write!(s, "{}", t.format_with_items(items.iter())).map_err(|_| {
                        DataFusionError::Execution(format!(
                            "to_char: pattern '{p}' cannot format a timestamp without time zone"
                        ))
                    })?;
                    out.append_value(s);
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// DuckDB `len`: characters of a string, elements of a list.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Len {
    signature: Signature,
}

impl Len {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Len {
    fn name(&self) -> &str {
        "len"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DFResult<DataType> {
        match &args[0] {
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Null
            | DataType::List(_)
            | DataType::LargeList(_) => Ok(DataType::Int64),
            other => plan_err!("len: expected a string or a list, got {other}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let a = &arrays[0];
        let out: Int64Array = match a.data_type() {
            DataType::List(_) | DataType::LargeList(_) => {
                let n = datafusion::arrow::compute::kernels::length::length(a)?;
                cast(&n, &DataType::Int64)?
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .clone()
            }
            _ => {
                let s = cast(a, &DataType::Utf8)?;
                s.as_string::<i32>()
                    .iter()
                    .map(|v| v.map(|v| v.chars().count() as i64))
                    .collect()
            }
        };
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// DuckDB `epoch_ms` / `epoch_us` / `epoch_ns`: a timestamp as an integer count since the
/// epoch; `epoch_ms(n)` is the reverse (milliseconds → timestamp).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Epoch {
    unit: TimeUnit,
    signature: Signature,
}

impl Epoch {
    fn new(unit: TimeUnit) -> Self {
        Self {
            unit,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Epoch {
    fn name(&self) -> &str {
        match self.unit {
            TimeUnit::Millisecond => "epoch_ms",
            TimeUnit::Microsecond => "epoch_us",
            _ => "epoch_ns",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DFResult<DataType> {
        match &args[0] {
            t if t.is_integer() && self.unit == TimeUnit::Millisecond => {
                Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
            }
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) | DataType::Null => {
                Ok(DataType::Int64)
            }
            other => plan_err!("{}: expected a timestamp, got {other}", self.name()),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let a = &arrays[0];
        let out = if a.data_type().is_integer() {
            let n = cast(a, &DataType::Int64)?;
            cast(&n, &DataType::Timestamp(TimeUnit::Millisecond, None))?
        } else {
            let t = cast(a, &DataType::Timestamp(self.unit, None))?;
            cast(&t, &DataType::Int64)?
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// `interval_mul(i, n)`: PostgreSQL's `interval * number` — each field multiplied, fractions
/// of months carried to days (30 per month) and of days to time (24 hours per day).
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalMul {
    signature: Signature,
}

impl IntervalMul {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

fn interval_times(i: IntervalMonthDayNano, k: f64) -> DFResult<IntervalMonthDayNano> {
    let overflow = || DataFusionError::Execution("interval out of range".into());
    if k.fract() == 0.0 && k.abs() < i32::MAX as f64 {
        let k = k as i32;
        return Ok(IntervalMonthDayNano::new(
            i.months.checked_mul(k).ok_or_else(overflow)?,
            i.days.checked_mul(k).ok_or_else(overflow)?,
            i.nanoseconds.checked_mul(k as i64).ok_or_else(overflow)?,
        ));
    }
    let months = i.months as f64 * k;
    let days = i.days as f64 * k + months.fract() * 30.0;
    let nanos = i.nanoseconds as f64 * k + days.fract() * 86_400e9;
    if months.abs() > i32::MAX as f64
        || days.abs() > i32::MAX as f64
        || nanos.abs() > i64::MAX as f64
    {
        return Err(overflow());
    }
    Ok(IntervalMonthDayNano::new(
        months.trunc() as i32,
        days.trunc() as i32,
        nanos.round() as i64,
    ))
}

impl ScalarUDFImpl for IntervalMul {
    fn name(&self) -> &str {
        "interval_mul"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DFResult<DataType> {
        match (&args[0], &args[1]) {
            (DataType::Interval(_) | DataType::Null, k) if k.is_numeric() || k.is_null() => Ok(
                DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
            ),
            (a, b) => plan_err!("cannot multiply {a} by {b}; expected an interval and a number"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let unit = DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano);
        let i = cast(&arrays[0], &unit)?;
        let i = i.as_primitive::<datafusion::arrow::datatypes::IntervalMonthDayNanoType>();
        let k = cast(&arrays[1], &DataType::Float64)?;
        let k = k.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        let mut out = IntervalMonthDayNanoBuilder::with_capacity(i.len());
        for r in 0..i.len() {
            if i.is_null(r) || k.is_null(r) {
                out.append_null();
            } else {
                out.append_value(interval_times(i.value(r), k.value(r))?);
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

// ---------------------------------------------------------------------------------------------
// Aggregates
// ---------------------------------------------------------------------------------------------

/// `mode(x)`: the most frequent non-null value; ties go to the smallest value (as
/// PostgreSQL's `mode() WITHIN GROUP (ORDER BY x)`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Mode {
    signature: Signature,
}

impl Mode {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for Mode {
    fn name(&self) -> &str {
        "mode"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DFResult<DataType> {
        Ok(args[0].clone())
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DFResult<Box<dyn Accumulator>> {
        Ok(Box::new(ModeAccumulator {
            data_type: args.return_field.data_type().clone(),
            counts: HashMap::new(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DFResult<Vec<FieldRef>> {
        let dt = args.return_field.data_type().clone();
        Ok(vec![
            Arc::new(Field::new_list(
                format_state_name(args.name, "values"),
                Field::new_list_field(dt, true),
                true,
            )),
            Arc::new(Field::new_list(
                format_state_name(args.name, "counts"),
                Field::new_list_field(DataType::Int64, true),
                true,
            )),
        ])
    }
}

#[derive(Debug)]
struct ModeAccumulator {
    data_type: DataType,
    counts: HashMap<ScalarValue, i64>,
}

impl Accumulator for ModeAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DFResult<()> {
        let a = &values[0];
        for i in 0..a.len() {
            if a.is_valid(i) {
                *self
                    .counts
                    .entry(ScalarValue::try_from_array(a, i)?)
                    .or_default() += 1;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> DFResult<ScalarValue> {
        let mut best: Option<(&ScalarValue, i64)> = None;
        for (v, &n) in &self.counts {
            best = match best {
                Some((b, bn))
                    if bn > n
                        || (bn == n && b.partial_cmp(v) != Some(std::cmp::Ordering::Greater)) =>
                {
                    Some((b, bn))
                }
                _ => Some((v, n)),
            };
        }
        match best {
            Some((v, _)) => Ok(v.clone()),
            None => ScalarValue::try_from(&self.data_type),
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .counts
                .keys()
                .map(|k| k.size() + std::mem::size_of::<i64>())
                .sum::<usize>()
    }

    fn state(&mut self) -> DFResult<Vec<ScalarValue>> {
        let (values, counts): (Vec<ScalarValue>, Vec<ScalarValue>) = self
            .counts
            .iter()
            .map(|(v, n)| (v.clone(), ScalarValue::Int64(Some(*n))))
            .unzip();
        Ok(vec![
            ScalarValue::List(ScalarValue::new_list_nullable(&values, &self.data_type)),
            ScalarValue::List(ScalarValue::new_list_nullable(&counts, &DataType::Int64)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DFResult<()> {
        let values = states[0].as_list::<i32>();
        let counts = states[1].as_list::<i32>();
        for row in 0..values.len() {
            if values.is_null(row) || counts.is_null(row) {
                continue;
            }
            let vs = values.value(row);
            let ns = counts.value(row);
            let ns = ns.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            for j in 0..vs.len() {
                if vs.is_valid(j) {
                    *self
                        .counts
                        .entry(ScalarValue::try_from_array(&vs, j)?)
                        .or_default() += ns.value(j);
                }
            }
        }
        Ok(())
    }
}

/// `LIKE … ESCAPE 'c'` with an escape character other than backslash (DataFusion runs
/// only backslash escapes): the pattern is rewritten to backslash escapes at run time, so
/// drivers' catalog queries (`nspname NOT LIKE 'pg\_%' ESCAPE '/'` from SQLAlchemy) work.
#[derive(Debug, Default)]
pub(crate) struct LikeEscapeRule;

impl datafusion::optimizer::AnalyzerRule for LikeEscapeRule {
    fn analyze(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        _config: &datafusion::config::ConfigOptions,
    ) -> datafusion::common::Result<datafusion::logical_expr::LogicalPlan> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::logical_expr::Expr;
        use datafusion::logical_expr::expr::Like;
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::Like(like) if like.escape_char.is_some_and(|c| c != '\\') => {
                        let esc = like.escape_char.unwrap_or('\\');
                        let pattern = Expr::ScalarFunction(
                            datafusion::logical_expr::expr::ScalarFunction::new_udf(
                                like_escape_udf(),
                                vec![
                                    *like.pattern,
                                    Expr::Literal(ScalarValue::Utf8(Some(esc.to_string())), None),
                                ],
                            ),
                        );
                        Ok(Transformed::yes(Expr::Like(Like {
                            pattern: Box::new(pattern),
                            escape_char: None,
                            ..like
                        })))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "strata_like_escape"
    }
}

/// A LIKE pattern with escape character `esc` as the same pattern with backslash escapes.
pub(crate) fn rewrite_like_escape(pattern: &str, esc: char) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == esc {
            match chars.next() {
                Some(n @ ('%' | '_' | '\\')) => {
                    out.push('\\');
                    out.push(n);
                }
                Some(n) => out.push(n),
                None => out.push(esc),
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

fn like_escape_udf() -> Arc<datafusion::logical_expr::ScalarUDF> {
    use datafusion::arrow::array::{Array, AsArray, StringArray};
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    static UDF: std::sync::OnceLock<Arc<datafusion::logical_expr::ScalarUDF>> =
        std::sync::OnceLock::new();
    Arc::clone(UDF.get_or_init(|| {
        Arc::new(create_udf(
            "strata_like_escape",
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(|args| {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                let patterns = cast(&arrays[0], &DataType::Utf8)?;
                let patterns = patterns.as_string::<i32>();
                let escapes = cast(&arrays[1], &DataType::Utf8)?;
                let escapes = escapes.as_string::<i32>();
                let out: StringArray = (0..patterns.len())
                    .map(|i| {
                        (patterns.is_valid(i) && escapes.is_valid(i)).then(|| {
                            match escapes.value(i).chars().next() {
                                Some(esc) => rewrite_like_escape(patterns.value(i), esc),
                                None => patterns.value(i).to_string(),
                            }
                        })
                    })
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }),
        ))
    }))
}

#[cfg(test)]
mod like_escape_tests {
    use super::rewrite_like_escape;

    #[test]
    fn escapes_become_backslashes() {
        assert_eq!(rewrite_like_escape("pg/_%", '/'), "pg\\_%");
        assert_eq!(rewrite_like_escape("a\\b//c", '/'), "a\\\\b/c");
        assert_eq!(rewrite_like_escape("100!%", '!'), "100\\%");
    }
}
