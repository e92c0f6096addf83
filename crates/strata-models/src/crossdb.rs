//! The cross-database macros of dbt's `dbt` namespace, rendered as SQL the engine (DataFusion,
//! `strata` dialect) runs. Each was checked against DataFusion 55's function names.

use minijinja::value::{Kwargs, Value};
use minijinja::{Error, ErrorKind};

use crate::jinja::kwargs_of;

/// Names served by [`render`].
pub(crate) const NAMES: &[&str] = &[
    "date_trunc",
    "datediff",
    "dateadd",
    "safe_cast",
    "type_string",
    "type_int",
    "type_bigint",
    "type_float",
    "type_numeric",
    "type_timestamp",
    "type_boolean",
    "concat",
    "current_timestamp",
    "hash",
    "cast_bool_to_text",
    "any_value",
    "bool_or",
    "listagg",
    "split_part",
    "last_day",
    "escape_single_quotes",
    "string_literal",
    "right",
    "length",
    "replace",
    "position",
];

/// Positional and keyword arguments, by position or by the names dbt's macros use.
struct Args<'a> {
    name: &'a str,
    pos: Vec<Value>,
    kw: Option<Kwargs>,
}

impl Args<'_> {
    fn get(&self, idx: usize, key: &str) -> Option<Value> {
        if let Some(v) = self.pos.get(idx) {
            return Some(v.clone());
        }
        self.kw.as_ref().and_then(|k| k.get::<Value>(key).ok())
    }

    fn req(&self, idx: usize, key: &str) -> Result<String, Error> {
        self.get(idx, key).map(|v| v.to_string()).ok_or_else(|| {
            Error::new(
                ErrorKind::MissingArgument,
                format!("dbt.{}() needs the argument `{key}`", self.name),
            )
        })
    }
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('\'').trim_matches('"').to_lowercase()
}

fn seconds_per(part: &str) -> Option<u64> {
    Some(match part {
        "second" => 1,
        "minute" => 60,
        "hour" => 3_600,
        "day" => 86_400,
        "week" => 604_800,
        _ => return None,
    })
}

