//! The ingestion pipeline: read a stream, commit its rows and its new state together.
//!
//! State (the cursor reached) lives in the commit info of the Delta commit that holds the
//! rows it describes, under the key [`STATE_KEY`]; the commit also carries a Delta `txn`
//! action `strata-ingest/<source>/<stream>` whose version counts the stream's runs. A
//! process killed at any instant has either committed rows and cursor together or
//! neither, so the next run resumes exactly where the last commit ended.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, RecordBatch, make_comparator};
use arrow::compute::SortOptions;
use arrow::datatypes::SchemaRef;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::StreamExt;
use strata_lake::deltalake::datafusion::error::DataFusionError;
use strata_lake::deltalake::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use strata_lake::deltalake::datafusion::prelude::SessionContext;
use strata_lake::{Lake, MergeClause, TableName, WriteMode, WriteOptions};
use strata_project::{BadRowsPolicy, SchemaChangePolicy, SourceDef, StreamDef, SyncMode};

use crate::{Error, ReadContext, ReadReport, RejectedRow, Result, Source};

/// Commit-info key holding a stream's state.
pub const STATE_KEY: &str = "strata.ingest";

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Ignore saved state: read everything and replace the destination.
    pub full_refresh: bool,
}

/// What happened to one stream.
#[derive(Debug, Clone)]
pub struct StreamReport {
    /// Source name.
    pub source: String,
    /// Stream name.
    pub stream: String,
    /// Destination table.
    pub destination: TableName,
    /// Sync mode used.
    pub mode: SyncMode,
    /// Rows read from the source.
    pub rows: u64,
    /// Table version created (none when nothing was written).
    pub version: Option<u64>,
    /// Cursor reached (incremental streams).
    pub cursor: Option<String>,
    /// Columns added to the destination by schema evolution.
    pub added_columns: Vec<String>,
    /// Rows the connector could not read, kept in `<destination>__rejected`.
    pub rejected: u64,
    /// Wall time.
    pub duration: Duration,
}

/// Live counters a progress display can poll.
#[derive(Debug, Default)]
pub struct Progress {
    /// Rows read so far.
    pub rows: AtomicU64,
    /// Bytes of Arrow data read so far.
    pub bytes: AtomicU64,
}

/// The saved state of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    /// Cursor value reached, in the source's literal syntax.
    pub cursor: Option<String>,
    /// Runs committed so far (the `txn` version).
    pub runs: i64,
    /// The connector's own state (files loaded, last entry id), when it keeps one.
    pub saved: Option<serde_json::Value>,
}

fn app_id(source: &str, stream: &str) -> String {
    format!("strata-ingest/{source}/{stream}")
}

/// Reads the state a stream committed last.
pub async fn load_state(lake: &Lake, source: &str, stream: &StreamDef) -> Result<StreamState> {
    let lake_err = |e: strata_lake::Error| Error::Lake {
        source_name: source.to_string(),
        stream: stream.name.clone(),
        error: Box::new(e),
    };
    if !lake
        .table_exists(&stream.destination)
        .await
        .map_err(lake_err)?
    {
        return Ok(StreamState::default());
    }
    let found = lake
        .find_commit_metadata(&stream.destination, STATE_KEY, |v| {
            v.get("source").and_then(|s| s.as_str()) == Some(source)
                && v.get("stream").and_then(|s| s.as_str()) == Some(stream.name.as_str())
        })
        .await
        .map_err(lake_err)?;
    Ok(match found {
        Some((_, v)) => StreamState {
            cursor: v.get("cursor").and_then(|c| c.as_str()).map(str::to_string),
            runs: v.get("runs").and_then(|r| r.as_i64()).unwrap_or(0),
            saved: v.get("state").filter(|s| !s.is_null()).cloned(),
        },
        None => StreamState::default(),
    })
}

