//! Decoder of PostgreSQL's binary `COPY … TO STDOUT (FORMAT binary)` stream into Arrow.
//!
//! The stream is: an 11-byte signature, flags, a header extension, then tuples (`i16`
//! field count, then per field an `i32` length — `-1` for NULL — and the value in the
//! type's binary send format), then `-1` as the trailer. Values arrive in chunks that cut
//! tuples anywhere; the decoder keeps the unfinished tail and emits a `RecordBatch` every
//! `batch_size` rows, so memory stays bounded whatever the table's size.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListArray, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, SchemaRef};

use super::types::PgType;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// A value or stream that cannot be decoded; names the column.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

type Result<T> = std::result::Result<T, DecodeError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(DecodeError(msg.into()))
}

/// Streams binary COPY bytes into record batches.
pub struct CopyDecoder {
    schema: SchemaRef,
    columns: Vec<Column>,
    names: Vec<String>,
    /// Field boundaries of the tuple being decoded (reused: no allocation per row).
    fields: Vec<Option<(usize, usize)>>,
    buf: Vec<u8>,
    pos: usize,
    header_done: bool,
    finished: bool,
    rows: usize,
    batch_size: usize,
}

impl CopyDecoder {
    /// A decoder for columns of the given PostgreSQL types, named as in `schema`.
    pub fn new(schema: SchemaRef, types: &[PgType], batch_size: usize) -> Self {
        assert_eq!(schema.fields().len(), types.len(), "one type per column");
        Self {
            columns: types.iter().map(Column::new).collect(),
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            fields: Vec::with_capacity(types.len()),
            schema,
            buf: Vec::new(),
            pos: 0,
            header_done: false,
            finished: false,
            rows: 0,
            batch_size: batch_size.max(1),
        }
    }

    /// Rows decoded and not yet emitted.
    pub fn pending_rows(&self) -> usize {
        self.rows
    }

