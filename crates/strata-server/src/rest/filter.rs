//! The query language of the table endpoints, in the spirit of PostgREST:
//!
//! ```text
//! GET /api/v1/tables/marts/orders?customer_id=eq.42&status=in.(paid,"on hold")
//!     &or=(amount.gt.100,and(region.eq.EU,amount.gt.50))&select=id,amount
//!     &order=order_date.desc.nullslast,id&limit=100
//! ```
//!
//! Operators: `eq neq gt gte lt lte like ilike in is`, each negatable with `not.`
//! (`status=not.eq.cancelled`); `like` patterns use `*` for any characters; `is` takes
//! `null`, `true`, `false` or `unknown`. `or=(…)` and `and=(…)` group conditions and nest.
//!
//! Parsing produces a [`Query`] that names columns and carries values as text. It becomes a
//! SQL syntax tree ([`Query::to_statement`]) only against the table's actual columns:
//! every column is checked to exist and written as a quoted identifier, every value
//! becomes a literal of the column's type. Nothing a client sends is ever spliced into
//! SQL text.

use std::fmt;

use strata_engine::datafusion::arrow::datatypes::{DataType, Schema};
use strata_engine::datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Ident, LimitClause, ObjectName, Offset, OffsetRows, OrderBy, OrderByExpr,
    OrderByKind, OrderByOptions, SelectItem, SetExpr, Statement, TableFactor, TableVersion,
    UnaryOperator, Value,
};

/// Most rows one page may ask for.
pub const MAX_LIMIT: u64 = 10_000;
/// Rows in a page when the client does not say.
pub const DEFAULT_LIMIT: u64 = 100;
/// Deepest nesting of `or`/`and` groups.
const MAX_DEPTH: usize = 16;
/// Most conditions in one request.
const MAX_CONDITIONS: usize = 200;

/// A client's mistake in the query string, said so it can be fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FilterError {}

fn err<T>(msg: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(msg.into()))
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `<>`
    Neq,
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `<`
    Lt,
    /// `<=`
    Lte,
    /// `LIKE` (`*` is the wildcard)
    Like,
    /// `ILIKE`
    ILike,
    /// `IN (…)`
    In,
    /// `IS NULL / TRUE / FALSE / UNKNOWN`
    Is,
}

impl Op {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "like" => Op::Like,
            "ilike" => Op::ILike,
            "in" => Op::In,
            "is" => Op::Is,
            _ => return None,
        })
    }
}

/// A condition tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `column op value`, possibly negated.
    Cond {
        /// The column, exactly as the client named it.
        column: String,
        /// `not.` before the operator.
        negate: bool,
        /// The operator.
        op: Op,
        /// Values as text: one, or the list of `in`.
        values: Vec<String>,
    },
    /// All of these.
    And(Vec<Filter>),
    /// Any of these.
    Or(Vec<Filter>),
    /// `not.or(…)` / `not.and(…)`.
    Not(Box<Filter>),
}

/// Sort direction and null placement of one `order` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// The column.
    pub column: String,
    /// Descending.
    pub desc: bool,
    /// `nullsfirst` (`Some(true)`), `nullslast` (`Some(false)`).
    pub nulls_first: Option<bool>,
}

/// A parsed table request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    /// Columns to return (all when empty).
    pub select: Vec<String>,
    /// Conditions, all of which hold.
    pub filters: Vec<Filter>,
    /// Sort order.
    pub order: Vec<Order>,
    /// Page size.
    pub limit: Option<u64>,
    /// Rows to skip.
    pub offset: Option<u64>,
    /// An opaque page cursor from a previous response.
    pub cursor: Option<String>,
}

