//! Excel workbooks (`.xlsx`, `.xlsm`, `.xlsb`, `.xls`, `.ods`), one sheet per stream.
//!
//! Every cell is turned into its text form (numbers without a spurious `.0`, dates as ISO
//! 8601) and then typed exactly as CSV fields are, so a column reads the same whether it
//! arrives as CSV or as a workbook. Cells holding an Excel error (`#DIV/0!`, `#N/A`) reject
//! their row with the cell's address.

use std::io::Cursor;

use arrow::datatypes::DataType;
use calamine::{Data, Reader, open_workbook_auto_from_rs};

use super::values::{Value, infer_text, merge_types, parse_value};
use super::{BatchBuilder, Columns, FileError, unique_names};
use crate::RejectedRow;

/// Which sheet and rows to read.
#[derive(Debug, Clone, Default)]
pub(crate) struct XlsxFormat {
    /// Sheet name; the first sheet when unset.
    pub sheet: Option<String>,
    /// Rows above the header to skip.
    pub skip_rows: usize,
    /// The first row read holds the column names.
    pub header: bool,
}

fn sheet(bytes: Vec<u8>, fmt: &XlsxFormat) -> Result<calamine::Range<Data>, FileError> {
    let mut wb = open_workbook_auto_from_rs(Cursor::new(bytes)).map_err(|e| FileError {
        line: None,
        message: format!("not a readable workbook: {e}"),
    })?;
    let names = wb.sheet_names();
    let name = match &fmt.sheet {
        Some(s) => {
            if !names.iter().any(|n| n == s) {
                return Err(FileError {
                    line: None,
                    message: format!(
                        "the workbook has no sheet `{s}`; its sheets are: {}",
                        names.join(", ")
                    ),
                });
            }
            s.clone()
        }
        None => names.first().cloned().ok_or_else(|| FileError {
            line: None,
            message: "the workbook has no sheets".into(),
        })?,
    };
    wb.worksheet_range(&name).map_err(|e| FileError {
        line: None,
        message: format!("cannot read sheet `{name}`: {e}"),
    })
}

/// A cell as text; `Err` for an Excel error value.
fn cell_text(cell: &Data) -> Result<Option<String>, String> {
    Ok(match cell {
        Data::Empty => None,
        Data::String(s) => Some(s.clone()),
        Data::Int(i) => Some(i.to_string()),
        Data::Float(f) => Some(f.to_string()),
        Data::Bool(b) => Some(b.to_string()),
        Data::DateTime(d) => match d.as_datetime() {
            Some(ts) if ts.time() == chrono::NaiveTime::MIN && !d.is_duration() => {
                Some(ts.date().format("%Y-%m-%d").to_string())
            }
            Some(ts) if !d.is_duration() => Some(ts.format("%Y-%m-%d %H:%M:%S%.f").to_string()),
            _ => Some(d.as_f64().to_string()),
        },
        Data::DateTimeIso(s) | Data::DurationIso(s) => Some(s.clone()),
        Data::Error(e) => return Err(format!("holds the Excel error {e}")),
    })
}

fn column_letter(mut c: u32) -> String {
    let mut s = Vec::new();
    c += 1;
    while c > 0 {
        let r = ((c - 1) % 26) as u8;
        s.push(b'A' + r);
        c = (c - 1) / 26;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

fn header_names(first: &[Data]) -> Vec<String> {
    first
        .iter()
        .map(|c| cell_text(c).ok().flatten().unwrap_or_default())
        .collect()
}

/// Column names and inferred types from the header and up to `sample_rows` rows.
pub(crate) fn sample(
    bytes: Vec<u8>,
    fmt: &XlsxFormat,
    sample_rows: usize,
) -> Result<Columns, FileError> {
    let range = sheet(bytes, fmt)?;
    let mut rows = range.rows().skip(fmt.skip_rows);
    let width = range.width();
    let names = if fmt.header {
        match rows.next() {
            Some(r) => header_names(r),
            None => return Ok(Columns::default()),
        }
    } else {
        (0..width).map(|i| format!("column_{}", i + 1)).collect()
    };
    let mut types: Vec<Option<DataType>> = vec![None; names.len()];
    for r in rows.take(sample_rows) {
        for (i, cell) in r.iter().enumerate().take(names.len()) {
            if let Ok(Some(t)) = cell_text(cell) {
                types[i] = merge_types(types[i].take(), infer_text(&t));
            }
        }
    }
    // Trailing unnamed, empty columns are formatting, not data.
    let mut names = names;
    while names.last().is_some_and(|n| n.is_empty()) && types.last().is_some_and(|t| t.is_none()) {
        names.pop();
        types.pop();
    }
    Ok(Columns {
        names: unique_names(names),
        types,
    })
}

/// Reads the sheet's rows into `out`.
pub(crate) fn read(
    bytes: Vec<u8>,
    fmt: &XlsxFormat,
    out: &mut BatchBuilder<'_>,
) -> Result<(), FileError> {
    let range = sheet(bytes, fmt)?;
    let first_row = range.start().map(|(r, _)| r).unwrap_or(0) as u64;
    let first_col = range.start().map(|(_, c)| c).unwrap_or(0);
    let mut rows = range.rows().enumerate().skip(fmt.skip_rows);
    let targets: Vec<Option<usize>> = if fmt.header {
        match rows.next() {
            Some((_, r)) => unique_names(header_names(r))
                .iter()
                .map(|n| out.index_of(n))
                .collect(),
            None => return Ok(()),
        }
    } else {
        (0..range.width())
            .map(|i| out.index_of(&format!("column_{}", i + 1)))
            .collect()
    };
    for (idx, r) in rows {
        let line = first_row + idx as u64 + 1;
        if r.iter().all(|c| matches!(c, Data::Empty)) {
            continue;
        }
        let mut texts: Vec<(usize, Option<String>)> = Vec::with_capacity(r.len());
        let mut bad: Option<String> = None;
        for (i, cell) in r.iter().enumerate() {
            let Some(Some(col)) = targets.get(i) else {
                continue;
            };
            match cell_text(cell) {
                Ok(t) => texts.push((*col, t)),
                Err(e) => {
                    bad = Some(format!(
                        "cell {}{line} {e}",
                        column_letter(first_col + i as u32)
                    ));
                    break;
                }
            }
        }
        let mut row: Vec<(usize, Value<'_>)> = Vec::with_capacity(texts.len());
        if bad.is_none() {
            for (col, t) in &texts {
                let v = match t {
                    None => Ok(Value::Null),
                    Some(t) => parse_value(t, out.type_of(*col)),
                };
                match v {
                    Ok(v) => row.push((*col, v)),
                    Err(e) => {
                        bad = Some(format!("column `{}`: {e}", out.name_of(*col)));
                        break;
                    }
                }
            }
        }
        match bad {
            None => out.push_row(&row)?,
            Some(reason) => {
                let raw = r
                    .iter()
                    .map(|c| match cell_text(c) {
                        Ok(t) => t.unwrap_or_default(),
                        Err(_) => c.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("\t");
                out.reject(RejectedRow {
                    location: out.file.to_string(),
                    line: Some(line),
                    reason,
                    raw,
                })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn column_letters() {
        assert_eq!(super::column_letter(0), "A");
        assert_eq!(super::column_letter(25), "Z");
        assert_eq!(super::column_letter(26), "AA");
        assert_eq!(super::column_letter(27), "AB");
    }
}
