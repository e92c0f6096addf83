//! Text cells → typed Arrow columns: type inference over a sample, strict parsing of every
//! value afterwards, and column builders. Shared by the CSV and Excel readers.
//!
//! Inference is deliberately conservative: a column becomes a number only when every
//! sampled value is one, and numbers written with leading zeros (`007`, zip codes) stay
//! text, so nothing is lost by reading. A value past the sample that does not parse as its
//! column's type rejects its row (with the reason) instead of turning into NULL.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Decimal128Type, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// The UTC time zone name used for zoned timestamps.
const UTC: &str = "UTC";

/// The Arrow type of a zoned timestamp.
pub(crate) fn timestamptz() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// The Arrow type of a timestamp without time zone.
pub(crate) fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

/// The narrowest type `s` reads as. `None` for an empty cell.
pub(crate) fn infer_text(s: &str) -> Option<DataType> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if t.eq_ignore_ascii_case("true") || t.eq_ignore_ascii_case("false") {
        return Some(DataType::Boolean);
    }
    let digits = t.strip_prefix('-').unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // Leading zeros carry meaning (codes, zips): keep them as text.
        if digits.len() > 1 && digits.starts_with('0') {
            return Some(DataType::Utf8);
        }
        return Some(if t.parse::<i64>().is_ok() {
            DataType::Int64
        } else {
            DataType::Utf8
        });
    }
    if looks_numeric(t) && t.parse::<f64>().is_ok() {
        return Some(DataType::Float64);
    }
    if t.len() == 10 && parse_date(t).is_some() {
        return Some(DataType::Date32);
    }
    if t.len() >= 16 && t.as_bytes()[4] == b'-' {
        if parse_timestamp(t).is_some() {
            return Some(timestamp());
        }
        if parse_timestamptz(t).is_some() {
            return Some(timestamptz());
        }
    }
    Some(DataType::Utf8)
}

/// Digits with one dot and/or an exponent: `1.5`, `-2e3`. Not `inf`, `NaN` or `1_000`.
fn looks_numeric(t: &str) -> bool {
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    t.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
}

/// The common type of two inferred types (`None`: no value seen yet).
pub(crate) fn merge_types(a: Option<DataType>, b: Option<DataType>) -> Option<DataType> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) if a == b => Some(a),
        (Some(DataType::Int64), Some(DataType::Float64))
        | (Some(DataType::Float64), Some(DataType::Int64)) => Some(DataType::Float64),
        (Some(DataType::Date32), Some(t @ DataType::Timestamp(_, None)))
        | (Some(t @ DataType::Timestamp(_, None)), Some(DataType::Date32)) => Some(t),
        _ => Some(DataType::Utf8),
    }
}

/// Parses a type name of `column_types:` (`text`, `bigint`, `decimal(12,2)`, …).
pub(crate) fn parse_type_name(name: &str) -> Option<DataType> {
    let n = name.trim().to_ascii_lowercase();
    Some(match n.as_str() {
        "text" | "string" | "varchar" | "utf8" => DataType::Utf8,
        "int" | "integer" | "bigint" | "int64" | "long" => DataType::Int64,
        "double" | "float" | "float64" | "real" => DataType::Float64,
        "bool" | "boolean" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp" => timestamp(),
        "timestamptz" => timestamptz(),
        _ => {
            let inner = n
                .strip_prefix("decimal(")
                .or_else(|| n.strip_prefix("numeric("))?
                .strip_suffix(')')?;
            let (p, s) = inner.split_once(',')?;
            let p: u8 = p.trim().parse().ok()?;
            let s: i8 = s.trim().parse().ok()?;
            if p == 0 || p > 38 || s < 0 || s as u8 > p {
                return None;
            }
            DataType::Decimal128(p, s)
        }
    })
}

fn parse_date(t: &str) -> Option<i32> {
    let d = NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?;
    Some((d - NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days() as i32)
}

fn parse_timestamp(t: &str) -> Option<i64> {
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(ts) = NaiveDateTime::parse_from_str(t, f) {
            return Some(ts.and_utc().timestamp_micros());
        }
    }
    None
}

