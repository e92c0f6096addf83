//! Rendering query results: aligned table, CSV, JSON (array of objects), NDJSON, Parquet.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use futures::StreamExt;
use strata_engine::datafusion::arrow::array::RecordBatch;
use strata_engine::datafusion::arrow::datatypes::SchemaRef;
use strata_engine::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use strata_engine::datafusion::error::DataFusionError;
use strata_engine::datafusion::execution::SendableRecordBatchStream;

/// Errors met while streaming rows, with the engine's wording (memory hints, clean text).
fn engine_err(e: DataFusionError) -> strata_engine::Error {
    strata_engine::Error::from(e)
}

/// Output format of `strata sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned table for people.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// A Parquet file (needs `--output FILE`).
    Parquet,
}

/// Streams `stream` to stdout (or `output`) in `format`; returns the number of rows.
pub(crate) async fn write_rows(
    schema: SchemaRef,
    mut stream: SendableRecordBatchStream,
    format: Format,
    output: Option<&Path>,
    max_table_rows: usize,
) -> Result<u64> {
    let mut rows = 0u64;
    match format {
        Format::Parquet => {
            let path =
                output.context("--format parquet writes a file: add --output FILE.parquet")?;
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut w = strata_engine::datafusion::parquet::arrow::ArrowWriter::try_new(
                file, schema, None,
            )?;
            while let Some(b) = stream.next().await {
                let b = b.map_err(engine_err)?;
                rows += b.num_rows() as u64;
                w.write(&b)?;
            }
            w.close()?;
        }
        Format::Table => {
            let mut batches = Vec::new();
            let mut shown = 0usize;
            while let Some(b) = stream.next().await {
                let b = b.map_err(engine_err)?;
                rows += b.num_rows() as u64;
                if shown < max_table_rows {
                    let take = (max_table_rows - shown).min(b.num_rows());
                    shown += take;
                    batches.push(b.slice(0, take));
                }
            }
            let mut out = sink(output)?;
            writeln!(out, "{}", render_table(&schema, &batches)?)?;
            if rows as usize > shown {
                writeln!(
                    out,
                    "({rows} rows, first {shown} shown; use --limit or --format csv)"
                )?;
            } else {
                writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
            }
        }
        Format::Csv => {
            let out = sink(output)?;
            let mut w = strata_engine::datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            while let Some(b) = stream.next().await {
                let b = b.map_err(engine_err)?;
                rows += b.num_rows() as u64;
                w.write(&b)?;
            }
        }
        Format::Json => {
            let out = sink(output)?;
            let mut w = strata_engine::datafusion::arrow::json::ArrayWriter::new(out);
            while let Some(b) = stream.next().await {
                let b = b.map_err(engine_err)?;
                rows += b.num_rows() as u64;
                w.write(&b)?;
            }
            w.finish()?;
            let mut out = w.into_inner();
            if rows == 0 {
                write!(out, "[]")?;
            }
            writeln!(out)?;
        }
        Format::Ndjson => {
            let out = sink(output)?;
            let mut w = strata_engine::datafusion::arrow::json::LineDelimitedWriter::new(out);
            while let Some(b) = stream.next().await {
                let b = b.map_err(engine_err)?;
                rows += b.num_rows() as u64;
                w.write(&b)?;
            }
            w.finish()?;
        }
    }
    Ok(rows)
}

fn sink(output: Option<&Path>) -> Result<Box<dyn Write>> {
    Ok(match output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

/// An aligned table: numbers right-aligned, NULL shown as `NULL`.
/// Batches as one JSON array of row objects.
pub(crate) fn json_array(batches: &[RecordBatch]) -> Result<String> {
    let mut w = strata_engine::datafusion::arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(String::from_utf8_lossy(&w.into_inner()).into_owned())
}

pub(crate) fn render_table(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String> {
    use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(schema.fields().iter().map(|f| f.name().as_str()));
    let numeric: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().is_numeric())
        .collect();
    let opts = FormatOptions::default().with_null("NULL");
    for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..b.num_rows() {
            table.add_row(fmts.iter().map(|f| f.value(r).to_string()));
        }
    }
    for (i, n) in numeric.iter().enumerate() {
        if *n && let Some(col) = table.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    Ok(table.to_string())
}

/// Human-readable byte size.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