    /// Feeds a chunk; returns the batches completed by it.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>> {
        if self.pos > 0 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        if !self.header_done {
            let rest = &self.buf[self.pos..];
            if rest.len() < SIGNATURE.len() + 8 {
                return Ok(out);
            }
            if &rest[..SIGNATURE.len()] != SIGNATURE {
                return err("the server did not send a binary COPY stream");
            }
            let ext = u32::from_be_bytes(rest[15..19].try_into().expect("4 bytes")) as usize;
            if rest.len() < 19 + ext {
                return Ok(out);
            }
            self.pos += 19 + ext;
            self.header_done = true;
        }
        while !self.finished {
            match self.decode_tuple()? {
                Some(()) => {
                    self.rows += 1;
                    if self.rows >= self.batch_size {
                        out.push(self.flush()?);
                    }
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Ends the stream: returns the last partial batch, if any.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>> {
        if !self.finished && self.header_done {
            return err("the COPY stream ended before its trailer: the read was cut short");
        }
        if self.rows == 0 {
            return Ok(None);
        }
        self.flush().map(Some)
    }

    fn flush(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        self.rows = 0;
        RecordBatch::try_new(Arc::clone(&self.schema), arrays)
            .map_err(|e| DecodeError(format!("building a batch: {e}")))
    }

    /// Decodes one tuple if the buffer holds it whole. Values are appended only once the
    /// whole tuple is known to be present, so a cut never leaves a half row.
    fn decode_tuple(&mut self) -> Result<Option<()>> {
        let buf = &self.buf[self.pos..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let count = i16::from_be_bytes([buf[0], buf[1]]);
        if count == -1 {
            self.finished = true;
            self.pos += 2;
            return Ok(None);
        }
        if count as usize != self.columns.len() {
            return err(format!(
                "the COPY stream has {count} columns per row, expected {}",
                self.columns.len()
            ));
        }
        // First pass: find the field boundaries.
        let fields = &mut self.fields;
        fields.clear();
        let mut at = 2;
        for _ in 0..count {
            if buf.len() < at + 4 {
                return Ok(None);
            }
            let len = i32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
            at += 4;
            if len < 0 {
                fields.push(None);
            } else {
                let len = len as usize;
                if buf.len() < at + len {
                    return Ok(None);
                }
                fields.push(Some((at, len)));
                at += len;
            }
        }
        // Second pass: append.
        for (i, f) in fields.iter().enumerate() {
            let value = f.map(|(s, l)| &buf[s..s + l]);
            self.columns[i]
                .append(value)
                .map_err(|e| DecodeError(format!("column `{}`: {}", self.names[i], e.0)))?;
        }
        self.pos += at;
        Ok(Some(()))
    }
}

fn be_i16(v: &[u8]) -> Result<i16> {
    v.try_into()
        .map(i16::from_be_bytes)
        .or_else(|_| err(format!("expected 2 bytes, got {}", v.len())))
}
fn be_i32(v: &[u8]) -> Result<i32> {
    v.try_into()
        .map(i32::from_be_bytes)
        .or_else(|_| err(format!("expected 4 bytes, got {}", v.len())))
}
fn be_i64(v: &[u8]) -> Result<i64> {
    v.try_into()
        .map(i64::from_be_bytes)
        .or_else(|_| err(format!("expected 8 bytes, got {}", v.len())))
}

/// Converts PostgreSQL's binary `numeric` to an integer scaled by 10^`scale`.
pub(crate) fn numeric_to_i128(v: &[u8], scale: i8) -> Result<i128> {
    if v.len() < 8 {
        return err("truncated numeric");
    }
    let ndigits = be_i16(&v[0..2])? as usize;
    let weight = be_i16(&v[2..4])? as i32;
    let sign = u16::from_be_bytes([v[4], v[5]]);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return err("NaN cannot be stored in a decimal column"),
        0xD000 | 0xF000 => return err("Infinity cannot be stored in a decimal column"),
        other => return err(format!("invalid numeric sign {other:#x}")),
    }
    if v.len() < 8 + 2 * ndigits {
        return err("truncated numeric");
    }
    let mut acc: i128 = 0;
    for i in 0..ndigits {
        let d = be_i16(&v[8 + 2 * i..10 + 2 * i])? as i128;
        acc = acc
            .checked_mul(10_000)
            .and_then(|a| a.checked_add(d))
            .ok_or_else(|| DecodeError("numeric value too large for a decimal".into()))?;
    }
    // acc × 10^(4·(weight − ndigits + 1)) is the value; we want value × 10^scale.
    let exp = 4 * (weight - ndigits as i32 + 1) + scale as i32;
    let scaled = if ndigits == 0 {
        0
    } else if exp >= 0 {
        10i128
            .checked_pow(exp as u32)
            .and_then(|p| acc.checked_mul(p))
            .ok_or_else(|| DecodeError("numeric value too large for its decimal type".into()))?
    } else {
        let p = 10i128
            .checked_pow((-exp) as u32)
            .ok_or_else(|| DecodeError("numeric scale out of range".into()))?;
        if acc % p != 0 {
            return err(format!(
                "numeric value has more than {scale} decimal digits; it would lose precision"
            ));
        }
        acc / p
    };
    Ok(if sign == 0x4000 { -scaled } else { scaled })
}

fn uuid_string(v: &[u8]) -> Result<String> {
    if v.len() != 16 {
        return err("uuid must be 16 bytes");
    }
    let h: String = v.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn utf8(v: &[u8]) -> Result<&str> {
    std::str::from_utf8(v).or_else(|_| err("text is not valid UTF-8"))
}

/// One output column.
enum Column {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder, i8),
    Text(StringBuilder),
    Json(StringBuilder, bool),
    Uuid(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    List {
        item: Box<Column>,
        item_field: Arc<Field>,
        offsets: Vec<i32>,
        valid: Vec<bool>,
    },
}

impl Column {
    fn new(t: &PgType) -> Self {
        match t {
            PgType::Bool => Column::Bool(BooleanBuilder::new()),
            PgType::Int2 => Column::Int16(Int16Builder::new()),
            PgType::Int4 => Column::Int32(Int32Builder::new()),
            PgType::Int8 => Column::Int64(Int64Builder::new()),
            PgType::Float4 => Column::Float32(Float32Builder::new()),
            PgType::Float8 => Column::Float64(Float64Builder::new()),
            PgType::Numeric { precision, scale } => Column::Decimal(
                Decimal128Builder::new().with_data_type(DataType::Decimal128(*precision, *scale)),
                *scale,
            ),
            PgType::Text => Column::Text(StringBuilder::new()),
            PgType::Json => Column::Json(StringBuilder::new(), false),
            PgType::Jsonb => Column::Json(StringBuilder::new(), true),
            PgType::Uuid => Column::Uuid(StringBuilder::new()),
            PgType::Bytea => Column::Binary(BinaryBuilder::new()),
            PgType::Date => Column::Date(Date32Builder::new()),
            PgType::Timestamp => Column::Timestamp(TimestampMicrosecondBuilder::new()),
            PgType::TimestampTz => {
                Column::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            PgType::Array(inner) => Column::List {
                item: Box::new(Column::new(inner)),
                item_field: Arc::new(Field::new("item", inner.arrow_type(), true)),
                offsets: vec![0],
                valid: Vec::new(),
            },
        }
    }

    fn append(&mut self, v: Option<&[u8]>) -> Result<()> {
        let Some(v) = v else {
            self.append_null();
            return Ok(());
        };
        match self {
            Column::Bool(b) => b.append_value(v.first().copied().unwrap_or(0) != 0),
            Column::Int16(b) => b.append_value(be_i16(v)?),
            Column::Int32(b) => b.append_value(be_i32(v)?),
            Column::Int64(b) => b.append_value(be_i64(v)?),
            Column::Float32(b) => b.append_value(f32::from_bits(be_i32(v)? as u32)),
            Column::Float64(b) => b.append_value(f64::from_bits(be_i64(v)? as u64)),
            Column::Decimal(b, scale) => b.append_value(numeric_to_i128(v, *scale)?),
            Column::Text(b) => b.append_value(utf8(v)?),
            Column::Json(b, jsonb) => {
                let text = if *jsonb {
                    match v.split_first() {
                        Some((1, rest)) => rest,
                        _ => return err("unsupported jsonb version"),
                    }
                } else {
                    v
                };
                b.append_value(utf8(text)?)
            }
            Column::Uuid(b) => b.append_value(uuid_string(v)?),
            Column::Binary(b) => b.append_value(v),
            Column::Date(b) => {
                let d = be_i32(v)?;
                if d == i32::MAX || d == i32::MIN {
                    return err(
                        "date 'infinity' cannot be stored; filter it out or cast it in a query stream",
                    );
                }
                b.append_value(d + PG_EPOCH_DAYS)
            }
            Column::Timestamp(b) => {
                let t = be_i64(v)?;
                if t == i64::MAX || t == i64::MIN {
                    return err(
                        "timestamp 'infinity' cannot be stored; filter it out or cast it in a query stream",
                    );
                }
                b.append_value(t + PG_EPOCH_MICROS)
            }
            Column::List {
                item,
                offsets,
                valid,
                ..
            } => {
                let n = append_array(item, v)?;
                let last = *offsets.last().expect("offsets start with 0");
                offsets.push(last + n as i32);
                valid.push(true);
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Column::Bool(b) => b.append_null(),
            Column::Int16(b) => b.append_null(),
            Column::Int32(b) => b.append_null(),
            Column::Int64(b) => b.append_null(),
            Column::Float32(b) => b.append_null(),
            Column::Float64(b) => b.append_null(),
            Column::Decimal(b, _) => b.append_null(),
            Column::Text(b) | Column::Json(b, _) | Column::Uuid(b) => b.append_null(),
            Column::Binary(b) => b.append_null(),
            Column::Date(b) => b.append_null(),
            Column::Timestamp(b) => b.append_null(),
            Column::List { offsets, valid, .. } => {
                let last = *offsets.last().expect("offsets start with 0");
                offsets.push(last);
                valid.push(false);
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Int16(b) => Arc::new(b.finish()),
            Column::Int32(b) => Arc::new(b.finish()),
            Column::Int64(b) => Arc::new(b.finish()),
            Column::Float32(b) => Arc::new(b.finish()),
            Column::Float64(b) => Arc::new(b.finish()),
            Column::Decimal(b, _) => Arc::new(b.finish()),
            Column::Text(b) | Column::Json(b, _) | Column::Uuid(b) => Arc::new(b.finish()),
            Column::Binary(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Timestamp(b) => Arc::new(b.finish()),
            Column::List {
                item,
                item_field,
                offsets,
                valid,
            } => {
                let values = item.finish();
                let offs = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                let nulls = NullBuffer::from(std::mem::take(valid));
                Arc::new(ListArray::new(
                    Arc::clone(item_field),
                    offs,
                    values,
                    Some(nulls),
                ))
            }
        }
    }
}

/// Appends the elements of a one-dimensional binary array; returns how many.
fn append_array(item: &mut Column, v: &[u8]) -> Result<usize> {
    if v.len() < 12 {
        return err("truncated array");
    }
    let ndim = be_i32(&v[0..4])?;
    if ndim == 0 {
        return Ok(0);
    }
    if ndim != 1 {
        return err(format!(
            "{ndim}-dimensional arrays are not mapped; select the column cast to text or json"
        ));
    }
    if v.len() < 20 {
        return err("truncated array");
    }
    let n = be_i32(&v[12..16])? as usize;
    let mut at = 20;
    for _ in 0..n {
        if v.len() < at + 4 {
            return err("truncated array element");
        }
        let len = be_i32(&v[at..at + 4])?;
        at += 4;
        if len < 0 {
            item.append(None)?;
        } else {
            let len = len as usize;
            if v.len() < at + len {
                return err("truncated array element");
            }
            item.append(Some(&v[at..at + len]))?;
            at += len;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Schema;

    fn numeric(ndigits: &[i16], weight: i16, neg: bool, dscale: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((ndigits.len() as i16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend((if neg { 0x4000u16 } else { 0 }).to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in ndigits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_scale_exactly() {
        // 12345.67 = [1, 2345, 6700] weight 1
        assert_eq!(
            numeric_to_i128(&numeric(&[1, 2345, 6700], 1, false, 2), 2).unwrap(),
            1_234_567
        );
        assert_eq!(
            numeric_to_i128(&numeric(&[1, 2345, 6700], 1, true, 2), 4).unwrap(),
            -123_456_700
        );
        // 0.0001 = [1] weight -1
        assert_eq!(numeric_to_i128(&numeric(&[1], -1, false, 4), 4).unwrap(), 1);
        // 10000 = [1] weight 1
        assert_eq!(
            numeric_to_i128(&numeric(&[1], 1, false, 0), 0).unwrap(),
            10_000
        );
        assert_eq!(numeric_to_i128(&numeric(&[], 0, false, 0), 2).unwrap(), 0);
        // 0.125 at scale 2 would lose a digit.
        assert!(numeric_to_i128(&numeric(&[1250], -1, false, 3), 2).is_err());
    }

    fn copy_stream(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut v = SIGNATURE.to_vec();
        v.extend(0u32.to_be_bytes());
        v.extend(0u32.to_be_bytes());
        for r in rows {
            v.extend((r.len() as i16).to_be_bytes());
            for f in r {
                match f {
                    None => v.extend((-1i32).to_be_bytes()),
                    Some(b) => {
                        v.extend((b.len() as i32).to_be_bytes());
                        v.extend(b);
                    }
                }
            }
        }
        v.extend((-1i16).to_be_bytes());
        v
    }

    #[test]
    fn decodes_across_arbitrary_chunk_boundaries() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("tags", DataType::new_list(DataType::Int32, true), true),
        ]));
        let types = [
            PgType::Int8,
            PgType::Text,
            PgType::Array(Box::new(PgType::Int4)),
        ];
        let mut arr = Vec::new();
        arr.extend(1i32.to_be_bytes()); // ndim
        arr.extend(1i32.to_be_bytes()); // has nulls
        arr.extend(23u32.to_be_bytes()); // int4
        arr.extend(3i32.to_be_bytes()); // size
        arr.extend(1i32.to_be_bytes()); // lower bound
        for v in [4i32, 7] {
            arr.extend(4i32.to_be_bytes()); // element length
            arr.extend(v.to_be_bytes());
        }
        arr.extend((-1i32).to_be_bytes()); // NULL element
        let rows: Vec<Vec<Option<Vec<u8>>>> = (0..5)
            .map(|i| {
                vec![
                    Some((i as i64).to_be_bytes().to_vec()),
                    if i == 2 {
                        None
                    } else {
                        Some(format!("n{i}").into_bytes())
                    },
                    if i == 3 { None } else { Some(arr.clone()) },
                ]
            })
            .collect();
        let stream = copy_stream(&rows);
        for chunk in [1, 3, 7, 1000] {
            let mut d = CopyDecoder::new(Arc::clone(&schema), &types, 2);
            let mut batches = Vec::new();
            for c in stream.chunks(chunk) {
                batches.extend(d.push(c).unwrap());
            }
            batches.extend(d.finish().unwrap());
            assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
            let rows: Vec<String> = batches
                .iter()
                .flat_map(|b| {
                    let opts = arrow::util::display::FormatOptions::default().with_null("NULL");
                    let f: Vec<_> = b
                        .columns()
                        .iter()
                        .map(|c| {
                            arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &opts)
                                .unwrap()
                        })
                        .collect();
                    (0..b.num_rows())
                        .map(|r| {
                            f.iter()
                                .map(|f| f.value(r).to_string())
                                .collect::<Vec<_>>()
                                .join(" | ")
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            assert_eq!(
                rows,
                vec![
                    "0 | n0 | [4, 7, NULL]",
                    "1 | n1 | [4, 7, NULL]",
                    "2 | NULL | [4, 7, NULL]",
                    "3 | n3 | NULL",
                    "4 | n4 | [4, 7, NULL]",
                ],
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn cut_streams_are_errors() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let stream = copy_stream(&[vec![Some(1i64.to_be_bytes().to_vec())]]);
        let mut d = CopyDecoder::new(schema, &[PgType::Int8], 10);
        d.push(&stream[..stream.len() - 2]).unwrap();
        assert!(d.finish().unwrap_err().0.contains("cut short"));
    }
}
