//! JSON files: newline-delimited (`.ndjson`, `.jsonl`: one record per line, a bad line is
//! rejected and the next one read) and documents (`.json`: an array of records, one record,
//! or several records one after another).
//!
//! Records become rows through [`crate::json`] (nested objects flattened to
//! `parent__child`, arrays kept as JSON text). The schema is inferred from the whole file
//! by default, so a field that first appears late in the file still gets its column.

use std::io::{BufRead, BufReader, Read};

use arrow::datatypes::SchemaRef;
use serde_json::Value;

use super::{BATCH_ROWS, BatchBuilder, FileError};
use crate::RejectedRow;

/// How records are laid out in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One record per line.
    Lines,
    /// JSON values one after another; an array's elements are records.
    Document,
}

/// A record, or why a line is not one and the line's text.
type Parsed = Result<Value, (String, String)>;

/// Calls `f` with each record (or the reason it is not one) and its line, until `f` fails.
fn for_each_record(
    input: Box<dyn Read + Send>,
    layout: Layout,
    f: &mut dyn FnMut(Option<u64>, Parsed) -> Result<bool, FileError>,
) -> Result<(), FileError> {
    let io_err = |e: std::io::Error| FileError {
        line: None,
        message: format!("cannot read the file: {e}"),
    };
    match layout {
        Layout::Lines => {
            let mut reader = BufReader::with_capacity(1 << 16, input);
            let mut buf = Vec::new();
            let mut line = 0u64;
            loop {
                buf.clear();
                if reader.read_until(b'\n', &mut buf).map_err(io_err)? == 0 {
                    return Ok(());
                }
                line += 1;
                let text = buf.trim_ascii();
                if text.is_empty() {
                    continue;
                }
                let parsed = serde_json::from_slice::<Value>(text).map_err(|e| {
                    (
                        format!("not valid JSON ({e})"),
                        String::from_utf8_lossy(text).into_owned(),
                    )
                });
                if !f(Some(line), parsed)? {
                    return Ok(());
                }
            }
        }
        Layout::Document => {
            let reader = BufReader::with_capacity(1 << 16, input);
            let mut values = serde_json::Deserializer::from_reader(reader).into_iter::<Value>();
            loop {
                match values.next() {
                    None => return Ok(()),
                    Some(Ok(Value::Array(items))) => {
                        for item in items {
                            if !f(None, Ok(item))? {
                                return Ok(());
                            }
                        }
                    }
                    Some(Ok(v)) => {
                        if !f(None, Ok(v))? {
                            return Ok(());
                        }
                    }
                    Some(Err(e)) => {
                        // The document cannot be split past a syntax error.
                        f(
                            Some(e.line() as u64),
                            Err((
                                format!("not valid JSON ({e}); the rest of the file was not read"),
                                String::new(),
                            )),
                        )?;
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The schema of up to `sample_rows` records of the file, widened from `base`.
pub(crate) fn sample(
    input: Box<dyn Read + Send>,
    layout: Layout,
    sample_rows: usize,
    base: Option<&arrow::datatypes::Schema>,
) -> Result<SchemaRef, FileError> {
    let mut schema: Option<SchemaRef> = base.map(|b| std::sync::Arc::new(b.clone()));
    let mut chunk: Vec<Value> = Vec::with_capacity(1024);
    let mut seen = 0usize;
    let widen = |chunk: &mut Vec<Value>, schema: &mut Option<SchemaRef>| {
        *schema = Some(crate::json::widen_schema(schema.as_deref(), chunk));
        chunk.clear();
    };
    for_each_record(input, layout, &mut |_, v| {
        if let Ok(v) = v {
            chunk.push(v);
            seen += 1;
            if chunk.len() == 1024 {
                widen(&mut chunk, &mut schema);
            }
        }
        Ok(seen < sample_rows)
    })?;
    widen(&mut chunk, &mut schema);
    Ok(schema.unwrap_or_else(|| std::sync::Arc::new(arrow::datatypes::Schema::empty())))
}

/// Reads every record of the file into `out`, rejecting lines that are not JSON objects
/// fitting the stream's columns. `ignored` names deselected columns.
pub(crate) fn read(
    input: Box<dyn Read + Send>,
    layout: Layout,
    ignored: &dyn Fn(&str) -> bool,
    out: &mut BatchBuilder<'_>,
) -> Result<(), FileError> {
    let schema = out.data_schema();
    let mut chunk: Vec<Value> = Vec::with_capacity(BATCH_ROWS);
    let mut lines: Vec<Option<u64>> = Vec::with_capacity(BATCH_ROWS);
    let mut record_no = 0u64;
    let flush = |chunk: &mut Vec<Value>,
                 lines: &mut Vec<Option<u64>>,
                 out: &mut BatchBuilder<'_>|
     -> Result<(), FileError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut bad: Vec<(usize, String)> = Vec::new();
        let batch =
            crate::json::to_batch(&schema, chunk, ignored, |i, reason| bad.push((i, reason)))
                .map_err(|e| FileError {
                    line: None,
                    message: format!("internal error building a batch: {e}"),
                })?;
        for (i, reason) in bad {
            out.reject(RejectedRow {
                location: out.file.to_string(),
                line: lines[i],
                reason,
                raw: chunk[i].to_string(),
            })?;
        }
        chunk.clear();
        lines.clear();
        out.emit(batch)
    };
    for_each_record(input, layout, &mut |line, v| {
        record_no += 1;
        match v {
            Ok(v) => {
                chunk.push(v);
                // Documents have no per-record line: the record's position stands in.
                lines.push(line.or(Some(record_no)));
                if chunk.len() == BATCH_ROWS {
                    flush(&mut chunk, &mut lines, out)?;
                }
            }
            Err((reason, raw)) => out.reject(RejectedRow {
                location: out.file.to_string(),
                line,
                reason,
                raw,
            })?,
        }
        Ok(true)
    })?;
    flush(&mut chunk, &mut lines, out)
}
