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
    /// Changes of the source's columns met by this run, and what was done.
    pub schema_changes: Vec<SchemaChange>,
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
    /// Rows the source expects to send (an estimate; 0 when unknown).
    pub expected_rows: AtomicU64,
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
    /// The source's columns (name, Arrow type) at the last load.
    pub columns: Option<Vec<(String, String)>>,
    /// Hashes of the rows at the last cursor value (streams without a primary key).
    pub boundary: Option<Vec<String>>,
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
            columns: v
                .get("columns")
                .and_then(|c| serde_json::from_value(c.clone()).ok()),
            boundary: v
                .get("boundary")
                .and_then(|c| serde_json::from_value(c.clone()).ok()),
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
    progress
        .expected_rows
        .store(report.expected_rows(), Ordering::Relaxed);
    let exists = lake.table_exists(dest).await.map_err(lake_err)?;

    // Schema changes: against the destination's columns, and against the columns the
    // source had at the last load (to notice removed ones).
    let mut changes: Vec<SchemaChange> = Vec::new();
    let mut target = dest.clone();
    let mut cast_to: Option<SchemaRef> = None;
    if exists {
        let current = lake.table_info(dest).await.map_err(lake_err)?.schema;
        let plan = plan_schema_change(&current, &schema, state.columns.as_deref());
        changes = plan.changes;
        let incompatible = changes.iter().any(|c| c.change == ChangeKind::Incompatible);
        let strict_stop = stream.on_schema_change == SchemaChangePolicy::Fail
            && changes.iter().any(|c| c.change != ChangeKind::Removed);
        let mut retype = plan.widen;
        if strict_stop || (incompatible && stream.on_schema_change == SchemaChangePolicy::Fail) {
            for c in &mut changes {
                c.action = "stopped".into();
            }
            let what: Vec<String> = changes.iter().map(SchemaChange::describe).collect();
            return Err(Error::SchemaChanged {
                source_name: def.name.clone(),
                stream: stream.name.clone(),
                message: format!(
                    "the source's columns changed ({}); nothing was written. Set `on_schema_change: evolve` to apply such changes, or reload with --full-refresh",
                    what.join("; ")
                ),
                changes,
            });
        }
        if incompatible && stream.on_schema_change == SchemaChangePolicy::Quarantine {
            target = TableName::new(&dest.namespace, &format!("{}__quarantine", dest.name))
                .map_err(|e| Error::config(&def.name, &e.to_string()))?;
            tracing::warn!(source = %def.name, stream = %stream.name, quarantine = %target, "Incompatible schema change; rows go to quarantine.");
            for c in &mut changes {
                c.action = if c.change == ChangeKind::Incompatible {
                    format!("quarantined: rows went to {target}")
                } else {
                    "not applied: rows went to quarantine".into()
                };
            }
            retype.clear();
        } else if incompatible {
            // evolve: the column becomes text, every old value kept as its text form.
            for c in &mut changes {
                if c.change == ChangeKind::Incompatible {
                    c.action = "retyped to text".into();
                    retype.push((c.column.clone(), arrow::datatypes::DataType::Utf8));
                }
            }
        }
        if !retype.is_empty() {
            let opts = WriteOptions {
                commit_metadata: HashMap::from([(
                    "strata.operation".to_string(),
                    serde_json::json!({"retype": retype.iter().map(|(c, t)| format!("{c}: {t}")).collect::<Vec<_>>(), "source": def.name, "stream": stream.name}),
                )]),
                ..Default::default()
            };
            lake.retype_columns(dest, &retype, &opts)
                .await
                .map_err(lake_err)?;
        }
        if target == *dest {
            // Incoming columns narrower than the table's (or now retyped) are cast up.
            let after: Vec<_> = schema
                .fields()
                .iter()
                .map(|f| {
                    let table_type = retype
                        .iter()
                        .find(|(n, _)| n == f.name())
                        .map(|(_, t)| t.clone())
                        .or_else(|| {
                            current
                                .field_with_name(f.name())
                                .ok()
                                .map(|c| c.data_type().clone())
                        });
                    match table_type {
                        Some(t) if !same_type(&t, f.data_type()) => {
                            arrow::datatypes::Field::new(f.name(), t, true)
                        }
                        _ => f.as_ref().clone(),
                    }
                })
                .collect();
            let after = Arc::new(arrow::datatypes::Schema::new(after));
            if after != schema {
                cast_to = Some(after);
            }
        }
    }
    let added_columns: Vec<String> = changes
        .iter()
        .filter(|c| c.change == ChangeKind::Added && target == *dest)
        .map(|c| c.column.clone())
        .collect();
    let source_columns: Vec<(String, String)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect();
    // Column comments follow the source's (a metadata-only commit when one changed), taken
    // before any cast drops them: the write would fail on two comments for one column.
    if exists && target == *dest {
        let comments: Vec<(String, Option<String>)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.metadata().get("comment").cloned()))
            .collect();
        lake.set_column_comments(dest, &comments)
            .await
            .map_err(lake_err)?;
    }

    let (schema, batches): (SchemaRef, crate::BatchStream) = match cast_to {
        None => (schema, batches),
        Some(to) => {
            let out = Arc::clone(&to);
            let source_name = def.name.clone();
            let stream_name = stream.name.clone();
            (
                to,
                Box::pin(batches.map(move |b| {
                    let b = b?;
                    cast_batch(&b, &out).map_err(|e| Error::Read {
                        source_name: source_name.clone(),
                        stream: Some(stream_name.clone()),
                        message: format!("a value does not fit the table's column type: {e}"),
                    })
                })),
            )
        }
    };

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

    let boundary: std::cell::RefCell<Option<Vec<String>>> = std::cell::RefCell::new(None);
    let commit = |cursor: Option<String>, rows: u64| {
        let mut meta = HashMap::new();
        meta.insert(
            STATE_KEY.to_string(),
            serde_json::json!({
                "source": def.name, "stream": stream.name, "cursor": cursor,
                "runs": state.runs + 1, "rows": rows, "run_id": run_id,
                "state": report.state(),
                "rejected": report.rejected_count(),
                "columns": source_columns,
                "boundary": boundary.borrow().clone(),
            }),
        );
        WriteOptions {
            evolve_schema: stream.on_schema_change != SchemaChangePolicy::Fail,
            partition_by: stream.partition_by.clone(),
            transaction: Some((app_id(&def.name, &stream.name), state.runs + 1)),
            commit_metadata: meta,
            description: Some(stream.description.clone().unwrap_or_else(|| {
                format!(
                    "Loaded by Strata from source `{}`, stream `{}`",
                    def.name, stream.name
                )
            })),
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
            let cursor = cursor_col
                .as_deref()
                .and_then(|c| max_value(&collected, c))
                .or(since.clone());
            // Without a key, rows tied at the last cursor are told apart by their content:
            // the hashes of the rows at the boundary are kept with the cursor, and rows
            // read again at that value are dropped if they were loaded before (as dlt does).
            let collected = match (&cursor_col, stream.primary_key.is_empty()) {
                (Some(c), true) if !opts.full_refresh => {
                    // A multiset: two identical rows at the boundary are two rows.
                    let mut seen: HashMap<&str, usize> = HashMap::new();
                    for h in state.boundary.iter().flatten() {
                        *seen.entry(h.as_str()).or_default() += 1;
                    }
                    let kept = drop_seen_at(&collected, c, since.as_deref(), seen)
                        .map_err(|e| lake_err(strata_lake::Error::Invalid(e.to_string())))?;
                    // Every row at the new last value was read (reads are `>=`), so its
                    // hashes are the whole boundary.
                    let hashes = rows_at(&collected, c, cursor.as_deref())
                        .map_err(|e| lake_err(strata_lake::Error::Invalid(e.to_string())))?;
                    *boundary.borrow_mut() = Some(hashes);
                    kept
                }
                _ => collected,
            };
            let rows: u64 = collected.iter().map(|b| b.num_rows() as u64).sum();
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
        schema_changes: changes,
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

/// What kind of change a column went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new source column: added to the table (older rows read NULL).
    Added,
    /// A source column is gone: kept in the table, NULL from now on.
    Removed,
    /// The source's type got wider without loss (Int32 → Int64, a wider decimal): the
    /// table's column is widened.
    Widened,
    /// The source's type cannot be stored in the column without loss.
    Incompatible,
}

impl ChangeKind {
    /// `added`, `removed`, `widened`, `incompatible`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Widened => "widened",
            ChangeKind::Incompatible => "incompatible",
        }
    }
}

