//! The PostgreSQL → Arrow type mapping.
//!
//! | PostgreSQL | Arrow |
//! |---|---|
//! | `boolean` | Boolean |
//! | `smallint`, `integer`, `bigint` | Int16, Int32, Int64 |
//! | `real`, `double precision` | Float32, Float64 |
//! | `numeric(p, s)`, p ≤ 38 | Decimal128(p, s) — exact |
//! | `numeric` without precision, or p > 38 | Utf8 (the exact digits as text) |
//! | `text`, `varchar(n)`, `char(n)`, `name`, `citext`, enums | Utf8 |
//! | `date` | Date32 |
//! | `timestamp` | Timestamp(µs) |
//! | `timestamptz` | Timestamp(µs, UTC) |
//! | `time`, `interval` | Utf8, read as `col::text` (Delta has no time-of-day or interval type) |
//! | `uuid` | Utf8 (canonical form) |
//! | `json`, `jsonb` | Utf8 (the JSON text) |
//! | `bytea` | Binary |
//! | one-dimensional arrays of the types above | List |
//! | anything else (`money`, `inet`, `timetz`, ranges, geometry, `xml`, multi-dimensional arrays…) | Utf8, read as `col::text` |
//!
//! Nothing is narrowed: a value that does not fit its Arrow type (a `numeric` with more
//! digits than its declared scale, `'infinity'` dates) is an error naming the column.

use arrow::datatypes::{DataType, TimeUnit};

/// A PostgreSQL type Strata decodes natively from binary COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    /// boolean
    Bool,
    /// smallint
    Int2,
    /// integer
    Int4,
    /// bigint
    Int8,
    /// real
    Float4,
    /// double precision
    Float8,
    /// numeric(p, s)
    Numeric {
        /// Total digits.
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
    /// text-like (also the fallback: the column is selected as `::text`)
    Text,
    /// json
    Json,
    /// jsonb
    Jsonb,
    /// uuid
    Uuid,
    /// bytea
    Bytea,
    /// date
    Date,
    /// timestamp without time zone
    Timestamp,
    /// timestamp with time zone
    TimestampTz,
    /// one-dimensional array
    Array(Box<PgType>),
}

impl PgType {
    /// The Arrow type values are decoded into.
    pub fn arrow_type(&self) -> DataType {
        match self {
            PgType::Bool => DataType::Boolean,
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 => DataType::Int64,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            PgType::Text | PgType::Json | PgType::Jsonb | PgType::Uuid => DataType::Utf8,
            PgType::Bytea => DataType::Binary,
            PgType::Date => DataType::Date32,
            PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgType::Array(inner) => DataType::new_list(inner.arrow_type(), true),
        }
    }
}

/// A column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    /// Its name.
    pub name: String,
    /// `pg_type.oid`.
    pub type_oid: u32,
    /// `pg_attribute.atttypmod` (-1 when none).
    pub typmod: i32,
    /// `pg_type.typtype` (`b` base, `e` enum, `d` domain, …).
    pub typtype: String,
    /// For arrays: the element type's oid (0 otherwise).
    pub elem_oid: u32,
    /// `format_type(…)`, for messages and docs.
    pub type_name: String,
    /// Whether NULLs are allowed.
    pub nullable: bool,
    /// The column's comment.
    pub comment: Option<String>,
}

/// How one column is read: its decoded type and whether it is selected as `::text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPlan {
    /// Decoded type.
    pub pg: PgType,
    /// Selected as text (the documented fallback).
    pub as_text: bool,
}

fn scalar(oid: u32, typmod: i32) -> Option<PgType> {
    Some(match oid {
        16 => PgType::Bool,
        21 => PgType::Int2,
        23 => PgType::Int4,
        20 => PgType::Int8,
        26 => PgType::Int8, // oid: unsigned 32-bit, widened
        700 => PgType::Float4,
        701 => PgType::Float8,
        1700 => {
            if typmod < 4 {
                return None; // unconstrained numeric: exact text
            }
            let t = typmod - 4;
            let precision = ((t >> 16) & 0xffff) as u8;
            let scale = (t & 0xffff) as i16;
            if precision == 0 || precision > 38 || !(0..=38).contains(&scale) {
                return None;
            }
            PgType::Numeric {
                precision,
                scale: scale as i8,
            }
        }
        25 | 1043 | 1042 | 19 | 18 => PgType::Text,
        114 => PgType::Json,
        3802 => PgType::Jsonb,
        2950 => PgType::Uuid,
        17 => PgType::Bytea,
        1082 => PgType::Date,
        1114 => PgType::Timestamp,
        1184 => PgType::TimestampTz,
        _ => return None,
    })
}

/// Decides how a column is read.
pub fn plan_column(c: &PgColumn) -> ColumnPlan {
    if c.typtype == "e" {
        // Enums travel as their label.
        return ColumnPlan {
            pg: PgType::Text,
            as_text: false,
        };
    }
    if let Some(t) = scalar(c.type_oid, c.typmod) {
        return ColumnPlan {
            pg: t,
            as_text: false,
        };
    }
    if c.elem_oid != 0
        && c.typtype == "b"
        && let Some(inner) = scalar(c.elem_oid, c.typmod)
        && !matches!(inner, PgType::Numeric { .. })
    {
        return ColumnPlan {
            pg: PgType::Array(Box::new(inner)),
            as_text: false,
        };
    }
    ColumnPlan {
        pg: PgType::Text,
        as_text: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(oid: u32, typmod: i32, typtype: &str, elem: u32) -> PgColumn {
        PgColumn {
            name: "c".into(),
            type_oid: oid,
            typmod,
            typtype: typtype.into(),
            elem_oid: elem,
            type_name: String::new(),
            nullable: true,
            comment: None,
        }
    }

    #[test]
    fn numeric_precision_comes_from_typmod() {
        // numeric(12, 2): typmod = (12 << 16 | 2) + 4
        let p = plan_column(&col(1700, (12 << 16 | 2) + 4, "b", 0));
        assert_eq!(
            p.pg,
            PgType::Numeric {
                precision: 12,
                scale: 2
            }
        );
        assert!(!p.as_text);
        let unconstrained = plan_column(&col(1700, -1, "b", 0));
        assert!(unconstrained.as_text);
        let too_wide = plan_column(&col(1700, (50 << 16 | 2) + 4, "b", 0));
        assert!(too_wide.as_text);
    }

    #[test]
    fn arrays_enums_and_fallbacks() {
        assert_eq!(
            plan_column(&col(1007, -1, "b", 23)).pg,
            PgType::Array(Box::new(PgType::Int4))
        );
        assert_eq!(plan_column(&col(99999, -1, "e", 0)).pg, PgType::Text);
        let money = plan_column(&col(790, -1, "b", 0));
        assert!(money.as_text);
    }
}
