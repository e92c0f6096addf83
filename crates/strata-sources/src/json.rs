//! JSON records (objects) to Arrow: schema inference and conversion, shared by the
//! connectors that read JSON (REST APIs, NDJSON files).
//!
//! **Flattening.** Nested objects become columns named `parent__child` (at any depth);
//! arrays are kept whole as JSON text. An empty object adds no column.
//!
//! **Types.** Each column's type is inferred from the values seen:
//!
//! | JSON values seen | Arrow |
//! |---|---|
//! | `true` / `false` | Boolean |
//! | integers fitting 64 bits | Int64 |
//! | numbers with a fraction or exponent (integers mixed in widen to it) | Float64 |
//! | strings (ISO-8601 timestamps included: they stay text) | Utf8 |
//! | arrays, integers past 64 bits, or a mix of kinds (say strings and numbers) | Utf8, the JSON text of the value |
//!
//! `null` fits every column; a field that is `null` in every record seen gets no column until
//! a value appears. Every column is nullable. Columns keep the order in which fields first
//! appear (within one record, fields come in name order).
//!
//! **Stable schema.** The schema is inferred once, from a first sample, optionally widened
//! from a schema known before ([`widen_schema`]); it is then fixed. [`to_batch`] converts a
//! value that fits its column (an integer into a Float64 column, anything into a Utf8
//! column as JSON text) and hands a record that does not fit (a field the schema lacks, a
//! string in an Int64 column, a record that is not an object) to its `on_bad` callback
//! instead of guessing.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, RecordBatchOptions,
    StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use serde_json::{Map, Value};

/// Separator of flattened nested field names (`address__city`).
pub const NESTED_SEPARATOR: &str = "__";

/// The kind of a column, as inferred from JSON values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    Text,
}

impl Kind {
    fn of(v: &Value) -> Option<Kind> {
        match v {
            Value::Null => None,
            Value::Bool(_) => Some(Kind::Bool),
            Value::Number(n) if n.is_i64() => Some(Kind::Int),
            Value::Number(n) if n.is_f64() => Some(Kind::Float),
            // Unsigned past i64::MAX: kept exact, as text.
            Value::Number(_) => Some(Kind::Text),
            Value::String(_) | Value::Array(_) | Value::Object(_) => Some(Kind::Text),
        }
    }

    fn merge(a: Kind, b: Kind) -> Kind {
        match (a, b) {
            (a, b) if a == b => a,
            (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
            _ => Kind::Text,
        }
    }

    fn from_type(t: &DataType) -> Kind {
        match t {
            DataType::Boolean => Kind::Bool,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => Kind::Int,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => Kind::Float,
            _ => Kind::Text,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Text => DataType::Utf8,
        }
    }
}

/// Flattens one record into `(column, value)` pairs: nested objects become
/// `parent__child` names, every other value (arrays included) is kept as is.
pub fn flatten(record: &Map<String, Value>) -> Vec<(String, &Value)> {
    let mut out = Vec::with_capacity(record.len());
    flatten_into("", record, &mut out);
    out
}

fn flatten_into<'a>(prefix: &str, obj: &'a Map<String, Value>, out: &mut Vec<(String, &'a Value)>) {
    for (k, v) in obj {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}{NESTED_SEPARATOR}{k}")
        };
        match v {
            Value::Object(inner) => flatten_into(&name, inner, out),
            other => out.push((name, other)),
        }
    }
}

/// Infers the schema of `records` (see the module docs). Records that are not objects
/// are skipped: [`to_batch`] rejects them.
pub fn infer_schema(records: &[Value]) -> SchemaRef {
    widen_schema(None, records)
}