/// A change of a source's columns met by a run, and what the run did about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange {
    /// The column.
    pub column: String,
    /// What changed.
    pub change: ChangeKind,
    /// The table's type before.
    pub from_type: Option<String>,
    /// The source's type now.
    pub to_type: Option<String>,
    /// What was done: `applied`, `kept (NULL from now on)`, `retyped to text`,
    /// `quarantined: …`, `stopped`.
    pub action: String,
}

impl SchemaChange {
    fn new(column: &str, change: ChangeKind, from: Option<String>, to: Option<String>) -> Self {
        let action = match change {
            ChangeKind::Removed => "kept (NULL from now on)",
            _ => "applied",
        };
        Self {
            column: column.to_string(),
            change,
            from_type: from,
            to_type: to,
            action: action.to_string(),
        }
    }

    /// The change and what was done: `` `amount` widened from Int32 to Int64: applied ``.
    pub fn summary(&self) -> String {
        format!("{}: {}", self.describe(), self.action)
    }

    /// One line: `` `amount` widened from Int32 to Int64 ``.
    pub fn describe(&self) -> String {
        match (&self.from_type, &self.to_type) {
            (Some(f), Some(t)) => {
                format!("`{}` {} from {f} to {t}", self.column, self.change.as_str())
            }
            (None, Some(t)) => format!("`{}` {} ({t})", self.column, self.change.as_str()),
            _ => format!("`{}` {}", self.column, self.change.as_str()),
        }
    }
}

