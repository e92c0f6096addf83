//! Parallel range-chunked reads of one large table.
//!
//! A full-refresh or append stream on a table with a single-column integer primary key (or
//! a `partition_column` option naming an integer column) is split into K ranges of that
//! column, between its minimum and maximum, and read by K binary `COPY` statements on K
//! connections at once. Their batches meet in one bounded channel, so memory stays bounded
//! by K decoders and a few batches in flight, whatever the table's size.
//!
//! All K statements read the same snapshot: a coordinating connection opens a
//! `REPEATABLE READ` transaction, exports its snapshot (`pg_export_snapshot()`) while it
//! reads the range bounds, and every other connection imports it (`SET TRANSACTION
//! SNAPSHOT`) before any row is read. The chunks therefore add up to one point-in-time
//! image of the table, as a single `COPY` would: a transaction committed while they run is
//! in none of them.
//!
//! Stream options:
//! - `parallel_reads`: connections to read with, `1`–`64`, or `auto` (the default:
//!   [`auto_parallel`] connections when the table's estimated row count,
//!   `pg_class.reltuples`, is at least [`AUTO_MIN_ROWS`], else one).
//! - `partition_column`: the integer column to split on, when the table has no
//!   single-column integer primary key (or another column suits better). Rows where it is
//!   NULL are read with the first range.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use strata_project::{StreamDef, SyncMode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::copy::CopyDecoder;
use super::types::{PgColumn, PgType};
use super::{PostgresSource, quote_ident};
use crate::{BatchStream, Error, Result};

/// Connections used by `parallel_reads: auto` on a large table: one per two cores of this
/// machine, at most 4. With two cores or fewer, parallel reads only add memory: decoding and
/// writing already keep both cores busy (bench/README.md, "Ingestion").
pub fn auto_parallel() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / 2).clamp(1, 4)
}
/// Estimated rows from which `parallel_reads: auto` reads in parallel.
pub const AUTO_MIN_ROWS: f64 = 1_000_000.0;
/// The most connections one stream may read with.
pub const MAX_PARALLEL: usize = 64;

const INT2: u32 = 21;
const INT4: u32 = 23;
const INT8: u32 = 20;

/// How a stream is split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunking {
    /// The integer column the ranges are on.
    pub column: String,
    /// Connections (ranges) wanted; fewer are used when the key range is narrower.
    pub parallel: usize,
}

/// The table a stream reads, as the catalog knows it.
pub(crate) struct TableFacts<'a> {
    /// `"schema"."table"`, quoted.
    pub qualified: &'a str,
    /// Every column of the table (before `columns:` / `exclude:`).
    pub columns: &'a [PgColumn],
}

fn parse_parallel(stream: &StreamDef) -> std::result::Result<Option<usize>, String> {
    match stream.options.get("parallel_reads").map(|s| s.trim()) {
        None | Some("auto") => Ok(None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PARALLEL).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "option `parallel_reads` must be `auto` or a number of connections from 1 to {MAX_PARALLEL}, not `{v}`"
            )),
        },
    }
}