/// Runs one stream: read, evolve the destination, commit rows + state in one commit.
pub async fn run_stream(
    lake: &Lake,
    source: &dyn Source,
    def: &SourceDef,
    stream: &StreamDef,
    opts: &IngestOptions,
    progress: Arc<Progress>,
) -> Result<StreamReport> {
    let started = Instant::now();
    let lake_err = |e: strata_lake::Error| Error::Lake {
        source_name: def.name.clone(),
        stream: stream.name.clone(),
        error: Box::new(e),
    };
    let state = if opts.full_refresh {
        StreamState {
            runs: load_state(lake, &def.name, stream).await?.runs,
            ..Default::default()
        }
    } else {
        load_state(lake, &def.name, stream).await?
    };
    let since = match stream.mode {
        SyncMode::Incremental => state.cursor.clone(),
        _ => None,
    };
    let dest = &stream.destination;
    let rejects_table = rejects_table_of(dest).map_err(|e| Error::config(&def.name, &e))?;
    clear_orphan_rejects(lake, &rejects_table, def, stream, state.runs)
        .await
        .map_err(lake_err)?;
    let report = Arc::new(ReadReport::default());
    let ctx = ReadContext {
        since: since.clone(),
        saved: state.saved.clone(),
        report: Arc::clone(&report),
    };
    let (schema, batches) = source.read(stream, &ctx).await?;
    let exists = lake.table_exists(dest).await.map_err(lake_err)?;

    // Schema changes against the destination.
    let mut added_columns = Vec::new();
    let mut target = dest.clone();
    if exists {
        let current = lake.table_info(dest).await.map_err(lake_err)?.schema;
        let changes = compare_schemas(&current, &schema);
        added_columns = changes.added.clone();
        if !changes.incompatible.is_empty() || !changes.added.is_empty() {
            match stream.on_schema_change {
                SchemaChangePolicy::Evolve if changes.incompatible.is_empty() => {}
                SchemaChangePolicy::Quarantine if !changes.incompatible.is_empty() => {
                    target = TableName::new(&dest.namespace, &format!("{}__quarantine", dest.name))
                        .map_err(|e| Error::config(&def.name, &e.to_string()))?;
                    tracing::warn!(source = %def.name, stream = %stream.name, quarantine = %target, "Incompatible schema change; rows go to quarantine.");
                }
                _ => {
                    let mut what: Vec<String> = changes.incompatible.clone();
                    what.extend(changes.added.iter().map(|c| format!("new column `{c}`")));
                    return Err(Error::Read {
                        source_name: def.name.clone(),
                        stream: Some(stream.name.clone()),
                        message: format!(
                            "the source's columns changed ({}); nothing was written. Set `on_schema_change: evolve` (new columns) or `quarantine`, or reload with --full-refresh",
                            what.join("; ")
                        ),
                    });
                }
            }
        }
    }

    let run_id = uuid::Uuid::new_v4().to_string();
    let cursor_col = stream.cursor.clone();
    let counted = {
        let progress = Arc::clone(&progress);
        batches.map(move |b| {
            if let Ok(b) = &b {
                progress
                    .rows
                    .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                progress
                    .bytes
                    .fetch_add(b.get_array_memory_size() as u64, Ordering::Relaxed);
            }
            b
        })
    };
    // When the source is exhausted, and before the rows are committed, the rejected rows
    // are written (or the stream fails, per its policy).
    let counted = {
        let finish = finish_rejects(
            lake.clone(),
            rejects_table.clone(),
            def.name.clone(),
            stream.clone(),
            state.runs + 1,
            run_id.clone(),
            Arc::clone(&report),
        );
        counted.chain(futures::stream::once(finish).filter_map(|r| async move { r.err().map(Err) }))
    };

    let commit = |cursor: Option<String>, rows: u64| {
        let mut meta = HashMap::new();
        meta.insert(
            STATE_KEY.to_string(),
            serde_json::json!({
                "source": def.name, "stream": stream.name, "cursor": cursor,
                "runs": state.runs + 1, "rows": rows, "run_id": run_id,
                "state": report.state(),
                "rejected": report.rejected_count(),
            }),
        );
        WriteOptions {
            evolve_schema: stream.on_schema_change != SchemaChangePolicy::Fail,
            partition_by: stream.partition_by.clone(),
            transaction: Some((app_id(&def.name, &stream.name), state.runs + 1)),
            commit_metadata: meta,
            description: Some(format!(
                "Loaded by Strata from source `{}`, stream `{}`",
                def.name, stream.name
            )),
            ..Default::default()
        }
    };

    let (version, rows, cursor) = match stream.mode {
        SyncMode::FullRefresh | SyncMode::Append => {
            // Streamed straight into the writer: bounded memory whatever the size.
            let df_stream = RecordBatchStreamAdapter::new(
                Arc::clone(&schema),
                counted.map(|b| b.map_err(|e| DataFusionError::External(Box::new(e)))),
            );
            let mode = if stream.mode == SyncMode::FullRefresh {
                WriteMode::Overwrite
            } else {
                WriteMode::Append
            };
            let out = lake
                .write_stream(
                    &target,
                    Arc::clone(&schema),
                    Box::pin(df_stream),
                    mode,
                    &commit(None, 0),
                )
                .await
                .map_err(|e| unwrap_source_error(e, &def.name, &stream.name))?;
            (Some(out.version), out.rows, None)
        }
        SyncMode::Incremental => {
            // Increments are collected: the cursor must be known before the commit.
            let collected: Vec<RecordBatch> = counted
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_>>()?;
            let rows: u64 = collected.iter().map(|b| b.num_rows() as u64).sum();
            let cursor = cursor_col
                .as_deref()
                .and_then(|c| max_value(&collected, c))
                .or(since.clone());
            // Nothing new, and no connector state or rejected rows to record: no commit.
            let state_moved = report.state().is_some() && report.state() != state.saved;
            if rows == 0 && !state_moved && report.rejected_count() == 0 {
                (None, 0, cursor)
            } else if rows == 0
                || !exists
                || stream.primary_key.is_empty()
                || target != *dest
                || opts.full_refresh
            {
                let mode = if opts.full_refresh && exists && target == *dest {
                    WriteMode::Overwrite
                } else {
                    WriteMode::Append
                };
                let batches = if collected.is_empty() {
                    vec![RecordBatch::new_empty(Arc::clone(&schema))]
                } else {
                    collected
                };
                let out = lake
                    .write_batches(&target, batches, mode, &commit(cursor.clone(), rows))
                    .await
                    .map_err(lake_err)?;
                (Some(out.version), rows, cursor)
            } else {
                let ctx = SessionContext::new();
                let df = ctx
                    .read_batches(collected)
                    .map_err(|e| lake_err(strata_lake::Error::Invalid(e.to_string())))?;
                let key = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
                let on = stream
                    .primary_key
                    .iter()
                    .map(|k| format!("target.{} = source.{}", key(k), key(k)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let all: Vec<(String, String)> = schema
                    .fields()
                    .iter()
                    .map(|f| (key(f.name()), format!("source.{}", key(f.name()))))
                    .collect();
                let mut clauses = Vec::new();
                match &stream.deleted_flag {
                    Some(flag) => {
                        let flag = format!("source.{}", key(flag));
                        clauses.push(MergeClause::MatchedDelete {
                            predicate: Some(flag.clone()),
                        });
                        clauses.push(MergeClause::MatchedUpdate {
                            predicate: None,
                            set: all.clone(),
                        });
                        clauses.push(MergeClause::NotMatchedInsert {
                            predicate: Some(format!("NOT coalesce({flag}, false)")),
                            set: all,
                        });
                    }
                    None => {
                        clauses.push(MergeClause::MatchedUpdate {
                            predicate: None,
                            set: all.clone(),
                        });
                        clauses.push(MergeClause::NotMatchedInsert {
                            predicate: None,
                            set: all,
                        });
                    }
                }
                let out = lake
                    .merge(
                        dest,
                        df,
                        "source",
                        "target",
                        &on,
                        clauses,
                        Arc::new(ctx.state()),
                        &commit(cursor.clone(), rows),
                    )
                    .await
                    .map_err(lake_err)?;
                (Some(out.version), rows, cursor)
            }
        }
    };
    Ok(StreamReport {
        source: def.name.clone(),
        stream: stream.name.clone(),
        destination: target,
        mode: stream.mode,
        rows,
        version,
        cursor,
        added_columns,
        rejected: report.rejected_count(),
        duration: started.elapsed(),
    })
}

/// `<destination>__rejected`.
pub fn rejects_table_of(dest: &TableName) -> std::result::Result<TableName, String> {
    TableName::new(&dest.namespace, &format!("{}__rejected", dest.name)).map_err(|e| e.to_string())
}

fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Rejected rows of a run that never committed (the process died between writing them
/// and committing the rows) are removed, so each rejected row is kept exactly once.
async fn clear_orphan_rejects(
    lake: &Lake,
    rejects: &TableName,
    def: &SourceDef,
    stream: &StreamDef,
    committed_runs: i64,
) -> strata_lake::Result<()> {
    if !lake.table_exists(rejects).await? {
        return Ok(());
    }
    let predicate = format!(
        "source = {} AND stream = {} AND run > {committed_runs}",
        sql_str(&def.name),
        sql_str(&stream.name)
    );
    lake.delete(rejects, Some(&predicate), None).await?;
    Ok(())
}

fn rejects_schema() -> SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, false),
        Field::new("run", DataType::Int64, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("line", DataType::Int64, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new(
            "rejected_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

fn rejects_batch(
    source: &str,
    stream: &str,
    run: i64,
    run_id: &str,
    rows: &[RejectedRow],
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    let n = rows.len();
    let now = chrono::Utc::now().timestamp_micros();
    RecordBatch::try_new(
        rejects_schema(),
        vec![
            Arc::new(StringArray::from(vec![source; n])),
            Arc::new(StringArray::from(vec![stream; n])),
            Arc::new(Int64Array::from(vec![run; n])),
            Arc::new(StringArray::from(vec![run_id; n])),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.location.as_str()),
            )),
            Arc::new(Int64Array::from_iter(
                rows.iter().map(|r| r.line.map(|l| l as i64)),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.reason.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.raw.as_str()),
            )),
            Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        ],
    )
}

/// Applies the stream's bad-rows policy once its source is exhausted: fail, or append the
/// rejected rows (tagged with the run number the rows' commit will carry).
async fn finish_rejects(
    lake: Lake,
    rejects: TableName,
    source: String,
    stream: StreamDef,
    run: i64,
    run_id: String,
    report: Arc<ReadReport>,
) -> Result<()> {
    let rows = report.take_rejected();
    if rows.is_empty() {
        return Ok(());
    }
    let first = &rows[0];
    let where_ = format!(
        "{}{}",
        first.location,
        first.line.map(|l| format!(":{l}")).unwrap_or_default()
    );
    if stream.on_bad_rows == BadRowsPolicy::Fail {
        return Err(Error::Read {
            source_name: source,
            stream: Some(stream.name.clone()),
            message: format!(
                "{} row(s) could not be read, the first at {where_}: {}; nothing was written (set `on_bad_rows: reject` to load the good rows and keep the bad ones in {rejects})",
                rows.len(),
                first.reason
            ),
        });
    }
    tracing::warn!(source = %source, stream = %stream.name, rejected = rows.len(), table = %rejects, "Rows rejected; the first at {where_}: {}", first.reason);
    let lake_err = |e: strata_lake::Error| Error::Lake {
        source_name: source.clone(),
        stream: stream.name.clone(),
        error: Box::new(e),
    };
    let batch = rejects_batch(&source, &stream.name, run, &run_id, &rows)
        .map_err(|e| lake_err(strata_lake::Error::Invalid(e.to_string())))?;
    let opts = WriteOptions {
        description: Some(
            "Rows Strata could not load, with the file/line and the reason".to_string(),
        ),
        ..Default::default()
    };
    lake.write_batches(&rejects, vec![batch], WriteMode::Append, &opts)
        .await
        .map_err(lake_err)?;
    Ok(())
}

/// A read error that surfaced inside the writer is reported as the read error it is.
fn unwrap_source_error(e: strata_lake::Error, source: &str, stream: &str) -> Error {
    Error::Lake {
        source_name: source.to_string(),
        stream: stream.to_string(),
        error: Box::new(e),
    }
}

#[derive(Debug, Default)]
struct SchemaChanges {
    added: Vec<String>,
    incompatible: Vec<String>,
}

fn compare_schemas(current: &SchemaRef, incoming: &SchemaRef) -> SchemaChanges {
    let mut c = SchemaChanges::default();
    for f in incoming.fields() {
        match current.field_with_name(f.name()) {
            Err(_) => c.added.push(f.name().clone()),
            Ok(existing) => {
                let same = existing.data_type() == f.data_type()
                    || matches!(
                        (existing.data_type(), f.data_type()),
                        (
                            arrow::datatypes::DataType::Utf8View,
                            arrow::datatypes::DataType::Utf8
                        ) | (
                            arrow::datatypes::DataType::Utf8,
                            arrow::datatypes::DataType::Utf8View
                        )
                    );
                if !same {
                    c.incompatible.push(format!(
                        "`{}` changed from {} to {}",
                        f.name(),
                        existing.data_type(),
                        f.data_type()
                    ));
                }
            }
        }
    }
    c
}

/// The largest value of `column` over `batches`, formatted as the source will read it back.
fn max_value(batches: &[RecordBatch], column: &str) -> Option<String> {
    let mut best: Option<ArrayRef> = None;
    for b in batches {
        let Ok(idx) = b.schema().index_of(column) else {
            continue;
        };
        let col = b.column(idx);
        let Ok(cmp) = make_comparator(col.as_ref(), col.as_ref(), SortOptions::default()) else {
            continue;
        };
        let mut max_row: Option<usize> = None;
        for r in 0..col.len() {
            if col.is_null(r) {
                continue;
            }
            if max_row.is_none_or(|m| cmp(r, m).is_gt()) {
                max_row = Some(r);
            }
        }
        let Some(r) = max_row else { continue };
        let candidate = col.slice(r, 1);
        let better = match &best {
            None => true,
            Some(cur) => make_comparator(candidate.as_ref(), cur.as_ref(), SortOptions::default())
                .map(|c| c(0, 0).is_gt())
                .unwrap_or(false),
        };
        if better {
            best = Some(candidate);
        }
    }
    let best = best?;
    let opts = FormatOptions::default();
    let f = ArrayFormatter::try_new(best.as_ref(), &opts).ok()?;
    Some(f.value(0).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn cursor_is_the_maximum_over_batches() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new(
                "at",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let b1 = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(3), None, Some(9)])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1_000_000), Some(5_000_000), None])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let b2 = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(7)])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(2_000_000)]).with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            max_value(&[b1.clone(), b2.clone()], "id").as_deref(),
            Some("9")
        );
        assert_eq!(
            max_value(&[b1, b2], "at").as_deref(),
            Some("1970-01-01T00:00:05Z")
        );
        assert_eq!(max_value(&[], "id"), None);
    }
}