/// Infers the schema of `records` starting from `base`: `base`'s columns come first and
/// keep their type unless a value needs a wider one (Int64 → Float64, anything → Utf8);
/// new fields are appended.
pub fn widen_schema(base: Option<&Schema>, records: &[Value]) -> SchemaRef {
    let mut order: Vec<String> = Vec::new();
    let mut kinds: HashMap<String, Kind> = HashMap::new();
    if let Some(base) = base {
        for f in base.fields() {
            order.push(f.name().clone());
            kinds.insert(f.name().clone(), Kind::from_type(f.data_type()));
        }
    }
    for r in records {
        let Value::Object(obj) = r else { continue };
        for (name, v) in flatten(obj) {
            let Some(k) = Kind::of(v) else { continue };
            match kinds.get_mut(&name) {
                Some(cur) => *cur = Kind::merge(*cur, k),
                None => {
                    order.push(name.clone());
                    kinds.insert(name, k);
                }
            }
        }
    }
    let fields: Vec<Field> = order
        .into_iter()
        .map(|n| {
            let t = kinds[&n].data_type();
            Field::new(n, t, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A schema as JSON, `[{"name": …, "type": "int64"}, …]`, for a connector to keep in its
/// saved state and widen from on its next read.
pub fn schema_to_state(schema: &Schema) -> Value {
    Value::Array(
        schema
            .fields()
            .iter()
            .map(|f| {
                let t = match Kind::from_type(f.data_type()) {
                    Kind::Bool => "bool",
                    Kind::Int => "int64",
                    Kind::Float => "float64",
                    Kind::Text => "utf8",
                };
                serde_json::json!({"name": f.name(), "type": t})
            })
            .collect(),
    )
}

/// Reads back a schema written by [`schema_to_state`]; `None` when `state` is not one.
pub fn schema_from_state(state: &Value) -> Option<Schema> {
    let mut fields = Vec::new();
    for f in state.as_array()? {
        let name = f.get("name")?.as_str()?;
        let kind = match f.get("type")?.as_str()? {
            "bool" => Kind::Bool,
            "int64" => Kind::Int,
            "float64" => Kind::Float,
            "utf8" => Kind::Text,
            _ => return None,
        };
        fields.push(Field::new(name, kind.data_type(), true));
    }
    Some(Schema::new(fields))
}

enum Col {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
}

enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Col {
    fn new(kind: Kind, capacity: usize) -> Col {
        match kind {
            Kind::Bool => Col::Bool(BooleanBuilder::with_capacity(capacity)),
            Kind::Int => Col::Int(Int64Builder::with_capacity(capacity)),
            Kind::Float => Col::Float(Float64Builder::with_capacity(capacity)),
            Kind::Text => Col::Text(StringBuilder::with_capacity(capacity, capacity * 16)),
        }
    }

    fn append(&mut self, cell: Cell) {
        match (self, cell) {
            (Col::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Col::Int(b), Cell::Int(v)) => b.append_value(v),
            (Col::Float(b), Cell::Float(v)) => b.append_value(v),
            (Col::Text(b), Cell::Text(v)) => b.append_value(v),
            (Col::Bool(b), _) => b.append_null(),
            (Col::Int(b), _) => b.append_null(),
            (Col::Float(b), _) => b.append_null(),
            (Col::Text(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Int(b) => Arc::new(b.finish()),
            Col::Float(b) => Arc::new(b.finish()),
            Col::Text(b) => Arc::new(b.finish()),
        }
    }
}

fn json_kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn cell(kind: Kind, v: &Value) -> Option<Cell> {
    Some(match (kind, v) {
        (_, Value::Null) => Cell::Null,
        (Kind::Bool, Value::Bool(b)) => Cell::Bool(*b),
        (Kind::Int, Value::Number(n)) => Cell::Int(n.as_i64()?),
        (Kind::Float, Value::Number(n)) => Cell::Float(n.as_f64()?),
        (Kind::Text, Value::String(s)) => Cell::Text(s.clone()),
        (Kind::Text, other) => Cell::Text(other.to_string()),
        _ => return None,
    })
}

/// Converts `records` into one batch of `schema` (see the module docs). A record that
/// does not fit is left out and passed to `on_bad(index in records, reason)`. Flattened
/// fields for which `ignored(name)` is true (columns deselected by the user) are dropped
/// without complaint.
pub fn to_batch(
    schema: &SchemaRef,
    records: &[Value],
    ignored: impl Fn(&str) -> bool,
    mut on_bad: impl FnMut(usize, String),
) -> Result<RecordBatch, ArrowError> {
    let kinds: Vec<Kind> = schema
        .fields()
        .iter()
        .map(|f| Kind::from_type(f.data_type()))
        .collect();
    let index: HashMap<&str, usize> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name().as_str(), i))
        .collect();
    let mut cols: Vec<Col> = kinds.iter().map(|k| Col::new(*k, records.len())).collect();
    let mut rows = 0usize;
    let mut cells: Vec<Option<Cell>> = Vec::with_capacity(kinds.len());
    'records: for (i, r) in records.iter().enumerate() {
        let Value::Object(obj) = r else {
            on_bad(
                i,
                format!("the record is {}, not a JSON object", json_kind_name(r)),
            );
            continue;
        };
        cells.clear();
        cells.resize_with(kinds.len(), || None);
        for (name, v) in flatten(obj) {
            match index.get(name.as_str()) {
                Some(&c) => match cell(kinds[c], v) {
                    Some(x) => cells[c] = Some(x),
                    None => {
                        on_bad(
                            i,
                            format!(
                                "field `{name}` is {}, but its column is {}",
                                json_kind_name(v),
                                schema.field(c).data_type()
                            ),
                        );
                        continue 'records;
                    }
                },
                None if v.is_null() || ignored(&name) => {}
                None => {
                    on_bad(
                        i,
                        format!(
                            "field `{name}` is not among the columns inferred at the start of this read; the next load adds it"
                        ),
                    );
                    continue 'records;
                }
            }
        }
        for (c, x) in cols.iter_mut().zip(cells.drain(..)) {
            c.append(x.unwrap_or(Cell::Null));
        }
        rows += 1;
    }
    let arrays: Vec<ArrayRef> = cols.iter_mut().map(Col::finish).collect();
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn show(b: &RecordBatch) -> Vec<String> {
        let opts = arrow::util::display::FormatOptions::default().with_null("NULL");
        let f: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        (0..b.num_rows())
            .map(|r| {
                f.iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    }

    #[test]
    fn infers_flattens_and_widens() {
        let recs = vec![
            json!({"id": 1, "price": 2, "ok": true, "addr": {"city": "Oslo", "geo": {"lat": 1.5}}, "tags": ["a"], "mixed": 1, "gone": null}),
            json!({"id": 2, "price": 2.5, "ok": null, "addr": {"city": null}, "tags": [], "mixed": "x", "big": 18446744073709551615u64}),
        ];
        let s = infer_schema(&recs);
        let got: Vec<String> = s
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        assert_eq!(
            got,
            [
                "addr__city:Utf8",
                "addr__geo__lat:Float64",
                "id:Int64",
                "mixed:Utf8",
                "ok:Boolean",
                "price:Float64",
                "tags:Utf8",
                "big:Utf8"
            ]
        );
        let mut bad = Vec::new();
        let b = to_batch(&s, &recs, |_| false, |i, r| bad.push((i, r))).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(
            show(&b),
            [
                "Oslo|1.5|1|1|true|2.0|[\"a\"]|NULL",
                "NULL|NULL|2|x|NULL|2.5|[]|18446744073709551615"
            ]
        );
    }

    #[test]
    fn records_that_do_not_fit_are_reported() {
        let s = infer_schema(&[json!({"id": 1, "name": "a"})]);
        let recs = vec![
            json!({"id": 2, "name": 5}),
            json!("oops"),
            json!({"id": "x"}),
            json!({"id": 3, "extra": 1, "skip": {"me": 1}}),
            json!({"id": 4, "skip": {"me": 2}}),
        ];
        let mut bad = Vec::new();
        let b = to_batch(
            &s,
            &recs,
            |n| n.starts_with("skip"),
            |i, r| bad.push((i, r)),
        )
        .unwrap();
        assert_eq!(show(&b), ["2|5", "4|NULL"]);
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert_eq!(bad[0].0, 1);
        assert!(bad[0].1.contains("a string, not a JSON object"), "{bad:?}");
        assert!(
            bad[1]
                .1
                .contains("`id` is a string, but its column is Int64"),
            "{bad:?}"
        );
        assert!(
            bad[2].1.contains("`extra` is not among the columns"),
            "{bad:?}"
        );
    }

    #[test]
    fn saved_schema_round_trips_and_widens() {
        let s = infer_schema(&[json!({"a": 1.5, "b": true, "c": "x", "d": 1})]);
        let back = schema_from_state(&schema_to_state(&s)).unwrap();
        assert_eq!(&back, s.as_ref());
        let w = widen_schema(Some(&back), &[json!({"e": 1, "a": 2, "d": 2.5})]);
        let got: Vec<String> = w
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        assert_eq!(
            got,
            ["a:Float64", "b:Boolean", "c:Utf8", "d:Float64", "e:Int64"]
        );
    }
}