fn parse_timestamptz(t: &str) -> Option<i64> {
    if let Ok(ts) = DateTime::parse_from_rfc3339(t) {
        return Some(ts.timestamp_micros());
    }
    // `2024-01-02 03:04:05+02:00`, `…Z`, `…+0200`.
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(ts) = DateTime::parse_from_str(t, f) {
            return Some(ts.timestamp_micros());
        }
    }
    let z = t.strip_suffix('Z').or_else(|| t.strip_suffix(" UTC"))?;
    parse_timestamp(z)
}

/// One parsed cell.
#[derive(Debug, Clone)]
pub(crate) enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Date(i32),
    Micros(i64),
    Decimal(i128),
    Text(std::borrow::Cow<'a, str>),
}

/// Parses `s` as `ty`; the error says what the value is not.
pub(crate) fn parse_value<'a>(s: &'a str, ty: &DataType) -> Result<Value<'a>, String> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(Value::Null);
    }
    let fail = |what: &str| Err(format!("`{}` is not {what}", truncate(s, 60)));
    match ty {
        DataType::Utf8 => Ok(Value::Text(s.into())),
        DataType::Int64 => match t.parse() {
            Ok(v) => Ok(Value::Int(v)),
            Err(_) => fail("an integer"),
        },
        DataType::Float64 => match t.parse() {
            Ok(v) => Ok(Value::Float(v)),
            Err(_) => fail("a number"),
        },
        DataType::Boolean => {
            if t.eq_ignore_ascii_case("true") {
                Ok(Value::Bool(true))
            } else if t.eq_ignore_ascii_case("false") {
                Ok(Value::Bool(false))
            } else {
                fail("true or false")
            }
        }
        DataType::Date32 => match parse_date(t) {
            Some(d) => Ok(Value::Date(d)),
            None => fail("a date (YYYY-MM-DD)"),
        },
        DataType::Timestamp(_, None) => {
            match parse_timestamp(t).or_else(|| parse_date(t).map(|d| d as i64 * 86_400_000_000)) {
                Some(v) => Ok(Value::Micros(v)),
                None => fail("a timestamp (YYYY-MM-DD HH:MM:SS)"),
            }
        }
        DataType::Timestamp(_, Some(_)) => match parse_timestamptz(t) {
            Some(v) => Ok(Value::Micros(v)),
            None => fail("a timestamp with a time zone (2024-01-31T12:00:00Z)"),
        },
        DataType::Decimal128(p, sc) => {
            match arrow::compute::kernels::cast_utils::parse_decimal::<Decimal128Type>(t, *p, *sc) {
                Ok(v) => Ok(Value::Decimal(v)),
                Err(_) => fail(&format!("a decimal({p},{sc})")),
            }
        }
        other => fail(&format!("of the supported type {other}")),
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// A builder for one of the column types the readers produce.
pub(crate) enum Builder {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Date(Date32Builder),
    Micros(TimestampMicrosecondBuilder, Option<Arc<str>>),
    Decimal(Decimal128Builder, u8, i8),
    Text(StringBuilder),
}

impl Builder {
    pub(crate) fn new(ty: &DataType, capacity: usize) -> Self {
        match ty {
            DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            DataType::Int64 => Builder::Int(Int64Builder::with_capacity(capacity)),
            DataType::Float64 => Builder::Float(Float64Builder::with_capacity(capacity)),
            DataType::Date32 => Builder::Date(Date32Builder::with_capacity(capacity)),
            DataType::Timestamp(_, tz) => Builder::Micros(
                TimestampMicrosecondBuilder::with_capacity(capacity),
                tz.clone(),
            ),
            DataType::Decimal128(p, s) => {
                Builder::Decimal(Decimal128Builder::with_capacity(capacity), *p, *s)
            }
            _ => Builder::Text(StringBuilder::with_capacity(capacity, capacity * 8)),
        }
    }

    /// Appends a value parsed for this builder's type.
    pub(crate) fn append(&mut self, v: &Value<'_>) {
        match (self, v) {
            (Builder::Bool(b), Value::Bool(x)) => b.append_value(*x),
            (Builder::Int(b), Value::Int(x)) => b.append_value(*x),
            (Builder::Float(b), Value::Float(x)) => b.append_value(*x),
            (Builder::Date(b), Value::Date(x)) => b.append_value(*x),
            (Builder::Micros(b, _), Value::Micros(x)) => b.append_value(*x),
            (Builder::Decimal(b, _, _), Value::Decimal(x)) => b.append_value(*x),
            (Builder::Text(b), Value::Text(x)) => b.append_value(x),
            (b, _) => b.append_null(),
        }
    }

    pub(crate) fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::Int(b) => b.append_null(),
            Builder::Float(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Micros(b, _) => b.append_null(),
            Builder::Decimal(b, _, _) => b.append_null(),
            Builder::Text(b) => b.append_null(),
        }
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Micros(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
            Builder::Decimal(b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .expect("precision and scale were validated"),
            ),
            Builder::Text(b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_keeps_what_would_be_lost_as_text() {
        assert_eq!(infer_text("42"), Some(DataType::Int64));
        assert_eq!(infer_text("-42"), Some(DataType::Int64));
        assert_eq!(infer_text("0"), Some(DataType::Int64));
        assert_eq!(infer_text("007"), Some(DataType::Utf8));
        assert_eq!(infer_text("99999999999999999999"), Some(DataType::Utf8));
        assert_eq!(infer_text("1.5"), Some(DataType::Float64));
        assert_eq!(infer_text("1e3"), Some(DataType::Float64));
        assert_eq!(infer_text("NaN"), Some(DataType::Utf8));
        assert_eq!(infer_text("TRUE"), Some(DataType::Boolean));
        assert_eq!(infer_text("2024-02-29"), Some(DataType::Date32));
        assert_eq!(infer_text("2024-02-30"), Some(DataType::Utf8));
        assert_eq!(infer_text("2024-02-29 10:11:12"), Some(timestamp()));
        assert_eq!(infer_text("2024-02-29T10:11:12.5Z"), Some(timestamptz()));
        assert_eq!(infer_text("2024-02-29 10:11:12+02:00"), Some(timestamptz()));
        assert_eq!(infer_text("  "), None);
    }

    #[test]
    fn types_merge_to_the_common_one() {
        use DataType::*;
        assert_eq!(merge_types(Some(Int64), Some(Float64)), Some(Float64));
        assert_eq!(merge_types(None, Some(Int64)), Some(Int64));
        assert_eq!(
            merge_types(Some(Date32), Some(timestamp())),
            Some(timestamp())
        );
        assert_eq!(merge_types(Some(Int64), Some(Boolean)), Some(Utf8));
        assert_eq!(
            merge_types(Some(timestamptz()), Some(timestamp())),
            Some(Utf8)
        );
    }

    #[test]
    fn values_parse_strictly() {
        assert!(matches!(
            parse_value("12", &DataType::Int64),
            Ok(Value::Int(12))
        ));
        let e = parse_value("12x", &DataType::Int64).unwrap_err();
        assert_eq!(e, "`12x` is not an integer");
        assert!(matches!(
            parse_value("12.345", &DataType::Decimal128(10, 2)),
            Ok(Value::Decimal(1235)) | Ok(Value::Decimal(1234))
        ));
        assert!(parse_value("abc", &DataType::Decimal128(10, 2)).is_err());
        assert!(matches!(parse_value("", &DataType::Int64), Ok(Value::Null)));
        assert!(matches!(
            parse_value("1970-01-02", &timestamp()),
            Ok(Value::Micros(86_400_000_000))
        ));
        assert_eq!(
            parse_type_name("decimal(12, 2)"),
            Some(DataType::Decimal128(12, 2))
        );
        assert_eq!(parse_type_name("decimal(2, 3)"), None);
        assert_eq!(parse_type_name("TEXT"), Some(DataType::Utf8));
    }
}
