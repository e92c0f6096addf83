//! CSV and TSV, read record by record so that one bad line is rejected with its line number
//! and reason while every good line loads.
//!
//! The `csv` crate splits records (quotes, escapes, embedded newlines); bytes are decoded
//! from the file's encoding to UTF-8 on the way in (`encoding: latin1`, `windows-1252`,
//! any WHATWG label), and each field is parsed strictly as its column's type.

use std::io::Read;

use arrow::datatypes::DataType;

use super::values::{Value, infer_text, merge_types, parse_value};
use super::{BatchBuilder, Columns, FileError, unique_names};
use crate::RejectedRow;

/// How a CSV file is written.
#[derive(Debug, Clone)]
pub(crate) struct CsvFormat {
    pub delimiter: u8,
    pub header: bool,
    pub quote: u8,
    pub escape: Option<u8>,
    pub comment: Option<u8>,
    pub encoding: &'static encoding_rs::Encoding,
    pub skip_rows: usize,
    pub null_values: Vec<String>,
}

impl CsvFormat {
    pub(crate) fn new(delimiter: u8) -> Self {
        Self {
            delimiter,
            header: true,
            quote: b'"',
            escape: None,
            comment: None,
            encoding: encoding_rs::UTF_8,
            skip_rows: 0,
            null_values: Vec::new(),
        }
    }

    fn reader(&self, input: Box<dyn Read + Send>) -> csv::Reader<Box<dyn Read + Send>> {
        let decoded: Box<dyn Read + Send> = if self.encoding == encoding_rs::UTF_8 {
            // Invalid UTF-8 passes through so that the line holding it can be rejected.
            Box::new(
                encoding_rs_io::DecodeReaderBytesBuilder::new()
                    .utf8_passthru(true)
                    .strip_bom(true)
                    .build(input),
            )
        } else {
            Box::new(
                encoding_rs_io::DecodeReaderBytesBuilder::new()
                    .encoding(Some(self.encoding))
                    .strip_bom(true)
                    .build(input),
            )
        };
        csv::ReaderBuilder::new()
            .delimiter(self.delimiter)
            .has_headers(false)
            .flexible(true)
            .quote(self.quote)
            .escape(self.escape)
            .double_quote(self.escape.is_none())
            .comment(self.comment)
            .from_reader(decoded)
    }

    fn is_null(&self, s: &str) -> bool {
        s.trim().is_empty() || self.null_values.iter().any(|n| n == s)
    }
}

fn raw_line(record: &csv::ByteRecord, delimiter: u8) -> String {
    let mut out = Vec::new();
    for (i, f) in record.iter().enumerate() {
        if i > 0 {
            out.push(delimiter);
        }
        out.extend_from_slice(f);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the header and up to `sample_rows` records: column names and inferred types.
pub(crate) fn sample(
    input: Box<dyn Read + Send>,
    fmt: &CsvFormat,
    sample_rows: usize,
) -> Result<Columns, FileError> {
    let mut rdr = fmt.reader(input);
    let mut record = csv::ByteRecord::new();
    for _ in 0..fmt.skip_rows {
        if !rdr.read_byte_record(&mut record).map_err(csv_error)? {
            break;
        }
    }
    let mut names: Vec<String> = Vec::new();
    let mut types: Vec<Option<DataType>> = Vec::new();
    if fmt.header {
        if !rdr.read_byte_record(&mut record).map_err(csv_error)? {
            return Ok(Columns::default());
        }
        names = record
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        types = vec![None; names.len()];
    }
    let mut seen = 0;
    while seen < sample_rows && rdr.read_byte_record(&mut record).map_err(csv_error)? {
        seen += 1;
        if !fmt.header && record.len() > names.len() {
            names.extend((names.len()..record.len()).map(|i| format!("column_{}", i + 1)));
            types.resize(names.len(), None);
        }
        if record.len() != names.len() {
            continue; // rejected when read
        }
        for (i, f) in record.iter().enumerate() {
            let Ok(s) = std::str::from_utf8(f) else {
                continue;
            };
            if fmt.is_null(s) {
                continue;
            }
            types[i] = merge_types(types[i].take(), infer_text(s));
        }
    }
    Ok(Columns {
        names: unique_names(names),
        types,
    })
}

/// Reads every record of one file into `out`, rejecting the lines that do not fit.
pub(crate) fn read(
    input: Box<dyn Read + Send>,
    fmt: &CsvFormat,
    out: &mut BatchBuilder<'_>,
) -> Result<(), FileError> {
    let mut rdr = fmt.reader(input);
    let mut record = csv::ByteRecord::new();
    for _ in 0..fmt.skip_rows {
        if !rdr.read_byte_record(&mut record).map_err(csv_error)? {
            return Ok(());
        }
    }
    // Columns of this file, by position: where each lands in the stream's schema.
    let mut targets: Vec<Option<usize>> = Vec::new();
    if fmt.header {
        if !rdr.read_byte_record(&mut record).map_err(csv_error)? {
            return Ok(());
        }
        let names = unique_names(
            record
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect(),
        );
        targets = names.iter().map(|n| out.index_of(n)).collect();
    }
    loop {
        match rdr.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                // A broken quote or an I/O error: the rest of the file cannot be split
                // into records reliably.
                let line = e.position().map(|p| p.line());
                out.reject(RejectedRow {
                    location: out.file.to_string(),
                    line,
                    reason: format!(
                        "{}; the rest of the file was not read",
                        csv_error(e).message
                    ),
                    raw: String::new(),
                })?;
                break;
            }
        }
        let line = record.position().map(|p| p.line());
        if !fmt.header && targets.len() < record.len() {
            targets = (0..record.len())
                .map(|i| out.index_of(&format!("column_{}", i + 1)))
                .collect();
        }
        if record.len() != targets.len() {
            out.reject(RejectedRow {
                location: out.file.to_string(),
                line,
                reason: format!("expected {} fields, found {}", targets.len(), record.len()),
                raw: raw_line(&record, fmt.delimiter),
            })?;
            continue;
        }
        // Parse every field first: a row is taken whole or rejected whole.
        let mut row: Vec<(usize, Value<'_>)> = Vec::with_capacity(record.len());
        let mut bad: Option<String> = None;
        for (i, f) in record.iter().enumerate() {
            let Ok(s) = std::str::from_utf8(f) else {
                bad = Some(format!(
                    "field {} is not valid UTF-8 (set `encoding:` to the file's encoding, e.g. latin1)",
                    i + 1
                ));
                break;
            };
            let Some(col) = targets[i] else { continue };
            if fmt.is_null(s) {
                row.push((col, Value::Null));
                continue;
            }
            match parse_value(s, out.type_of(col)) {
                Ok(v) => row.push((col, v)),
                Err(e) => {
                    bad = Some(format!("column `{}`: {e}", out.name_of(col)));
                    break;
                }
            }
        }
        match bad {
            Some(reason) => out.reject(RejectedRow {
                location: out.file.to_string(),
                line,
                reason,
                raw: raw_line(&record, fmt.delimiter),
            })?,
            None => out.push_row(&row)?,
        }
    }
    Ok(())
}

fn csv_error(e: csv::Error) -> FileError {
    let line = e.position().map(|p| p.line());
    let message = match e.kind() {
        csv::ErrorKind::Io(io) => format!("cannot read the file: {io}"),
        _ => e.to_string(),
    };
    FileError { line, message }
}