/// Renders `dbt.<name>(args…)`.
pub(crate) fn render(name: &str, args: &[Value]) -> Result<String, Error> {
    let (pos, kw) = match args.last().and_then(kwargs_of) {
        Some(k) => (args[..args.len() - 1].to_vec(), Some(k)),
        None => (args.to_vec(), None),
    };
    let a = Args { name, pos, kw };
    let out = match name {
        "date_trunc" => format!(
            "date_trunc('{}', {})",
            unquote(&a.req(0, "datepart")?),
            a.req(1, "date")?
        ),
        "datediff" => {
            let first = a.req(0, "first_date")?;
            let second = a.req(1, "second_date")?;
            let part = unquote(&a.req(2, "datepart")?);
            let ts = |e: &str| format!("CAST({e} AS TIMESTAMP)");
            if let Some(n) = seconds_per(&part) {
                format!(
                    "CAST((date_part('epoch', date_trunc('{part}', {s})) - date_part('epoch', date_trunc('{part}', {f}))) / {n} AS BIGINT)",
                    s = ts(&second),
                    f = ts(&first)
                )
            } else {
                let (mult, unit) = match part.as_str() {
                    "month" => (12, "month"),
                    "quarter" => (4, "quarter"),
                    "year" => (0, "year"),
                    other => {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            format!(
                                "dbt.datediff: unsupported datepart `{other}`; use second, minute, hour, day, week, month, quarter or year"
                            ),
                        ));
                    }
                };
                let years = format!(
                    "(date_part('year', {}) - date_part('year', {}))",
                    ts(&second),
                    ts(&first)
                );
                if mult == 0 {
                    format!("CAST({years} AS BIGINT)")
                } else {
                    format!(
                        "CAST({years} * {mult} + date_part('{unit}', {}) - date_part('{unit}', {}) AS BIGINT)",
                        ts(&second),
                        ts(&first)
                    )
                }
            }
        }
        "dateadd" => {
            let part = unquote(&a.req(0, "datepart")?);
            let n = a.req(1, "interval")?;
            let from = a.req(2, "from_date_or_timestamp")?;
            let interval = if n.trim().parse::<i64>().is_ok() {
                format!("INTERVAL '{} {part}'", n.trim())
            } else {
                format!("CAST(concat(CAST(({n}) AS VARCHAR), ' {part}') AS INTERVAL)")
            };
            format!("(CAST({from} AS TIMESTAMP) + {interval})")
        }
        "safe_cast" => format!("TRY_CAST({} AS {})", a.req(0, "field")?, a.req(1, "type")?),
        "type_string" => "VARCHAR".into(),
        "type_int" => "INT".into(),
        "type_bigint" => "BIGINT".into(),
        "type_float" => "DOUBLE".into(),
        "type_numeric" => "DECIMAL(28, 6)".into(),
        "type_timestamp" => "TIMESTAMP".into(),
        "type_boolean" => "BOOLEAN".into(),
        "concat" => {
            let fields = a.get(0, "fields").ok_or_else(|| {
                Error::new(ErrorKind::MissingArgument, "dbt.concat() needs `fields`")
            })?;
            let parts: Vec<String> = match fields.try_iter() {
                Ok(it) if fields.as_str().is_none() => it.map(|v| v.to_string()).collect(),
                _ => vec![fields.to_string()],
            };
            format!("concat({})", parts.join(", "))
        }
        "current_timestamp" => "now()".into(),
        "hash" => format!("md5(CAST({} AS VARCHAR))", a.req(0, "field")?),
        "cast_bool_to_text" => format!("CAST({} AS VARCHAR)", a.req(0, "field")?),
        "any_value" => format!("any_value({})", a.req(0, "expression")?),
        "bool_or" => format!("bool_or({})", a.req(0, "expression")?),
        "listagg" => {
            let measure = a.req(0, "measure")?;
            let delim = a
                .get(1, "delimiter_text")
                .map(|v| v.to_string())
                .unwrap_or_else(|| "','".into());
            let order = a
                .get(2, "order_by_clause")
                .filter(|v| !v.is_none() && !v.is_undefined())
                .map(|v| format!(" {v}"))
                .unwrap_or_default();
            match a
                .get(3, "limit_num")
                .filter(|v| !v.is_none() && !v.is_undefined())
            {
                Some(limit) => format!(
                    "array_to_string(array_slice(array_agg({measure}{order}), 1, {limit}), {delim})"
                ),
                None => format!("string_agg({measure}, {delim}{order})"),
            }
        }
        "split_part" => format!(
            "split_part({}, {}, {})",
            a.req(0, "string_text")?,
            a.req(1, "delimiter_text")?,
            a.req(2, "part_number")?
        ),
        "last_day" => {
            let date = a.req(0, "date")?;
            let part = unquote(&a.req(1, "datepart")?);
            format!(
                "CAST(date_trunc('{part}', {date}) + INTERVAL '1 {part}' - INTERVAL '1 day' AS DATE)"
            )
        }
        "escape_single_quotes" => a.req(0, "expression")?.replace('\'', "''"),
        "string_literal" => format!("'{}'", a.req(0, "value")?.replace('\'', "''")),
        "right" => format!(
            "right({}, {})",
            a.req(0, "string_text")?,
            a.req(1, "length_expression")?
        ),
        "length" => format!("length({})", a.req(0, "expression")?),
        "replace" => format!(
            "replace({}, {}, {})",
            a.req(0, "field")?,
            a.req(1, "old_chars")?,
            a.req(2, "new_chars")?
        ),
        "position" => format!(
            "strpos({}, {})",
            a.req(1, "string_text")?,
            a.req(0, "substring_text")?
        ),
        other => {
            return Err(Error::new(
                ErrorKind::UnknownFunction,
                format!("dbt.{other} is not a known cross-database macro"),
            ));
        }
    };
    Ok(out)
}