impl Query {
    /// Parses decoded query-string pairs.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, FilterError> {
        let mut q = Query::default();
        let mut conditions = 0usize;
        for (key, value) in pairs {
            match key {
                "select" => {
                    if !q.select.is_empty() {
                        return err("`select` is given twice");
                    }
                    for c in split_top(value, ',')? {
                        let c = c.trim();
                        if c.is_empty() {
                            return err("`select` has an empty column name");
                        }
                        if c != "*" {
                            q.select.push(unquote(c)?);
                        }
                    }
                }
                "order" => {
                    for item in split_top(value, ',')? {
                        q.order.push(parse_order(item)?);
                    }
                }
                "limit" => q.limit = Some(parse_count("limit", value)?),
                "offset" => q.offset = Some(parse_count("offset", value)?),
                "cursor" => q.cursor = Some(value.to_string()),
                "or" | "and" => {
                    let f = parse_group(key, value, 0, &mut conditions)?;
                    q.filters.push(f);
                }
                "not.or" | "not.and" => {
                    let f = parse_group(&key[4..], value, 0, &mut conditions)?;
                    q.filters.push(Filter::Not(Box::new(f)));
                }
                column => {
                    if column.is_empty() {
                        return err("a filter has no column name (`=value`)");
                    }
                    conditions += 1;
                    if conditions > MAX_CONDITIONS {
                        return err(format!("more than {MAX_CONDITIONS} conditions"));
                    }
                    q.filters.push(parse_condition(column.to_string(), value)?);
                }
            }
        }
        if let Some(l) = q.limit
            && l > MAX_LIMIT
        {
            return err(format!(
                "limit {l} is above the maximum of {MAX_LIMIT}; page with `cursor`"
            ));
        }
        Ok(q)
    }

    /// The page size in force.
    pub fn page_size(&self) -> u64 {
        self.limit.unwrap_or(DEFAULT_LIMIT)
    }

    /// The `SELECT` for this request over `table` (`[namespace, table]`) whose columns are
    /// `schema`, reading version `version` when given, skipping `offset` rows and fetching
    /// `fetch` rows. Without an `order`, rows are ordered by every returned column so that
    /// pages are stable.
    pub fn to_statement(
        &self,
        table: [&str; 2],
        schema: &Schema,
        version: Option<u64>,
        offset: u64,
        fetch: u64,
    ) -> Result<Statement, FilterError> {
        self.build(table, schema, Some((version, offset, fetch)), None)
    }

    /// The request's key, when it has one: the first condition at the top level that is
    /// `column=eq.value`. Returns its index in [`Query::filters`], the column and the value.
    pub fn key(&self) -> Option<(usize, &str, &str)> {
        self.filters.iter().enumerate().find_map(|(i, f)| match f {
            Filter::Cond {
                column,
                negate: false,
                op: Op::Eq,
                values,
            } if values.len() == 1 => Some((i, column.as_str(), values[0].as_str())),
            _ => None,
        })
    }

    /// The `SELECT` of a key lookup: the request's columns and conditions without order or
    /// paging, the value of the key condition (index `key` of [`Query::filters`]) being the
    /// parameter `$1` when `key` is given. The rows are those of [`Query::to_statement`]
    /// when there is at most one.
    pub fn to_lookup_statement(
        &self,
        table: [&str; 2],
        schema: &Schema,
        key: Option<usize>,
    ) -> Result<Statement, FilterError> {
        self.build(table, schema, None, key)
    }

    /// The statement; `paging` is `(version, offset, fetch)`, and without it the rows are
    /// neither ordered nor paged.
    fn build(
        &self,
        table: [&str; 2],
        schema: &Schema,
        paging: Option<(Option<u64>, u64, u64)>,
        parameter: Option<usize>,
    ) -> Result<Statement, FilterError> {
        let field = |name: &str| -> Result<&DataType, FilterError> {
            schema
                .fields()
                .iter()
                .find(|f| f.name() == name)
                .map(|f| f.data_type())
                .ok_or_else(|| FilterError(format!("`{}` has no column `{name}`", table.join("."))))
        };
        let projection: Vec<SelectItem> = if self.select.is_empty() {
            schema
                .fields()
                .iter()
                .map(|f| SelectItem::UnnamedExpr(Expr::Identifier(quoted(f.name()))))
                .collect()
        } else {
            let mut items = Vec::new();
            for c in &self.select {
                field(c)?;
                items.push(SelectItem::UnnamedExpr(Expr::Identifier(quoted(c))));
            }
            items
        };
        let mut selection: Option<Expr> = None;
        for (i, f) in self.filters.iter().enumerate() {
            let e = match f {
                Filter::Cond { column, values, .. } if parameter == Some(i) => {
                    // Checked as the literal would be, so both statements refuse alike.
                    literal(column, field(column)?, &values[0])?;
                    Expr::BinaryOp {
                        left: Box::new(Expr::Identifier(quoted(column))),
                        op: BinaryOperator::Eq,
                        right: Box::new(Expr::value(Value::Placeholder("$1".into()))),
                    }
                }
                f => filter_expr(f, &field)?,
            };
            selection = Some(match selection {
                None => e,
                Some(prev) => Expr::BinaryOp {
                    left: Box::new(prev),
                    op: BinaryOperator::And,
                    right: Box::new(e),
                },
            });
        }
        let mut order: Vec<OrderByExpr> = Vec::new();
        for o in &self.order {
            if paging.is_none() {
                field(&o.column)?;
                continue;
            }
            field(&o.column)?;
            order.push(OrderByExpr {
                expr: Expr::Identifier(quoted(&o.column)),
                options: OrderByOptions {
                    asc: Some(!o.desc),
                    nulls_first: o.nulls_first,
                },
                with_fill: None,
            });
        }
        // Ties broken by every column of the table, so a page boundary is the same on
        // every request over the same version.
        for f in schema.fields().iter().filter(|_| paging.is_some()) {
            if !self.order.iter().any(|o| &o.column == f.name()) && sortable(f.data_type()) {
                order.push(OrderByExpr {
                    expr: Expr::Identifier(quoted(f.name())),
                    options: OrderByOptions {
                        asc: Some(true),
                        nulls_first: Some(false),
                    },
                    with_fill: None,
                });
            }
        }
        let mut stmt = template();
        let Statement::Query(query) = &mut stmt else {
            unreachable!("the template is a query")
        };
        let SetExpr::Select(select) = query.body.as_mut() else {
            unreachable!("the template is a SELECT")
        };
        select.projection = projection;
        select.selection = selection;
        if let TableFactor::Table {
            name, version: v, ..
        } = &mut select.from[0].relation
        {
            *name = ObjectName::from(vec![quoted(table[0]), quoted(table[1])]);
            *v = paging
                .and_then(|(version, ..)| version)
                .map(|n| TableVersion::VersionAsOf(number(n)));
        }
        let Some((_, offset, fetch)) = paging else {
            return Ok(stmt);
        };
        query.order_by = (!order.is_empty()).then_some(OrderBy {
            kind: OrderByKind::Expressions(order),
            interpolate: None,
        });
        query.limit_clause = Some(LimitClause::LimitOffset {
            limit: Some(number(fetch)),
            offset: Some(Offset {
                value: number(offset),
                rows: OffsetRows::None,
            }),
            limit_by: vec![],
        });
        Ok(stmt)
    }
}