struct SchemaPlan {
    changes: Vec<SchemaChange>,
    /// Table columns to widen before writing.
    widen: Vec<(String, arrow::datatypes::DataType)>,
}

fn same_type(a: &arrow::datatypes::DataType, b: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType::*;
    a == b
        || matches!(
            (a, b),
            (Utf8 | Utf8View | LargeUtf8, Utf8 | Utf8View | LargeUtf8)
        )
}

/// How an incoming column type relates to the table's.
#[derive(Debug, PartialEq, Eq)]
enum Fit {
    /// Stored as is, or cast up to the table's wider type without loss.
    Fits,
    /// The table's column must widen to this type first.
    Widen(arrow::datatypes::DataType),
    /// Cannot be stored without loss.
    Incompatible,
}

fn int_rank(t: &arrow::datatypes::DataType) -> Option<u8> {
    use arrow::datatypes::DataType::*;
    // Bits needed as a signed integer.
    Some(match t {
        Int8 => 8,
        UInt8 | Int16 => 16,
        UInt16 | Int32 => 32,
        UInt32 | Int64 => 64,
        _ => return None,
    })
}

fn fit(table: &arrow::datatypes::DataType, incoming: &arrow::datatypes::DataType) -> Fit {
    use arrow::datatypes::DataType::*;
    if same_type(table, incoming) || *incoming == Null {
        return Fit::Fits;
    }
    let signed = |bits: u8| match bits {
        8 => Int8,
        16 => Int16,
        32 => Int32,
        _ => Int64,
    };
    match (table, incoming) {
        // Anything has a text form.
        (Utf8 | Utf8View | LargeUtf8, _) => Fit::Fits,
        (a, b) if int_rank(a).is_some() && int_rank(b).is_some() => {
            let (ra, rb) = (int_rank(a).unwrap_or(64), int_rank(b).unwrap_or(64));
            if ra >= rb && !matches!(a, UInt8 | UInt16 | UInt32 | UInt64) {
                Fit::Fits
            } else {
                Fit::Widen(signed(ra.max(rb)))
            }
        }
        (Float64, Float32 | Float16) => Fit::Fits,
        (Float32 | Float16, Float64) => Fit::Widen(Float64),
        (Float64, b) if int_rank(b).is_some() => Fit::Fits,
        (a, Float32 | Float64) if int_rank(a).is_some() => Fit::Widen(Float64),
        (Decimal128(p1, s1), Decimal128(p2, s2)) => {
            let (p1, s1, p2, s2) = (*p1 as i16, *s1 as i16, *p2 as i16, *s2 as i16);
            let scale = s1.max(s2);
            let int_digits = (p1 - s1).max(p2 - s2);
            if scale + int_digits > 38 {
                Fit::Incompatible
            } else if scale == s1 && int_digits + scale <= p1 {
                Fit::Fits
            } else {
                Fit::Widen(Decimal128((int_digits + scale) as u8, scale as i8))
            }
        }
        (Decimal128(p, s), b) if int_rank(b).is_some() => {
            let digits = match int_rank(b).unwrap_or(64) {
                8 => 3,
                16 => 5,
                32 => 10,
                _ => 19,
            };
            if (*p as i16 - *s as i16) >= digits {
                Fit::Fits
            } else if digits + (*s as i16) <= 38 {
                Fit::Widen(Decimal128((digits + *s as i16) as u8, *s))
            } else {
                Fit::Incompatible
            }
        }
        (Timestamp(u1, tz1), Date32) if tz1.is_none() => {
            let _ = u1;
            Fit::Fits
        }
        (Date32, Timestamp(u, None)) => Fit::Widen(Timestamp(*u, None)),
        (Timestamp(u1, tz1), Timestamp(u2, tz2)) if tz1 == tz2 => {
            // Finer units are wider (microseconds hold every millisecond).
            let rank = |u: &arrow::datatypes::TimeUnit| match u {
                arrow::datatypes::TimeUnit::Second => 0,
                arrow::datatypes::TimeUnit::Millisecond => 1,
                arrow::datatypes::TimeUnit::Microsecond => 2,
                arrow::datatypes::TimeUnit::Nanosecond => 3,
            };
            if rank(u1) >= rank(u2) {
                Fit::Fits
            } else {
                Fit::Widen(Timestamp(*u2, tz2.clone()))
            }
        }
        _ => Fit::Incompatible,
    }
}

