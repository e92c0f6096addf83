//! `strata docs generate` (dbt's `manifest.json`, `catalog.json` and `run_results.json`
//! in `target/`) and the hooks of a dbt project: a node's `pre-hook`/`post-hook` and the
//! project's `on-run-start`/`on-run-end`, rendered with Jinja and run on the lake.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{Map, Value, json};
use strata_engine::datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use strata_engine::{Session, StatementResult};
use strata_lake::TableName;
use strata_models::{Manifest, Node, ResourceType};

use crate::Ctx;
use crate::models_cmd::ModelArgs;

/// `strata docs …`.
#[derive(Debug, Subcommand)]
pub(crate) enum DocsCommand {
    /// Write target/manifest.json, target/catalog.json (the columns, types and sizes of
    /// every built model, seed, snapshot and source) and target/run_results.json.
    #[command(
        after_help = "Examples:\n  strata docs generate\n  strata docs generate --no-compile\n  strata docs generate --select marts"
    )]
    Generate {
        #[command(flatten)]
        args: ModelArgs,
        /// Keep the compiled SQL out: the manifest holds the raw code only.
        #[arg(long)]
        no_compile: bool,
    },
}

const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// `strata docs generate`.
pub(crate) async fn generate(
    ctx: &Ctx,
    project: Option<&Path>,
    args: &ModelArgs,
    no_compile: bool,
) -> Result<()> {
    let started = Instant::now();
    let (manifest, order) = crate::models_cmd::load(project, args)?;
    let target = manifest.project.root.join("target");
    let ids: Vec<String> = order
        .iter()
        .filter(|id| !id.starts_with("source."))
        .cloned()
        .collect();
    let compiled = if no_compile {
        Default::default()
    } else {
        let compiled = manifest.compile_all(&ids)?;
        strata_models::write_compiled(&manifest, &compiled, &target)
            .context("writing compiled SQL")?;
        compiled
    };
    let manifest_path = strata_models::write_manifest(&manifest, &compiled, &target)?;
    for line in manifest.renderer.take_logs() {
        eprintln!("{line}");
    }
    if !ctx.quiet {
        println!("Building catalog");
    }
    let session = ctx.engine.session().await?;
    // Sources are never selected as nodes; the catalog lists every one the lake holds.
    let mut described = order.clone();
    described.extend(
        manifest
            .nodes
            .keys()
            .filter(|id| id.starts_with("source.") && !order.contains(id))
            .cloned(),
    );
    let catalog = catalog(&manifest, &session, &described).await?;
    let catalog_path = target.join("catalog.json");
    std::fs::write(
        &catalog_path,
        serde_json::to_string_pretty(&catalog)? + "\n",
    )
    .with_context(|| format!("writing {}", catalog_path.display()))?;
    let results: Vec<Value> = compiled
        .keys()
        .map(|id| {
            json!({
                "status": "success",
                "timing": [],
                "thread_id": "Thread-1",
                "execution_time": 0.0,
                "adapter_response": {},
                "message": null,
                "failures": null,
                "unique_id": id,
                "compiled": true,
                "relation_name": manifest.nodes.get(id)
                    .filter(|n| n.resource_type != ResourceType::Test)
                    .map(|n| n.relation.render()),
            })
        })
        .collect();
    let run_results = json!({
        "metadata": metadata(&manifest, "run-results/v6"),
        "results": results,
        "elapsed_time": started.elapsed().as_secs_f64(),
        "args": {"which": "generate", "compile": !no_compile},
    });
    let results_path = target.join("run_results.json");
    std::fs::write(
        &results_path,
        serde_json::to_string_pretty(&run_results)? + "\n",
    )
    .with_context(|| format!("writing {}", results_path.display()))?;
    if !ctx.quiet {
        let count = |key: &str| catalog[key].as_object().map_or(0, Map::len);
        println!(
            "Catalog written to {} ({} node(s), {} source(s)); manifest at {}",
            catalog_path.display(),
            count("nodes"),
            count("sources"),
            manifest_path.display()
        );
    }
    Ok(())
}

fn metadata(manifest: &Manifest, schema: &str) -> Value {
    json!({
        "dbt_schema_version": format!("https://schemas.getdbt.com/dbt/{schema}.json"),
        "dbt_version": "1.9.0",
        "generated_at": manifest.generated_at.format(TIME_FORMAT).to_string(),
        "invocation_id": manifest.invocation_id,
        "env": {},
    })
}