/// The statement every table request starts from; it holds no client input. Parsed once.
fn template() -> Statement {
    use strata_engine::datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use strata_engine::datafusion::sql::sqlparser::parser::Parser;
    static TEMPLATE: std::sync::OnceLock<Statement> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            Parser::parse_sql(&PostgreSqlDialect {}, "SELECT 1 FROM t")
                .ok()
                .and_then(|mut v| v.pop())
                .expect("the template parses")
        })
        .clone()
}

fn quoted(name: &str) -> Ident {
    Ident::with_quote('"', name)
}

fn number(n: u64) -> Expr {
    Expr::value(Value::Number(n.to_string(), false))
}

fn sortable(t: &DataType) -> bool {
    !matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..)
            | DataType::Union(..)
    )
}

fn parse_count(what: &str, v: &str) -> Result<u64, FilterError> {
    v.trim().parse::<u64>().or_else(|_| {
        err(format!(
            "`{what}` must be a whole number of rows, not `{v}`"
        ))
    })
}

fn parse_order(item: &str) -> Result<Order, FilterError> {
    let mut parts = item.trim().split('.');
    let column = parts.next().unwrap_or_default();
    if column.is_empty() {
        return err(format!("`order` item `{item}` has no column"));
    }
    let mut o = Order {
        column: unquote(column)?,
        desc: false,
        nulls_first: None,
    };
    for p in parts {
        match p {
            "asc" => o.desc = false,
            "desc" => o.desc = true,
            "nullsfirst" => o.nulls_first = Some(true),
            "nullslast" => o.nulls_first = Some(false),
            other => {
                return err(format!(
                    "`order` item `{item}`: `{other}` is not asc, desc, nullsfirst or nullslast"
                ));
            }
        }
    }
    Ok(o)
}