fn plan_schema_change(
    current: &SchemaRef,
    incoming: &SchemaRef,
    previous: Option<&[(String, String)]>,
) -> SchemaPlan {
    let mut changes = Vec::new();
    let mut widen = Vec::new();
    for f in incoming.fields() {
        match current.field_with_name(f.name()) {
            Err(_) => changes.push(SchemaChange::new(
                f.name(),
                ChangeKind::Added,
                None,
                Some(f.data_type().to_string()),
            )),
            Ok(existing) => match fit(existing.data_type(), f.data_type()) {
                Fit::Fits => {}
                Fit::Widen(t) => {
                    changes.push(SchemaChange::new(
                        f.name(),
                        ChangeKind::Widened,
                        Some(existing.data_type().to_string()),
                        Some(t.to_string()),
                    ));
                    widen.push((f.name().clone(), t));
                }
                Fit::Incompatible => changes.push(SchemaChange::new(
                    f.name(),
                    ChangeKind::Incompatible,
                    Some(existing.data_type().to_string()),
                    Some(f.data_type().to_string()),
                )),
            },
        }
    }
    // Removed since the last load (reported once, the run it disappears).
    for (name, ty) in previous.unwrap_or_default() {
        if incoming.field_with_name(name).is_err() && current.field_with_name(name).is_ok() {
            changes.push(SchemaChange::new(
                name,
                ChangeKind::Removed,
                Some(ty.clone()),
                None,
            ));
        }
    }
    SchemaPlan { changes, widen }
}

fn cast_batch(
    b: &RecordBatch,
    to: &SchemaRef,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let cols = b
        .columns()
        .iter()
        .zip(to.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                arrow::compute::cast_with_options(
                    c,
                    f.data_type(),
                    &arrow::compute::CastOptions {
                        safe: false,
                        ..Default::default()
                    },
                )
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(to), cols)
}

/// A row's content hash (FNV-1a over its values' text forms): stable across runs and
/// builds, which is all a boundary check needs.
fn row_hashes(b: &RecordBatch) -> std::result::Result<Vec<String>, arrow::error::ArrowError> {
    let opts = FormatOptions::default().with_null("\u{0}NULL");
    let fmts = b
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((0..b.num_rows())
        .map(|r| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for f in &fmts {
                for byte in f.value(r).to_string().bytes().chain([0x1f]) {
                    h ^= u64::from(byte);
                    h = h.wrapping_mul(0x0100_0000_01b3);
                }
            }
            format!("{h:016x}")
        })
        .collect())
}

/// The text form of `column` in each row (None for NULL), as the cursor is stored.
fn cursor_texts(
    b: &RecordBatch,
    column: &str,
) -> std::result::Result<Vec<Option<String>>, arrow::error::ArrowError> {
    let col = b.column(b.schema().index_of(column)?);
    let f = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())?;
    Ok((0..col.len())
        .map(|r| (!col.is_null(r)).then(|| f.value(r).to_string()))
        .collect())
}

/// `batches` without the rows at cursor value `at` loaded before: each hash in `seen`
/// drops as many rows as its count.
fn drop_seen_at(
    batches: &[RecordBatch],
    column: &str,
    at: Option<&str>,
    mut seen: HashMap<&str, usize>,
) -> std::result::Result<Vec<RecordBatch>, arrow::error::ArrowError> {
    let Some(at) = at else {
        return Ok(batches.to_vec());
    };
    if seen.is_empty() {
        return Ok(batches.to_vec());
    }
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let cursors = cursor_texts(b, column)?;
        if !cursors.iter().any(|c| c.as_deref() == Some(at)) {
            out.push(b.clone());
            continue;
        }
        let hashes = row_hashes(b)?;
        let keep: arrow::array::BooleanArray = cursors
            .iter()
            .zip(&hashes)
            .map(|(c, h)| {
                if c.as_deref() != Some(at) {
                    return Some(true);
                }
                match seen.get_mut(h.as_str()) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        Some(false)
                    }
                    _ => Some(true),
                }
            })
            .collect();
        out.push(arrow::compute::filter_record_batch(b, &keep)?);
    }
    Ok(out)
}

/// Hashes of the rows whose cursor is `at`.
fn rows_at(
    batches: &[RecordBatch],
    column: &str,
    at: Option<&str>,
) -> std::result::Result<Vec<String>, arrow::error::ArrowError> {
    let Some(at) = at else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for b in batches {
        let cursors = cursor_texts(b, column)?;
        if !cursors.iter().any(|c| c.as_deref() == Some(at)) {
            continue;
        }
        let hashes = row_hashes(b)?;
        out.extend(
            cursors
                .into_iter()
                .zip(hashes)
                .filter(|(c, _)| c.as_deref() == Some(at))
                .map(|(_, h)| h),
        );
    }
    Ok(out)
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