/// Decides whether (and how) a stream is read in parallel. `table` is `None` for a
/// `query:` stream.
pub(crate) async fn decide(
    src: &PostgresSource,
    client: &Client,
    stream: &StreamDef,
    table: Option<TableFacts<'_>>,
) -> Result<Option<Chunking>> {
    let fail = |message: String| Error::Config {
        source_name: src.name.clone(),
        message: format!("stream `{}`: {message}", stream.name),
    };
    let explicit = parse_parallel(stream).map_err(&fail)?;
    let partition_column = stream.options.get("partition_column").map(|s| s.trim());
    if explicit == Some(1) {
        return Ok(None);
    }
    let asked = explicit.is_some() || partition_column.is_some();
    let Some(table) = table else {
        if asked {
            return Err(fail(
                "`parallel_reads` and `partition_column` apply to `table:` streams; a `query:` stream is read over one connection (remove the options, or name the table)".into(),
            ));
        }
        return Ok(None);
    };
    if stream.mode == SyncMode::Incremental {
        if asked {
            return Err(fail(
                "`parallel_reads` and `partition_column` apply to full_refresh and append streams; an incremental stream reads only new rows, over one connection (remove the options)".into(),
            ));
        }
        return Ok(None);
    }
    let row = client
        .query_one(
            "SELECT c.reltuples::float8,
                    ARRAY(SELECT a.attname::text FROM pg_index i
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                          WHERE i.indrelid = c.oid AND i.indisprimary)
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[&table.qualified],
        )
        .await
        .map_err(|e| src.query_error("reading the table's size and primary key", e))?;
    let estimated: f64 = row.get(0);
    let primary_key: Vec<String> = row.get(1);
    let is_integer = |name: &str| {
        table
            .columns
            .iter()
            .find(|c| c.name == name)
            .map(|c| matches!(c.type_oid, INT2 | INT4 | INT8))
    };
    let column = match partition_column {
        Some(name) => match is_integer(name) {
            Some(true) => name.to_string(),
            Some(false) => {
                return Err(fail(format!(
                    "`partition_column: {name}` must be a smallint, integer or bigint column to split the table into ranges"
                )));
            }
            None => {
                return Err(fail(format!(
                    "`partition_column: {name}` is not a column of the table; columns are: {}",
                    table
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        },
        None if primary_key.len() == 1 && is_integer(&primary_key[0]) == Some(true) => {
            primary_key[0].clone()
        }
        None => {
            if explicit.is_some() {
                return Err(fail(
                    "`parallel_reads` needs a column to split the table on: the table has no single-column integer primary key, so set `partition_column` to an integer column (ideally indexed)".into(),
                ));
            }
            return Ok(None);
        }
    };
    let parallel = match explicit {
        Some(n) => n,
        None if estimated >= AUTO_MIN_ROWS && auto_parallel() > 1 => auto_parallel(),
        None => return Ok(None),
    };
    Ok(Some(Chunking { column, parallel }))
}

/// The range conditions splitting `[min, max]` into at most `parallel` ranges. The first
/// range has no lower bound and takes NULLs, the last has no upper bound, so together they
/// cover every row whatever its value.
pub(crate) fn ranges(column: &str, min: i64, max: i64, parallel: usize) -> Vec<String> {
    let c = quote_ident(column);
    let span = max as i128 - min as i128 + 1;
    let k = (parallel as i128).min(span).max(1);
    if k == 1 {
        return vec![String::new()];
    }
    let bound = |i: i128| (min as i128 + span * i / k) as i64;
    (0..k)
        .map(|i| {
            if i == 0 {
                format!("({c} < {} OR {c} IS NULL)", bound(1))
            } else if i == k - 1 {
                format!("{c} >= {}", bound(i))
            } else {
                format!("{c} >= {} AND {c} < {}", bound(i), bound(i + 1))
            }
        })
        .collect()
}

/// What one chunked read needs to build its statements.
pub(crate) struct ChunkedRead {
    /// The select list.
    pub select: String,
    /// `FROM` target.
    pub from: String,
    /// The stream's own conditions (its filter), ANDed with each range.
    pub conditions: Vec<String>,
    /// Arrow schema of the batches.
    pub schema: SchemaRef,
    /// Decoded types, column by column.
    pub types: Vec<PgType>,
    /// Rows per batch.
    pub batch_size: usize,
}

/// Aborts the read tasks when the stream is dropped (the write failed, or was cancelled).
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Reads the chunks concurrently under one exported snapshot; `client` coordinates (and
/// reads the first range).
pub(crate) async fn read(
    src: &PostgresSource,
    client: Client,
    stream: &StreamDef,
    chunking: &Chunking,
    read: ChunkedRead,
) -> Result<BatchStream> {
    let name = src.name.clone();
    let stream_name = stream.name.clone();
    let fail = |message: String| Error::Read {
        source_name: name.clone(),
        stream: Some(stream_name.clone()),
        message,
    };
    let col = quote_ident(&chunking.column);
    let where_of = |extra: &[String]| {
        let all: Vec<&String> = read.conditions.iter().chain(extra).collect();
        if all.is_empty() {
            String::new()
        } else {
            format!(
                " WHERE {}",
                all.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" AND ")
            )
        }
    };
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| src.query_error("starting the snapshot transaction", e))?;
    let bounds = client
        .query_one(
            &format!(
                "SELECT pg_export_snapshot(), min({col})::int8, max({col})::int8 FROM {}{}",
                read.from,
                where_of(&[])
            ),
            &[],
        )
        .await
        .map_err(|e| {
            src.query_error(
                &format!(
                    "exporting a snapshot and reading the range of `{}` for stream `{}`",
                    chunking.column, stream.name
                ),
                e,
            )
        })?;
    let snapshot: String = bounds.get(0);
    let min: Option<i64> = bounds.get(1);
    let max: Option<i64> = bounds.get(2);
    let conditions = match (min, max) {
        (Some(lo), Some(hi)) => ranges(&chunking.column, lo, hi, chunking.parallel),
        // No value at all (an empty table, or only NULLs): one read of everything.
        _ => vec![String::new()],
    };
    tracing::debug!(
        source = %src.name, stream = %stream.name, column = %chunking.column,
        ranges = conditions.len(), ?min, ?max, "Reading in parallel."
    );

    // Every other connection imports the snapshot before any row is read, so the
    // coordinator may finish its own range (and release the snapshot) at any time after.
    let total = conditions.len();
    let workers = futures::future::try_join_all((1..total).map(|i| {
        let snapshot = snapshot.clone();
        let fail = &fail;
        async move {
            let c = src.connect().await.map_err(|e| {
                fail(format!(
                    "opening read connection {} of {total}: {e}; lower `parallel_reads` if the server limits connections",
                    i + 1
                ))
            })?;
            c.batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
                super::quote_literal(&snapshot)
            ))
            .await
            .map_err(|e| src.query_error("importing the read snapshot", e))?;
            Ok::<_, Error>(c)
        }
    }))
    .await?;

    let (tx, rx) = mpsc::channel::<Result<RecordBatch>>(total.max(2));
    let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(total);
    for (client, range) in std::iter::once(client).chain(workers).zip(conditions) {
        let extra: Vec<String> = if range.is_empty() {
            vec![]
        } else {
            vec![range.clone()]
        };
        let sql = format!(
            "COPY (SELECT {} FROM {}{}) TO STDOUT (FORMAT binary)",
            read.select,
            read.from,
            where_of(&extra)
        );
        let tx = tx.clone();
        let schema = Arc::clone(&read.schema);
        let types = read.types.clone();
        let batch_size = read.batch_size;
        let name = src.name.clone();
        let stream_name = stream.name.clone();
        handles.push(tokio::spawn(async move {
            if let Err(message) = copy_range(&client, &sql, schema, &types, batch_size, &tx).await {
                let what = if range.is_empty() {
                    "the read failed".to_string()
                } else {
                    format!("reading the rows where {range} failed")
                };
                let _ = tx
                    .send(Err(Error::Read {
                        source_name: name,
                        stream: Some(stream_name),
                        message: format!("{what}: {message}"),
                    }))
                    .await;
            }
            drop(client);
        }));
    }
    drop(tx);
    let guard = AbortOnDrop(handles.iter().map(|h| h.abort_handle()).collect());
    let name = src.name.clone();
    let stream_name = stream.name.clone();
    // Batches as they come; once every task has ended, a task that died without saying
    // why (a panic) fails the read instead of silently losing its range.
    let batches = futures::stream::unfold(
        (rx, Some(handles), guard),
        move |(mut rx, handles, guard)| {
            let name = name.clone();
            let stream_name = stream_name.clone();
            async move {
                if let Some(item) = rx.recv().await {
                    return Some((item, (rx, handles, guard)));
                }
                for h in handles? {
                    if let Err(e) = h.await {
                        return Some((
                            Err(Error::Read {
                                source_name: name,
                                stream: Some(stream_name),
                                message: format!("a parallel read task ended abnormally: {e}"),
                            }),
                            (rx, None, guard),
                        ));
                    }
                }
                None
            }
        },
    )
    .boxed();
    Ok(batches)
}

/// Runs one range's COPY and sends its batches; an error is returned as text.
async fn copy_range(
    client: &Client,
    sql: &str,
    schema: SchemaRef,
    types: &[PgType],
    batch_size: usize,
    tx: &mpsc::Sender<Result<RecordBatch>>,
) -> std::result::Result<(), String> {
    let bytes = client
        .copy_out(sql)
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        })?;
    let mut bytes = std::pin::pin!(bytes);
    let mut decoder = CopyDecoder::new(schema, types, batch_size);
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(|e| format!("the read failed: {e}"))?;
        for b in decoder.push(&chunk).map_err(|e| e.0)? {
            if tx.send(Ok(b)).await.is_err() {
                // The reader is gone: nothing left to do.
                return Ok(());
            }
        }
    }
    if let Some(b) = decoder.finish().map_err(|e| e.0)? {
        let _ = tx.send(Ok(b)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_span_without_overlap() {
        assert_eq!(
            ranges("id", 1, 100, 4),
            vec![
                "(\"id\" < 26 OR \"id\" IS NULL)",
                "\"id\" >= 26 AND \"id\" < 51",
                "\"id\" >= 51 AND \"id\" < 76",
                "\"id\" >= 76",
            ]
        );
        // Fewer values than connections: one range per value.
        assert_eq!(
            ranges("k", -1, 1, 8),
            vec![
                "(\"k\" < 0 OR \"k\" IS NULL)",
                "\"k\" >= 0 AND \"k\" < 1",
                "\"k\" >= 1"
            ]
        );
        assert_eq!(ranges("id", 5, 5, 4), vec![String::new()]);
        // The extremes of bigint do not overflow.
        let r = ranges("id", i64::MIN, i64::MAX, 2);
        assert_eq!(r, vec!["(\"id\" < 0 OR \"id\" IS NULL)", "\"id\" >= 0"]);
    }
}