/// `"quoted name"` → `quoted name`; bare names as they are.
fn unquote(s: &str) -> Result<String, FilterError> {
    if let Some(inner) = s.strip_prefix('"') {
        let Some(inner) = inner.strip_suffix('"') else {
            return err(format!("unterminated quote in `{s}`"));
        };
        return Ok(inner.replace("\\\"", "\"").replace("\\\\", "\\"));
    }
    Ok(s.to_string())
}

/// `op.value` or `not.op.value` for `column`.
fn parse_condition(column: String, spec: &str) -> Result<Filter, FilterError> {
    let (negate, rest) = match spec.strip_prefix("not.") {
        Some(r) => (true, r),
        None => (false, spec),
    };
    let Some((op, value)) = rest.split_once('.') else {
        return err(format!(
            "filter `{column}={spec}`: write `{column}=eq.value` (operators: eq, neq, gt, gte, lt, lte, like, ilike, in, is)"
        ));
    };
    let Some(op) = Op::parse(op) else {
        return err(format!(
            "filter `{column}={spec}`: unknown operator `{op}` (eq, neq, gt, gte, lt, lte, like, ilike, in, is)"
        ));
    };
    let values = match op {
        Op::In => {
            let Some(list) = value.strip_prefix('(').and_then(|v| v.strip_suffix(')')) else {
                return err(format!(
                    "filter `{column}={spec}`: `in` takes a list: `in.(a,b,c)`"
                ));
            };
            if list.is_empty() {
                Vec::new()
            } else {
                split_top(list, ',')?
                    .into_iter()
                    .map(|v| unquote(v.trim()))
                    .collect::<Result<_, _>>()?
            }
        }
        Op::Is => {
            let v = value.to_ascii_lowercase();
            if !matches!(v.as_str(), "null" | "true" | "false" | "unknown") {
                return err(format!(
                    "filter `{column}={spec}`: `is` takes null, true, false or unknown"
                ));
            }
            vec![v]
        }
        _ => vec![unquote(value)?],
    };
    Ok(Filter::Cond {
        column: unquote(&column)?,
        negate,
        op,
        values,
    })
}