/// dbt's catalog (v1): every selected relation that exists in the lake, with its columns
/// in order and, for tables, row count and bytes.
async fn catalog(manifest: &Manifest, session: &Session, ids: &[String]) -> Result<Value> {
    let lake = session.lake();
    let mut nodes = Map::new();
    let mut sources = Map::new();
    for id in ids {
        let Some(n) = manifest.nodes.get(id) else {
            continue;
        };
        let wanted = match n.resource_type {
            ResourceType::Model => n.materialized() != "ephemeral",
            ResourceType::Seed | ResourceType::Snapshot | ResourceType::Source => true,
            _ => false,
        };
        if !wanted {
            continue;
        }
        let Ok(t) = TableName::new(&n.relation.schema, &n.relation.identifier) else {
            continue;
        };
        let (kind, stats) = if lake.table_exists(&t).await? {
            let info = lake.table_info(&t).await?;
            ("BASE TABLE", table_stats(info.rows, info.bytes))
        } else if lake.view(&t).await?.is_some() {
            ("VIEW", no_stats())
        } else {
            continue;
        };
        let schema = relation_schema(session, n).await?;
        let columns: Map<String, Value> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                (
                    f.name().clone(),
                    json!({
                        "type": sql_type(f.data_type()),
                        "index": i + 1,
                        "name": f.name(),
                        "comment": null,
                    }),
                )
            })
            .collect();
        let entry = json!({
            "metadata": {
                "type": kind,
                "schema": n.relation.schema,
                "name": n.relation.identifier,
                "database": n.relation.database,
                "comment": null,
                "owner": null,
            },
            "columns": columns,
            "stats": stats,
            "unique_id": n.unique_id,
        });
        if n.resource_type == ResourceType::Source {
            sources.insert(n.unique_id.clone(), entry);
        } else {
            nodes.insert(n.unique_id.clone(), entry);
        }
    }
    Ok(json!({
        "metadata": metadata(manifest, "catalog/v1"),
        "nodes": nodes,
        "sources": sources,
        "errors": null,
    }))
}

async fn relation_schema(session: &Session, n: &Node) -> Result<SchemaRef> {
    let sql = format!("SELECT * FROM {} LIMIT 0", n.relation.render());
    for stmt in session.parse(&sql)? {
        if let StatementResult::Rows { schema, .. } = session
            .execute(stmt)
            .await
            .with_context(|| format!("reading the columns of {}", n.relation.render()))?
        {
            return Ok(schema);
        }
    }
    anyhow::bail!("{} returned no schema", n.relation.render())
}

fn stat(id: &str, label: &str, value: Value, include: bool, description: &str) -> Value {
    json!({
        "id": id,
        "label": label,
        "value": value,
        "include": include,
        "description": description,
    })
}

fn table_stats(rows: u64, bytes: u64) -> Value {
    json!({
        "row_count": stat("row_count", "Row Count", json!(rows), true, "Number of rows in the table"),
        "bytes": stat("bytes", "Approximate Size", json!(bytes), true, "Size of the table's live data files in bytes"),
        "has_stats": stat("has_stats", "Has Stats?", json!(true), false, "Indicates whether there are statistics for this table"),
    })
}

fn no_stats() -> Value {
    json!({
        "has_stats": stat("has_stats", "Has Stats?", json!(false), false, "Indicates whether there are statistics for this table"),
    })
}