/// `(a.eq.1,and(b.gt.2,c.is.null))` for `or` / `and`.
fn parse_group(
    kind: &str,
    value: &str,
    depth: usize,
    conditions: &mut usize,
) -> Result<Filter, FilterError> {
    if depth >= MAX_DEPTH {
        return err(format!("`{kind}` groups nest deeper than {MAX_DEPTH}"));
    }
    let Some(inner) = value.strip_prefix('(').and_then(|v| v.strip_suffix(')')) else {
        return err(format!(
            "`{kind}` takes a list in parentheses: `{kind}=(a.eq.1,b.gt.2)`"
        ));
    };
    let mut items = Vec::new();
    for item in split_top(inner, ',')? {
        let item = item.trim();
        *conditions += 1;
        if *conditions > MAX_CONDITIONS {
            return err(format!("more than {MAX_CONDITIONS} conditions"));
        }
        let (negate, body) = match item.strip_prefix("not.") {
            Some(rest) => (true, rest),
            None => (false, item),
        };
        let nested = ["or", "and"]
            .into_iter()
            .find(|k| body.starts_with(k) && body[k.len()..].starts_with('('));
        let f = if let Some(k) = nested {
            let g = parse_group(k, &body[k.len()..], depth + 1, conditions)?;
            if negate { Filter::Not(Box::new(g)) } else { g }
        } else {
            let Some((column, spec)) = body.split_once('.') else {
                return err(format!("`{kind}` item `{item}`: write `column.op.value`"));
            };
            if column.is_empty() {
                return err(format!("`{kind}` item `{item}` has no column"));
            }
            let spec = if negate {
                format!("not.{spec}")
            } else {
                spec.to_string()
            };
            parse_condition(column.to_string(), &spec)?
        };
        items.push(f);
    }
    if items.is_empty() {
        return err(format!("`{kind}` group is empty"));
    }
    Ok(if kind == "or" {
        Filter::Or(items)
    } else {
        Filter::And(items)
    })
}

/// Splits on `sep` outside parentheses and double quotes.
fn split_top(s: &str, sep: char) -> Result<Vec<&str>, FilterError> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| FilterError(format!("unbalanced `)` in `{s}`")))?;
            }
            c if c == sep && !quoted && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quoted {
        return err(format!("unterminated quote in `{s}`"));
    }
    if depth != 0 {
        return err(format!("unbalanced `(` in `{s}`"));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn filter_expr<'a>(
    f: &Filter,
    field: &dyn Fn(&str) -> Result<&'a DataType, FilterError>,
) -> Result<Expr, FilterError> {
    match f {
        Filter::And(items) | Filter::Or(items) => {
            let op = if matches!(f, Filter::And(_)) {
                BinaryOperator::And
            } else {
                BinaryOperator::Or
            };
            let mut out: Option<Expr> = None;
            for i in items {
                let e = filter_expr(i, field)?;
                out = Some(match out {
                    None => e,
                    Some(prev) => Expr::BinaryOp {
                        left: Box::new(prev),
                        op: op.clone(),
                        right: Box::new(e),
                    },
                });
            }
            Ok(Expr::Nested(Box::new(
                out.ok_or_else(|| FilterError("an empty group".into()))?,
            )))
        }
        Filter::Not(inner) => Ok(Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr: Box::new(Expr::Nested(Box::new(filter_expr(inner, field)?))),
        }),
        Filter::Cond {
            column,
            negate,
            op,
            values,
        } => {
            let ty = field(column)?;
            let col = Box::new(Expr::Identifier(quoted(column)));
            let lit = |v: &str| literal(column, ty, v);
            let cmp = |bop: BinaryOperator| -> Result<Expr, FilterError> {
                Ok(Expr::BinaryOp {
                    left: col.clone(),
                    op: bop,
                    right: Box::new(lit(&values[0])?),
                })
            };
            let e = match op {
                Op::Eq => cmp(BinaryOperator::Eq)?,
                Op::Neq => cmp(BinaryOperator::NotEq)?,
                Op::Gt => cmp(BinaryOperator::Gt)?,
                Op::Gte => cmp(BinaryOperator::GtEq)?,
                Op::Lt => cmp(BinaryOperator::Lt)?,
                Op::Lte => cmp(BinaryOperator::LtEq)?,
                Op::Like | Op::ILike => {
                    let pattern = values[0].replace('*', "%");
                    let pattern = Box::new(Expr::value(Value::SingleQuotedString(pattern)));
                    if *op == Op::Like {
                        Expr::Like {
                            negated: false,
                            any: false,
                            expr: col,
                            pattern,
                            escape_char: None,
                        }
                    } else {
                        Expr::ILike {
                            negated: false,
                            any: false,
                            expr: col,
                            pattern,
                            escape_char: None,
                        }
                    }
                }
                Op::In => {
                    if values.is_empty() {
                        // `in.()` matches nothing.
                        Expr::value(Value::Boolean(false))
                    } else {
                        Expr::InList {
                            expr: col,
                            list: values.iter().map(|v| lit(v)).collect::<Result<_, _>>()?,
                            negated: false,
                        }
                    }
                }
                Op::Is => match values[0].as_str() {
                    "null" => Expr::IsNull(col),
                    "true" => Expr::IsTrue(col),
                    "false" => Expr::IsFalse(col),
                    _ => Expr::IsUnknown(col),
                },
            };
            Ok(if *negate {
                Expr::UnaryOp {
                    op: UnaryOperator::Not,
                    expr: Box::new(Expr::Nested(Box::new(e))),
                }
            } else {
                e
            })
        }
    }
}

/// A value as a literal of the column's type; numbers and booleans are checked here so
/// the client learns which filter is wrong.
fn literal(column: &str, ty: &DataType, v: &str) -> Result<Expr, FilterError> {
    let bad = |what: &str| FilterError(format!("column `{column}` holds {what}; `{v}` is not one"));
    Ok(match ty {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => {
            let n: i128 = v.trim().parse().map_err(|_| bad("whole numbers"))?;
            Expr::value(Value::Number(n.to_string(), false))
        }
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => {
            let n: f64 = v.trim().parse().map_err(|_| bad("numbers"))?;
            if !n.is_finite() {
                return Err(bad("finite numbers"));
            }
            // The text is kept (it parsed as a number) so decimals stay exact.
            Expr::value(Value::Number(v.trim().to_string(), false))
        }
        DataType::Boolean => match v.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => Expr::value(Value::Boolean(true)),
            "false" | "f" | "0" => Expr::value(Value::Boolean(false)),
            _ => return Err(bad("booleans")),
        },
        // Text, dates, timestamps…: a string literal, cast by the comparison to the
        // column's type (a malformed date is an error from the engine).
        _ => Expr::value(Value::SingleQuotedString(v.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::datafusion::arrow::datatypes::Field;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("status", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("paid", DataType::Boolean, true),
            Field::new("order date", DataType::Date32, true),
        ])
    }

    fn sql(qs: &str) -> Result<String, FilterError> {
        let pairs: Vec<(String, String)> = url_pairs(qs);
        let q = Query::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        Ok(
            q.to_statement(["marts", "orders"], &schema(), None, 0, q.page_size() + 1)?
                .to_string(),
        )
    }

    fn url_pairs(qs: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(qs.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn filters_become_typed_literals_and_quoted_identifiers() {
        let s =
            sql("id=eq.42&status=in.(paid,\"on hold\")&select=id,status&order=id.desc.nullslast")
                .unwrap();
        assert_eq!(
            s,
            "SELECT \"id\", \"status\" FROM \"marts\".\"orders\" WHERE \"id\" = 42 AND \"status\" IN ('paid', 'on hold') \
             ORDER BY \"id\" DESC NULLS LAST, \"status\" ASC NULLS LAST, \"amount\" ASC NULLS LAST, \"paid\" ASC NULLS LAST, \"order date\" ASC NULLS LAST LIMIT 101 OFFSET 0"
        );
    }

    #[test]
    fn a_key_lookup_keeps_columns_and_conditions_and_binds_the_key() {
        let parse = |qs: &str| {
            let pairs = url_pairs(qs);
            Query::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap()
        };
        let q = parse("select=id,status&amount=gt.5&status=eq.paid&id=eq.42&order=id.desc&limit=5");
        assert_eq!(q.key(), Some((1, "status", "paid")));
        let bound = q
            .to_lookup_statement(["marts", "orders"], &schema(), Some(1))
            .unwrap()
            .to_string();
        assert_eq!(
            bound,
            "SELECT \"id\", \"status\" FROM \"marts\".\"orders\" WHERE \"amount\" > 5 AND \"status\" = $1 AND \"id\" = 42"
        );
        let literal = q
            .to_lookup_statement(["marts", "orders"], &schema(), None)
            .unwrap()
            .to_string();
        assert!(
            literal.ends_with("\"status\" = 'paid' AND \"id\" = 42"),
            "{literal}"
        );
        // Negated, listed and nested conditions are not keys.
        assert_eq!(parse("id=not.eq.1&status=in.(a)&or=(id.eq.1)").key(), None);
        // The key's value is checked against its column as a literal would be; the order's
        // columns too, though the lookup does not sort.
        let q = parse("id=eq.x");
        let err = |q: &Query| q.to_lookup_statement(["marts", "orders"], &schema(), Some(0));
        assert_eq!(
            err(&q).unwrap_err(),
            q.to_statement(["marts", "orders"], &schema(), None, 0, 1)
                .unwrap_err()
        );
        assert!(err(&parse("id=eq.1&order=nope")).is_err());
    }

    #[test]
    fn groups_nest_and_negate() {
        let s = sql("or=(amount.gt.100,and(status.eq.EU,paid.is.true))&not.and=(id.lt.5,id.gt.1)")
            .unwrap();
        assert!(
            s.contains(
                "WHERE (\"amount\" > 100 OR (\"status\" = 'EU' AND \"paid\" IS TRUE)) AND NOT ((\"id\" < 5 AND \"id\" > 1))"
            ),
            "{s}"
        );
        let s = sql("status=not.like.ab*").unwrap();
        assert!(s.contains("NOT (\"status\" LIKE 'ab%')"), "{s}");
    }

    #[test]
    fn injection_attempts_stay_values_or_are_refused() {
        // A value is a literal: quotes inside it are the literal's business.
        let s = sql("status=eq.x'; drop table marts.orders; --").unwrap();
        assert!(
            s.contains("\"status\" = 'x''; drop table marts.orders; --'"),
            "{s}"
        );
        // A column must exist, however it is spelled.
        for bad in [
            "id;drop table x=eq.1",
            "\"id\"\"=eq.1",
            "ｉｄ=eq.1",
            "id\u{200b}=eq.1",
            "select=id,(select 1)",
            "order=id;drop",
        ] {
            assert!(sql(bad).is_err(), "{bad} should be refused");
        }
        // Numbers are numbers.
        assert!(sql("id=eq.1 or 1=1").is_err());
        assert!(sql("amount=gt.NaN").is_err());
        assert!(sql("paid=eq.maybe").is_err());
    }

    #[test]
    fn mistakes_are_explained() {
        let e = sql("id=42").unwrap_err();
        assert!(e.0.contains("id=eq.value"), "{e}");
        let e = sql("id=between.1").unwrap_err();
        assert!(e.0.contains("unknown operator"), "{e}");
        let e = sql("nope=eq.1").unwrap_err();
        assert!(e.0.contains("has no column `nope`"), "{e}");
        let e = sql("limit=100000").unwrap_err();
        assert!(e.0.contains("maximum"), "{e}");
        let e = sql("or=(id.eq.1").unwrap_err();
        assert!(
            e.0.contains("parentheses") || e.0.contains("unbalanced"),
            "{e}"
        );
        let deep = format!("or=({}id.eq.1{})", "or(".repeat(40), ")".repeat(40));
        assert!(sql(&deep).unwrap_err().0.contains("deeper"));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A small deterministic fuzz loop over the parser (the CI fuzz target runs longer).
        let alphabet: Vec<char> = "ab.,()\"\\*=&%:-_ 0123456789notorandeqinlikeis\u{e9}\u{200b}ｉ"
            .chars()
            .collect();
        let mut state = 0x2545F4914F6CDD1Du64;
        for _ in 0..20_000 {
            let mut s = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 40) as usize;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let _ = sql(&s);
        }
    }
}