/// The SQL name of a column type, as a warehouse's information schema shows it.
fn sql_type(t: &DataType) -> String {
    match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BLOB".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE".into(),
        DataType::Timestamp(TimeUnit::Second, None) => "TIMESTAMP_S".into(),
        DataType::Timestamp(TimeUnit::Millisecond, None) => "TIMESTAMP_MS".into(),
        DataType::Timestamp(TimeUnit::Nanosecond, None) => "TIMESTAMP_NS".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "TIMESTAMP".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("{}[]", sql_type(f.data_type()))
        }
        DataType::Struct(fields) => format!(
            "STRUCT({})",
            fields
                .iter()
                .map(|f| format!("{} {}", f.name(), sql_type(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        DataType::Dictionary(_, v) => sql_type(v),
        other => other.to_string().to_uppercase(),
    }
}

/// Which hooks of a node to run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HookPhase {
    Pre,
    Post,
}

/// Runs a node's `pre-hook` or `post-hook` statements, each rendered with `this`.
pub(crate) async fn run_node_hooks(
    manifest: &Manifest,
    session: &Session,
    n: &Node,
    phase: HookPhase,
) -> Result<()> {
    let key = match phase {
        HookPhase::Pre => "pre-hook",
        HookPhase::Post => "post-hook",
    };
    let hooks: Vec<String> = match n.config.get(key) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|h| match h {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("sql").and_then(Value::as_str).map(str::to_string),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    for (i, hook) in hooks.iter().enumerate() {
        let name = format!("{} ({key} {})", n.original_file_path, i + 1);
        let sql = manifest.render_hook(Some(&n.unique_id), &name, hook)?;
        execute_hook(session, &name, &sql).await?;
    }
    Ok(())
}

/// Runs the project's `on-run-start` or `on-run-end` hooks.
pub(crate) async fn run_project_hooks(
    manifest: &Manifest,
    session: &Session,
    end: bool,
) -> Result<usize> {
    let (key, hooks) = if end {
        ("on-run-end", &manifest.project.on_run_end)
    } else {
        ("on-run-start", &manifest.project.on_run_start)
    };
    for (i, hook) in hooks.iter().enumerate() {
        let name = format!("dbt_project.yml ({key} {})", i + 1);
        let sql = manifest.render_hook(None, &name, hook)?;
        execute_hook(session, &name, &sql).await?;
    }
    Ok(hooks.len())
}

async fn execute_hook(session: &Session, name: &str, sql: &str) -> Result<()> {
    if sql.trim().is_empty() {
        return Ok(());
    }
    for stmt in session
        .parse(sql)
        .with_context(|| format!("{name}: parsing the hook"))?
    {
        if let StatementResult::Rows { stream, .. } = session
            .execute(stmt)
            .await
            .with_context(|| format!("{name}: running the hook"))?
        {
            strata_engine::datafusion::physical_plan::common::collect(stream).await?;
        }
    }
    Ok(())
}

/// How a run schedules its nodes: `--threads` and `--fail-fast`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parallelism {
    /// Nodes running at once (at least one).
    pub(crate) threads: usize,
    /// Start no node after the first failure.
    pub(crate) fail_fast: bool,
}

/// Runs `nodes` (in a valid order) with up to `threads` at once: a node starts when every
/// node it waits on (`waits`, restricted to the nodes of this run) finished successfully;
/// one waiting on a failed or skipped node is skipped. With `fail_fast`, no node starts
/// after the first failure and the rest are skipped. `finished` gets each node's outcome
/// as soon as it is known (a skipped node gets `skipped()`), with its elapsed time.
pub(crate) async fn schedule<'a, O, Fut>(
    nodes: Vec<&'a Node>,
    waits: &std::collections::BTreeMap<&str, std::collections::BTreeSet<String>>,
    parallelism: Parallelism,
    execute: impl Fn(&'a Node) -> Fut,
    is_failure: impl Fn(&O) -> bool,
    skipped: impl Fn() -> O,
    mut finished: impl FnMut(&'a Node, O, std::time::Duration),
) where
    Fut: std::future::Future<Output = O>,
{
    use futures::StreamExt;
    use std::collections::BTreeSet;

    let present: BTreeSet<&str> = nodes.iter().map(|n| n.unique_id.as_str()).collect();
    let mut succeeded: BTreeSet<&str> = BTreeSet::new();
    let mut broken: BTreeSet<&str> = BTreeSet::new();
    let mut pending: std::collections::VecDeque<&'a Node> = nodes.into_iter().collect();
    let mut running = futures::stream::FuturesUnordered::new();
    let mut stop = false;
    let Parallelism { threads, fail_fast } = parallelism;
    let threads = threads.max(1);
    loop {
        // Start (or skip) whatever is ready, in the incoming order.
        let mut i = 0;
        while i < pending.len() {
            let n = pending[i];
            let deps: Vec<&str> = waits
                .get(n.unique_id.as_str())
                .into_iter()
                .flatten()
                .map(String::as_str)
                .filter(|w| present.contains(w))
                .collect();
            if stop || deps.iter().any(|d| broken.contains(d)) {
                pending.remove(i);
                broken.insert(n.unique_id.as_str());
                finished(n, skipped(), std::time::Duration::ZERO);
                continue;
            }
            if running.len() < threads && deps.iter().all(|d| succeeded.contains(d)) {
                pending.remove(i);
                let fut = execute(n);
                running.push(async move {
                    let start = Instant::now();
                    let out = fut.await;
                    (n, out, start.elapsed())
                });
                continue;
            }
            i += 1;
        }
        let Some((n, out, elapsed)) = running.next().await else {
            break;
        };
        if is_failure(&out) {
            broken.insert(n.unique_id.as_str());
            stop |= fail_fast;
        } else {
            succeeded.insert(n.unique_id.as_str());
        }
        finished(n, out, elapsed);
    }
    // Nothing left can start (only when `waits` names a node that never runs).
    for n in pending {
        finished(n, skipped(), std::time::Duration::ZERO);
    }
}
