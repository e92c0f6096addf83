//! The dbt-compatible modeling layer's commands: `strata compile` and `strata ls` (no
//! warehouse needed), `strata seed`, `strata run` (views, tables, incremental tables),
//! `strata test` and `strata build` (executed by the engine on the lake).
//!
//! Execution lives here, not in `strata-models`, which renders text and never depends on
//! the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDateTime, Utc};
use clap::{Args, ValueEnum};
use strata_engine::datafusion::arrow::array::{Array, BooleanArray, Int64Array, RecordBatch};
use strata_engine::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use strata_engine::datafusion::prelude::{CsvReadOptions, SessionContext};
use strata_engine::{Session, StatementResult};
use strata_lake::{Lake, TableName, WriteMode, WriteOptions};
use strata_models::select::{SelectContext, select};
use strata_models::{CompileOptions, LoadOptions, Manifest, Node, ResourceType};

use crate::{Ctx, models_errors};

/// Options shared by commands that read a dbt project.
#[derive(Debug, Args)]
pub(crate) struct ModelArgs {
    /// Nodes to include (dbt syntax: `+orders`, `tag:daily`, `path:models/marts`, …).
    #[arg(long, short = 's', num_args = 1.., value_name = "SELECTOR")]
    select: Vec<String>,
    /// Nodes to leave out (same syntax).
    #[arg(long, num_args = 1.., value_name = "SELECTOR")]
    exclude: Vec<String>,
    /// A selector of `selectors.yml`.
    #[arg(long)]
    selector: Option<String>,
    /// Variables as YAML or JSON, overriding `vars:` of dbt_project.yml.
    #[arg(long)]
    vars: Option<String>,
    /// Folder of a previous run's `manifest.json` (and `run_results.json`) for
    /// `state:` and `result:` selection.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// The target schema models land in (custom schemas become `<target>_<custom>`).
    #[arg(long, default_value = strata_models::DEFAULT_TARGET_SCHEMA)]
    target_schema: String,
    /// How many nodes run at once (`run`, `build`, `test`, `seed`, `snapshot`).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Stop starting nodes after the first failure; the rest are reported as skipped.
    #[arg(long)]
    fail_fast: bool,
    /// Keep every test's failing rows in a table `<target>_dbt_test__audit.<test>`, as
    /// `store_failures: true` does for one test.
    #[arg(long)]
    store_failures: bool,
    /// Microbatch models: first event time to (re)build, `2024-01-01` or
    /// `2024-01-01 06:00:00` (UTC); default: `begin` on a first build, else the last batch
    /// less `lookback`.
    #[arg(long, value_name = "TIME", value_parser = parse_event_time)]
    event_time_start: Option<NaiveDateTime>,
    /// Microbatch models: event time to build up to, exclusive (default: now).
    #[arg(long, value_name = "TIME", value_parser = parse_event_time)]
    event_time_end: Option<NaiveDateTime>,
}

/// `2024-01-01`, `2024-01-01 06:00:00`, `2024-01-01T06:00:00` or RFC 3339 (converted to
/// UTC).
fn parse_event_time(s: &str) -> std::result::Result<NaiveDateTime, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.naive_utc());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t);
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_time(chrono::NaiveTime::MIN))
        .map_err(|_| format!("`{s}` is not a time: use 2024-01-01 or 2024-01-01 06:00:00"))
}

/// `strata ls --output`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LsOutput {
    /// dbt's selector form: `jaffle_shop.staging.stg_orders`, `source:jaffle_shop.shop.events`.
    Selector,
    /// Node names.
    Name,
    /// File paths.
    Path,
    /// One JSON object per line.
    Json,
}

/// Finds the folder holding `dbt_project.yml`: `--project`, or the current directory and
/// its parents.
fn project_root(project: Option<&Path>) -> Result<PathBuf> {
    let start = match project {
        Some(p) => p.to_path_buf(),
        None => std::env::current_dir()?,
    };
    let mut dir = Some(start.as_path());
    while let Some(d) = dir {
        if d.join(strata_models::DBT_PROJECT_FILE).is_file() {
            return Ok(d.to_path_buf());
        }
        dir = d.parent();
    }
    anyhow::bail!(
        "no dbt_project.yml in {} or any parent directory; run inside a dbt project or pass --project <dir>",
        start.display()
    )
}

pub(crate) fn load(project: Option<&Path>, args: &ModelArgs) -> Result<(Manifest, Vec<String>)> {
    load_selected(project, args, false)
}

/// Loads the project and orders the selected nodes. With `attached_tests` (`test` and
/// `build`), the tests of a selected node come along unless excluded, as with dbt's eager
/// indirect selection.
fn load_selected(
    project: Option<&Path>,
    args: &ModelArgs,
    attached_tests: bool,
) -> Result<(Manifest, Vec<String>)> {
    let root = project_root(project)?;
    let opts = LoadOptions {
        vars: args.vars.clone(),
        target_schema: args.target_schema.clone(),
        ..LoadOptions::default()
    };
    let manifest = Manifest::load(&root, &opts)?;
    // `result:` reads the previous run's `run_results.json` from `--state`, else `target/`.
    let wants_results = args
        .select
        .iter()
        .chain(&args.exclude)
        .flat_map(|s| s.split([' ', ',']))
        .any(|s| s.trim_start_matches(['+', '@']).starts_with("result:"));
    let state_dir = match &args.state {
        Some(d) => Some(d.clone()),
        None if wants_results => Some(root.join("target")),
        None => None,
    };
    let ctx = SelectContext::load(&root, state_dir.as_deref())?;
    let mut sel = args.select.clone();
    if let Some(s) = &args.selector {
        sel.push(format!("selector:{s}"));
    }
    let mut chosen = select(&manifest, &sel, &args.exclude, &ctx)?;
    if attached_tests && !sel.is_empty() {
        let excluded = if args.exclude.is_empty() {
            BTreeSet::new()
        } else {
            select(&manifest, &args.exclude, &[], &ctx)?
        };
        let attached: Vec<String> = manifest
            .nodes
            .values()
            .filter(|n| n.resource_type == ResourceType::Test && !excluded.contains(&n.unique_id))
            .filter(|n| {
                manifest
                    .parent_map
                    .get(&n.unique_id)
                    .into_iter()
                    .flatten()
                    .any(|p| chosen.contains(p))
            })
            .map(|n| n.unique_id.clone())
            .collect();
        chosen.extend(attached);
    }
    let order: Vec<String> = manifest
        .topo_order()?
        .into_iter()
        .filter(|id| chosen.contains(id))
        .chain(
            chosen
                .iter()
                .filter(|id| id.starts_with("source."))
                .cloned(),
        )
        .collect();
    Ok((manifest, order))
}

/// `strata compile`: renders the selected nodes, writes `target/compiled/…` and
/// `target/manifest.json`.
pub(crate) fn compile(project: Option<&Path>, args: &ModelArgs, quiet: bool) -> Result<()> {
    let (manifest, order) = load(project, args)?;
    let ids: Vec<String> = order
        .into_iter()
        .filter(|id| !id.starts_with("source."))
        .collect();
    let compiled = manifest.compile_all(&ids)?;
    let target = manifest.project.root.join("target");
    let files = strata_models::write_compiled(&manifest, &compiled, &target)
        .context("writing compiled SQL")?;
    let path = strata_models::write_manifest(&manifest, &compiled, &target)?;
    for line in manifest.renderer.take_logs() {
        eprintln!("{line}");
    }
    if !quiet {
        println!(
            "Compiled {} node(s) of {} into {} ({} file(s)); manifest at {}",
            compiled.len(),
            manifest.project.name,
            target.join("compiled").display(),
            files.len(),
            path.display()
        );
    }
    Ok(())
}

/// `strata ls`: lists the selected nodes.
pub(crate) fn ls(
    project: Option<&Path>,
    args: &ModelArgs,
    resource_types: &[String],
    output: LsOutput,
) -> Result<()> {
    let (manifest, order) = load(project, args)?;
    let mut wanted = Vec::new();
    for rt in resource_types {
        wanted.push(ResourceType::parse(rt).with_context(|| {
            format!(
                "unknown resource type `{rt}`; use model, seed, snapshot, test, source or analysis"
            )
        })?);
    }
    let mut ids = order;
    ids.sort();
    for id in ids {
        let n = &manifest.nodes[&id];
        if !wanted.is_empty() && !wanted.contains(&n.resource_type) {
            continue;
        }
        let line = match output {
            LsOutput::Selector => match n.resource_type {
                ResourceType::Source => format!(
                    "source:{}.{}.{}",
                    n.package_name,
                    n.source_name.as_deref().unwrap_or_default(),
                    n.name
                ),
                _ => n.fqn.join("."),
            },
            LsOutput::Name => n.name.clone(),
            LsOutput::Path => n.original_file_path.clone(),
            LsOutput::Json => serde_json::json!({
                "name": n.name,
                "resource_type": n.resource_type.as_str(),
                "package_name": n.package_name,
                "original_file_path": n.original_file_path,
                "unique_id": n.unique_id,
                "alias": n.relation.identifier,
                "config": n.config,
                "tags": n.config.tags(),
                "depends_on": n.depends_on,
            })
            .to_string(),
        };
        println!("{line}");
    }
    Ok(())
}

/// How one node of a run ended.
enum Outcome {
    /// Built: rows written (tables and seeds).
    Pass(Option<u64>),
    /// A data test ran: its verdict, failing rows, and the threshold that judged them.
    Test(Verdict, u64, String),
    /// Failed with this message.
    Error(String),
    /// Not run because an upstream node failed.
    Skip,
}

/// A data test's verdict, from its `severity` and `warn_if`/`error_if` thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Warn,
    Fail,
}

/// Counts and failures of a `seed`, `run`, `test` or `build`, printed in dbt's style.
struct Report {
    quiet: bool,
    total: usize,
    done: usize,
    pass: usize,
    warn: usize,
    skip: usize,
    failures: Vec<(String, String, String)>,
    warnings: Vec<(String, String, String)>,
    rows: u64,
    started: Instant,
    /// One dbt `run_results.json` entry per node, written into `target/` by `finish`.
    results: Vec<serde_json::Value>,
    /// Where `run_results.json` goes, with the invocation it records.
    run_results: Option<RunResultsTarget>,
}

/// A `run_results.json` entry as the metadata store keeps it.
fn node_result(r: &serde_json::Value) -> strata_meta::NodeResult {
    let text = |k: &str| r.get(k).and_then(|v| v.as_str()).map(str::to_string);
    strata_meta::NodeResult {
        unique_id: text("unique_id").unwrap_or_default(),
        status: text("status").unwrap_or_default(),
        rows: r
            .get("adapter_response")
            .and_then(|a| a.get("rows_affected"))
            .and_then(|v| v.as_i64()),
        failures: r.get("failures").and_then(|v| v.as_i64()),
        execution_ms: r
            .get("execution_time")
            .and_then(|v| v.as_f64())
            .map_or(0, |s| (s * 1000.0).round() as i64),
        message: text("message"),
    }
}

/// Where and for which invocation `run_results.json` is written.
struct RunResultsTarget {
    path: PathBuf,
    invocation_id: String,
    generated_at: chrono::DateTime<chrono::Utc>,
    args: serde_json::Value,
}

impl RunResultsTarget {
    fn new(manifest: &Manifest, command: &str, args: &ModelArgs) -> Self {
        RunResultsTarget {
            path: manifest
                .project
                .root
                .join("target")
                .join("run_results.json"),
            invocation_id: manifest.invocation_id.clone(),
            generated_at: manifest.generated_at,
            args: serde_json::json!({
                "which": command,
                "select": args.select,
                "exclude": args.exclude,
                "selector": args.selector,
                "vars": args.vars,
                "state": args.state.as_ref().map(|p| p.display().to_string()),
            }),
        }
    }
}

impl Report {
    fn new(quiet: bool, total: usize) -> Self {
        Report {
            quiet,
            total,
            done: 0,
            pass: 0,
            warn: 0,
            skip: 0,
            failures: Vec::new(),
            warnings: Vec::new(),
            rows: 0,
            started: Instant::now(),
            results: Vec::new(),
            run_results: None,
        }
    }

    fn with_run_results(mut self, target: RunResultsTarget) -> Self {
        self.run_results = Some(target);
        self
    }

    /// Adds the node's entry to `run_results.json`, in dbt's shape (run-results v6).
    fn push_result(
        &mut self,
        n: &Node,
        outcome: &Outcome,
        started: DateTime<Utc>,
        elapsed: Duration,
    ) {
        let (status, message, rows, failures) = match outcome {
            Outcome::Pass(rows) => {
                let word = match n.resource_type {
                    ResourceType::Seed => "INSERT",
                    ResourceType::Snapshot => "SNAPSHOT",
                    _ if rows.is_some() => "CREATE TABLE",
                    _ => "CREATE VIEW",
                };
                let msg = match rows {
                    Some(r) => format!("{word} {r}"),
                    None => word.to_string(),
                };
                ("success", Some(msg), *rows, serde_json::Value::Null)
            }
            Outcome::Test(v, count, condition) => {
                let status = match v {
                    Verdict::Pass => "pass",
                    Verdict::Warn => "warn",
                    Verdict::Fail => "fail",
                };
                let msg = (*v != Verdict::Pass).then(|| {
                    if crate::models_checks::is_unit_test(n) {
                        return condition.clone();
                    }
                    format!(
                        "Got {count} result{}, configured to {status} if {condition}",
                        if *count == 1 { "" } else { "s" }
                    )
                });
                (status, msg, None, serde_json::json!(count))
            }
            Outcome::Error(m) => ("error", Some(m.clone()), None, serde_json::Value::Null),
            Outcome::Skip => ("skipped", None, None, serde_json::Value::Null),
        };
        let ended = started + chrono::Duration::from_std(elapsed).unwrap_or_default();
        let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let timing = if matches!(outcome, Outcome::Skip) {
            serde_json::json!([])
        } else {
            serde_json::json!([
                {"name": "compile", "started_at": fmt(started), "completed_at": fmt(started)},
                {"name": "execute", "started_at": fmt(started), "completed_at": fmt(ended)},
            ])
        };
        let mut adapter_response = serde_json::Map::new();
        if let Some(r) = rows {
            adapter_response.insert("_message".into(), serde_json::json!(message));
            adapter_response.insert("rows_affected".into(), serde_json::json!(r));
        }
        self.results.push(serde_json::json!({
            "status": status,
            "timing": timing,
            "thread_id": "Thread-1",
            "execution_time": elapsed.as_secs_f64(),
            "adapter_response": adapter_response,
            "message": message,
            "failures": failures,
            "unique_id": n.unique_id,
            "compiled": n.resource_type != ResourceType::Seed,
            "relation_name": (n.resource_type != ResourceType::Test).then(|| n.relation.render()),
        }));
    }

    /// Writes `target/run_results.json` when this report has a target.
    fn write_run_results(&self) -> Result<()> {
        let Some(t) = &self.run_results else {
            return Ok(());
        };
        let doc = serde_json::json!({
            "metadata": {
                "dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json",
                "dbt_version": "1.9.0",
                "generated_at": t.generated_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                "invocation_id": t.invocation_id,
                "env": {},
            },
            "results": self.results,
            "elapsed_time": self.started.elapsed().as_secs_f64(),
            "args": t.args,
        });
        if let Some(dir) = t.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&t.path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", t.path.display()))
    }

    /// Prints one node's result line: `3 of 12 OK created table model analytics.orders … [1.20s, 10,431 rows]`
    /// or `4 of 12 FAIL 3 not_null_orders_id … [FAIL 3 in 0.05s]`.
    fn record(&mut self, kind: &str, n: &Node, outcome: &Outcome, elapsed: Duration) {
        let started = Utc::now() - chrono::Duration::from_std(elapsed).unwrap_or_default();
        self.push_result(n, outcome, started, elapsed);
        self.done += 1;
        let is_test = n.resource_type == ResourceType::Test;
        let relation = n.relation.render();
        let secs = elapsed.as_secs_f64();
        let what_failed = format!("{} {}", n.resource_type.as_str(), n.name);
        let (what, status) = match outcome {
            Outcome::Pass(rows) => {
                self.pass += 1;
                self.rows += rows.unwrap_or(0);
                let status = match rows {
                    Some(r) => format!("[{secs:.2}s, {} rows]", thousands(*r)),
                    None => format!("[{secs:.2}s]"),
                };
                let what = if n.resource_type == ResourceType::Snapshot {
                    format!("OK snapshotted {relation}")
                } else {
                    format!("OK created {kind} {relation}")
                };
                (what, status)
            }
            Outcome::Test(Verdict::Pass, _, _) => {
                self.pass += 1;
                (format!("PASS {}", n.name), format!("[PASS in {secs:.2}s]"))
            }
            Outcome::Test(verdict, count, condition) => {
                let (word, verb) = if *verdict == Verdict::Warn {
                    self.warn += 1;
                    ("WARN", "warn")
                } else {
                    ("FAIL", "fail")
                };
                let entry = if crate::models_checks::is_unit_test(n) {
                    let name = n.name.split_once("::").map_or(&*n.name, |(_, t)| t);
                    (
                        format!("unit_test {name}"),
                        n.original_file_path.clone(),
                        condition.clone(),
                    )
                } else {
                    (
                        what_failed,
                        n.original_file_path.clone(),
                        format!(
                            "Got {} result{}, configured to {verb} if {condition}",
                            thousands(*count),
                            if *count == 1 { "" } else { "s" }
                        ),
                    )
                };
                if *verdict == Verdict::Warn {
                    self.warnings.push(entry);
                } else {
                    self.failures.push(entry);
                }
                (
                    format!("{word} {count} {}", n.name),
                    format!("[{word} {count} in {secs:.2}s]"),
                )
            }
            Outcome::Error(message) => {
                self.failures
                    .push((what_failed, n.original_file_path.clone(), message.clone()));
                let what = if is_test {
                    format!("ERROR {}", n.name)
                } else {
                    format!("ERROR creating {kind} {relation}")
                };
                (what, format!("[ERROR in {secs:.2}s]"))
            }
            Outcome::Skip => {
                self.skip += 1;
                let what = if is_test {
                    format!("SKIP test {}", n.name)
                } else {
                    format!("SKIP relation {relation}")
                };
                (what, "[SKIP]".to_string())
            }
        };
        if !self.quiet {
            let head = format!("{} of {} {what} ", self.done, self.total);
            let dots = ".".repeat(RESULT_COLUMN.saturating_sub(head.chars().count()).max(3));
            println!("{head}{dots} {status}");
        }
    }

    /// Prints the failures, warnings and the `Done. PASS=…` line; an error when anything
    /// failed.
    fn finish(&self, ctx: &Ctx, noun: &str) -> Result<Option<i64>> {
        self.write_run_results()?;
        ctx.node_results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(self.results.iter().map(node_result));
        let errors = self.failures.len();
        let warnings = self.warnings.len();
        if !self.quiet {
            println!(
                "\nFinished running {} {noun}(s) in {:.2}s.",
                self.total,
                self.started.elapsed().as_secs_f64()
            );
        }
        if errors > 0 || warnings > 0 {
            let plural =
                |k: usize, word: &str| format!("{k} {word}{}", if k == 1 { "" } else { "s" });
            let head = match (errors, warnings) {
                (0, w) => plural(w, "warning"),
                (e, 0) => plural(e, "error"),
                (e, w) => format!("{} and {}", plural(e, "error"), plural(w, "warning")),
            };
            println!("\nCompleted with {head}:");
            for (what, path, message) in &self.failures {
                println!("\nFailure in {what} ({path})");
                for line in message.lines() {
                    println!("  {line}");
                }
            }
            for (what, path, message) in &self.warnings {
                println!("\nWarning in {what} ({path})");
                for line in message.lines() {
                    println!("  {line}");
                }
            }
        }
        println!(
            "\nDone. PASS={} WARN={} ERROR={errors} SKIP={} TOTAL={}",
            self.pass, self.warn, self.skip, self.total
        );
        if errors > 0 {
            anyhow::bail!(
                "{errors} of {} {noun}(s) failed, {} skipped",
                self.total,
                self.skip
            );
        }
        Ok(Some(self.rows as i64))
    }
}

/// Where result brackets start, as in dbt's output.
const RESULT_COLUMN: usize = 72;

/// `10431` → `10,431`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn lake_name(n: &Node) -> Result<TableName> {
    Ok(TableName::new(&n.relation.schema, &n.relation.identifier)?)
}

/// `strata seed`: loads the selected seeds' CSV files into `<schema>.<seed>` tables, each
/// replaced atomically (one commit holding the new rows and columns).
pub(crate) async fn seed(ctx: &Ctx, project: Option<&Path>, args: &ModelArgs) -> Result<()> {
    let (manifest, order) = load(project, args)?;
    let seeds: Vec<&Node> = order
        .iter()
        .map(|id| &manifest.nodes[id])
        .filter(|n| n.resource_type == ResourceType::Seed)
        .collect();
    ctx.recorded("seed", &args.describe(), || async {
        if !ctx.quiet {
            println!("Found {} seed(s)\n", seeds.len());
        }
        let lake = ctx.engine.lake();
        let mut report = Report::new(ctx.quiet, seeds.len())
            .with_run_results(RunResultsTarget::new(&manifest, "seed", args));
        for n in seeds {
            let start = Instant::now();
            let outcome = match load_seed(lake, n).await {
                Ok(rows) => Outcome::Pass(Some(rows)),
                Err(e) => Outcome::Error(crate::render_error(&e)),
            };
            report.record("seed file", n, &outcome, start.elapsed());
        }
        report.finish(ctx, "seed")
    })
    .await
}

/// Reads one seed's CSV (types inferred, `column_types` applied) and replaces its table.
async fn load_seed(lake: &Lake, n: &Node) -> Result<u64> {
    let path = n.package_root.join(&n.original_file_path);
    let file = path
        .to_str()
        .with_context(|| format!("{} is not a UTF-8 path", path.display()))?;
    let delimiter = match n.config.get_str("delimiter") {
        None => b',',
        Some(d) if d.len() == 1 => d.as_bytes()[0],
        Some(d) => anyhow::bail!(
            "{}: `delimiter` must be one character, not `{d}`",
            n.original_file_path
        ),
    };
    let column_types: Vec<(String, String)> = match n.config.get("column_types") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(t) => Ok((k.clone(), t.to_string())),
                None => anyhow::bail!(
                    "{}: `column_types.{k}` must be a SQL type name such as `varchar` or `decimal(10,2)`",
                    n.original_file_path
                ),
            })
            .collect::<Result<_>>()?,
        Some(_) => anyhow::bail!(
            "{}: `column_types` must map column names to SQL types",
            n.original_file_path
        ),
    };
    let df_ctx = SessionContext::new();
    let inferred = df_ctx
        .read_csv(
            file,
            CsvReadOptions::new().has_header(true).delimiter(delimiter),
        )
        .await
        .with_context(|| format!("reading seed {}", n.original_file_path))?;
    let inferred: Schema = inferred.schema().as_arrow().clone();
    for (col, _) in &column_types {
        if inferred.field_with_name(col).is_err() {
            anyhow::bail!(
                "{}: `column_types` names `{col}`, which is not a column of the file (columns: {})",
                n.original_file_path,
                inferred
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    // Columns with a declared type are read as text, then cast: inference never gets to
    // turn `00123` into 123 first.
    let read_schema = Schema::new(
        inferred
            .fields()
            .iter()
            .map(|f| {
                if column_types.iter().any(|(c, _)| c == f.name()) {
                    Field::new(f.name(), DataType::Utf8, true)
                } else {
                    f.as_ref().clone().with_nullable(true)
                }
            })
            .collect::<Vec<_>>(),
    );
    df_ctx
        .register_csv(
            "seed",
            file,
            CsvReadOptions::new()
                .has_header(true)
                .delimiter(delimiter)
                .schema(&read_schema),
        )
        .await?;
    let select: Vec<String> = read_schema
        .fields()
        .iter()
        .map(|f| {
            let col = quote_ident(f.name());
            match column_types.iter().find(|(c, _)| c == f.name()) {
                Some((_, ty)) => format!("CAST({col} AS {ty}) AS {col}"),
                None => col,
            }
        })
        .collect();
    let sql = format!("SELECT {} FROM seed", select.join(", "));
    let df = df_ctx
        .sql(&sql)
        .await
        .with_context(|| format!("{}: applying `column_types`", n.original_file_path))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut batches = df
        .collect()
        .await
        .with_context(|| format!("reading seed {}", n.original_file_path))?;
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    let t = lake_name(n)?;
    lake.create_namespace(&t.namespace).await?;
    if lake.view(&t).await?.is_some() {
        lake.drop_view(&t).await?;
    }
    let (mode, opts) = if lake.table_exists(&t).await? {
        (
            WriteMode::Overwrite,
            WriteOptions {
                replace_schema: true,
                ..Default::default()
            },
        )
    } else {
        (WriteMode::Create, WriteOptions::default())
    };
    let out = lake.write_batches(&t, batches, mode, &opts).await?;
    Ok(out.rows)
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `strata show`: previews rows of the selected models (their compiled queries run with a
/// limit over the current upstream relations, so the model need not be built) or of an
/// inline query that may use `ref` and `source`.
pub(crate) async fn show(
    ctx: &Ctx,
    project: Option<&Path>,
    args: &ModelArgs,
    inline: Option<&str>,
    limit: usize,
) -> Result<()> {
    if inline.is_none() && args.select.is_empty() && args.selector.is_none() {
        anyhow::bail!("`strata show` needs `--select <model>` or `--inline \"select …\"`");
    }
    let (manifest, order) = load(project, args)?;
    let session = ctx.engine.session().await?;
    manifest.set_query_runner(SessionQueries::shared(&session));
    let mut queries: Vec<(String, String)> = Vec::new();
    match inline {
        Some(q) => queries.push((
            "inline query".into(),
            manifest.render_hook(None, "inline query", q)?,
        )),
        None => {
            for id in &order {
                let n = &manifest.nodes[id];
                let sql = match n.resource_type {
                    ResourceType::Seed => format!("select * from {}", n.relation.render()),
                    ResourceType::Model | ResourceType::Snapshot | ResourceType::Analysis => {
                        manifest.compile_node(id, &CompileOptions::default())?
                    }
                    _ => continue,
                };
                queries.push((format!("node '{}'", n.name), sql));
            }
        }
    }
    if queries.is_empty() {
        anyhow::bail!("the selection holds no model, seed, snapshot or analysis to show");
    }
    for (title, sql) in queries {
        let body = sql.trim().trim_end_matches(';').trim_end();
        let limited = format!("select * from (\n{body}\n) as dbt_show limit {limit}");
        let batches = session
            .sql(&limited)
            .await
            .with_context(|| format!("previewing {title}"))?;
        if ctx.json {
            println!("{}", crate::output::json_array(&batches)?);
            continue;
        }
        println!("Previewing {title}:");
        match batches.first() {
            Some(first) => println!(
                "{}\n",
                crate::output::render_table(&first.schema(), &batches)?
            ),
            None => println!("(no rows)\n"),
        }
    }
    Ok(())
}

/// `strata run`: builds the selected models in DAG order. A failed model skips everything
/// downstream of it; the others still run.
pub(crate) async fn run(
    ctx: &Ctx,
    project: Option<&Path>,
    args: &ModelArgs,
    full_refresh: bool,
) -> Result<()> {
    let (manifest, order) = load(project, args)?;
    let models: Vec<&Node> = order
        .iter()
        .map(|id| &manifest.nodes[id])
        .filter(|n| n.resource_type == ResourceType::Model && n.materialized() != "ephemeral")
        .collect();
    let found = {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for n in &models {
            *counts.entry(n.materialized()).or_default() += 1;
        }
        let kinds: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        format!("Found {} model(s) ({})", models.len(), kinds.join(", "))
    };
    let exec = Execution {
        manifest: &manifest,
        full_refresh,
        noun: "model",
        found,
        command: "run",
        args,
    };
    ctx.recorded("run", &args.describe_with(full_refresh), || {
        exec.run(ctx, models)
    })
    .await
}

/// `strata test`: runs the selected data tests (generic and singular); a test fails when
/// its query returns rows, and warns instead under `severity: warn` or `warn_if`.
pub(crate) async fn test(ctx: &Ctx, project: Option<&Path>, args: &ModelArgs) -> Result<()> {
    let (manifest, order) = load_selected(project, args, true)?;
    let units =
        crate::models_checks::unit_test_nodes(&manifest, &order, &args.select, &args.exclude);
    let tests: Vec<&Node> = order
        .iter()
        .map(|id| &manifest.nodes[id])
        .filter(|n| n.resource_type == ResourceType::Test)
        .chain(&units)
        .collect();
    let found = format!("Found {} test(s)", tests.len());
    let exec = Execution {
        manifest: &manifest,
        full_refresh: false,
        noun: "test",
        found,
        command: "test",
        args,
    };
    ctx.recorded("test", &args.describe(), || exec.run(ctx, tests))
        .await
}

/// `strata snapshot`: runs the selected snapshots (SCD type 2 tables).
pub(crate) async fn snapshot(ctx: &Ctx, project: Option<&Path>, args: &ModelArgs) -> Result<()> {
    let (manifest, order) = load(project, args)?;
    let snapshots: Vec<&Node> = order
        .iter()
        .map(|id| &manifest.nodes[id])
        .filter(|n| n.resource_type == ResourceType::Snapshot)
        .collect();
    let found = format!("Found {} snapshot(s)", snapshots.len());
    let exec = Execution {
        manifest: &manifest,
        full_refresh: false,
        noun: "snapshot",
        found,
        command: "snapshot",
        args,
    };
    ctx.recorded("snapshot", &args.describe(), || exec.run(ctx, snapshots))
        .await
}

/// `strata build`: seeds, models and tests in DAG order. A test runs before the models
/// downstream of what it tests; when it fails, they are skipped.
pub(crate) async fn build(
    ctx: &Ctx,
    project: Option<&Path>,
    args: &ModelArgs,
    full_refresh: bool,
) -> Result<()> {
    let (manifest, order) = load_selected(project, args, true)?;
    let units =
        crate::models_checks::unit_test_nodes(&manifest, &order, &args.select, &args.exclude);
    let nodes: Vec<&Node> = order
        .iter()
        .map(|id| &manifest.nodes[id])
        .filter(|n| match n.resource_type {
            ResourceType::Seed | ResourceType::Test | ResourceType::Snapshot => true,
            ResourceType::Model => n.materialized() != "ephemeral",
            _ => false,
        })
        .chain(&units)
        .collect();
    let count = |rt: ResourceType| nodes.iter().filter(|n| n.resource_type == rt).count();
    let found = format!(
        "Found {} seed(s), {} model(s), {} snapshot(s), {} test(s)",
        count(ResourceType::Seed),
        count(ResourceType::Model),
        count(ResourceType::Snapshot),
        count(ResourceType::Test)
    );
    let exec = Execution {
        manifest: &manifest,
        full_refresh,
        noun: "node",
        found,
        command: "build",
        args,
    };
    ctx.recorded("build", &args.describe_with(full_refresh), || {
        exec.run(ctx, nodes)
    })
    .await
}

/// One `run`, `test` or `build`: up to `--threads` nodes execute at once, each after
/// everything it waits on; a failed or skipped node skips everything waiting on it.
struct Execution<'a> {
    manifest: &'a Manifest,
    full_refresh: bool,
    noun: &'static str,
    found: String,
    /// The command, as recorded in `run_results.json`.
    command: &'static str,
    args: &'a ModelArgs,
}

impl<'a> Execution<'a> {
    async fn run(&self, ctx: &Ctx, nodes: Vec<&'a Node>) -> Result<Option<i64>> {
        if !ctx.quiet {
            println!("{}\n", self.found);
        }
        let manifest = self.manifest;
        let (nodes, waits) = gated_order(manifest, nodes);
        let session = ctx.engine.session().await?;
        manifest.set_query_runner(SessionQueries::shared(&session));
        let run_dir = manifest.project.root.join("target").join("run");
        crate::models_docs::run_project_hooks(manifest, &session, false).await?;
        let mut report = Report::new(ctx.quiet, nodes.len())
            .with_run_results(RunResultsTarget::new(manifest, self.command, self.args));
        let kind = |n: &Node| match n.resource_type {
            ResourceType::Seed => "seed file".to_string(),
            ResourceType::Test => "test".to_string(),
            ResourceType::Snapshot => "snapshot".to_string(),
            _ => format!("{} model", n.materialized()),
        };
        let relations = crate::lineage_cmd::relation_nodes(manifest);
        let (session, run_dir, relations) = (&session, run_dir.as_path(), &relations);
        crate::models_docs::schedule(
            nodes,
            &waits,
            crate::models_docs::Parallelism {
                threads: usize::from(self.args.threads),
                fail_fast: self.args.fail_fast,
            },
            |n: &'a Node| async move {
                let result = match n.resource_type {
                    ResourceType::Seed => load_seed(session.lake(), n)
                        .await
                        .map(|r| Outcome::Pass(Some(r))),
                    ResourceType::Test if crate::models_checks::is_unit_test(n) => {
                        crate::models_checks::run_unit_test(manifest, session, n)
                            .await
                            .map(|diff| match diff {
                                None => Outcome::Test(Verdict::Pass, 0, String::new()),
                                Some((count, text)) => Outcome::Test(Verdict::Fail, count, text),
                            })
                    }
                    ResourceType::Test => {
                        { run_test(manifest, session, n, run_dir, self.args.store_failures).await }
                            .map(|(v, count, cond)| Outcome::Test(v, count, cond))
                    }
                    ResourceType::Snapshot => build_snapshot(manifest, session, n, run_dir)
                        .await
                        .map(Outcome::Pass),
                    _ => {
                        let built = build_model(
                            manifest,
                            session,
                            n,
                            run_dir,
                            self.full_refresh,
                            self.args,
                        )
                        .await
                        .map(Outcome::Pass);
                        if built.is_ok() {
                            record_lineage(ctx, manifest, session, n, relations).await;
                        }
                        built
                    }
                };
                result.unwrap_or_else(|e| Outcome::Error(crate::render_error(&e)))
            },
            |o| {
                matches!(
                    o,
                    Outcome::Error(_) | Outcome::Skip | Outcome::Test(Verdict::Fail, _, _)
                )
            },
            || Outcome::Skip,
            |n, outcome, elapsed| report.record(&kind(n), n, &outcome, elapsed),
        )
        .await;
        crate::models_docs::run_project_hooks(manifest, session, true).await?;
        for line in manifest.renderer.take_logs() {
            eprintln!("{line}");
        }
        // As dbt, every command leaves the project's manifest for `--state` and tools.
        strata_models::write_manifest(
            manifest,
            &BTreeMap::new(),
            &manifest.project.root.join("target"),
        )?;
        report.finish(ctx, self.noun)
    }
}

/// Keeps a built model's column-level lineage for the metadata store (written with the
/// run's node results). A model whose lineage cannot be computed keeps its old entry.
async fn record_lineage(
    ctx: &Ctx,
    manifest: &Manifest,
    session: &Session,
    n: &Node,
    relations: &BTreeMap<String, String>,
) {
    match crate::lineage_cmd::model_lineage(manifest, session, n, relations).await {
        Ok((_, edges)) => ctx
            .lineage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((n.unique_id.clone(), edges)),
        Err(e) => {
            tracing::warn!(model = %n.unique_id, error = %format!("{e:#}"), "No column lineage for the model.")
        }
    }
}

/// Orders `nodes` so that each test runs before the nodes downstream of everything it
/// tests (dbt's test edges in `build`), and returns, for every node, the nodes it waits on.
fn gated_order<'a>(
    manifest: &Manifest,
    nodes: Vec<&'a Node>,
) -> (Vec<&'a Node>, BTreeMap<&'a str, BTreeSet<String>>) {
    let mut waits: BTreeMap<&'a str, BTreeSet<String>> = nodes
        .iter()
        .map(|n| (n.unique_id.as_str(), ancestors(manifest, &n.unique_id)))
        .collect();
    crate::models_checks::gate_unit_tests(manifest, &nodes, &mut waits);
    let tests: Vec<(&str, Vec<String>)> = nodes
        .iter()
        .filter(|n| n.resource_type == ResourceType::Test)
        .map(|n| {
            let parents = manifest
                .parent_map
                .get(&n.unique_id)
                .into_iter()
                .flatten()
                .filter(|p| !p.starts_with("source."))
                .cloned()
                .collect();
            (n.unique_id.as_str(), parents)
        })
        .collect();
    for n in &nodes {
        if n.resource_type == ResourceType::Test {
            continue;
        }
        let id = n.unique_id.as_str();
        let gating: Vec<String> = tests
            .iter()
            .filter(|(_, parents)| {
                !parents.is_empty() && parents.iter().all(|p| waits[id].contains(p))
            })
            .map(|(t, _)| t.to_string())
            .collect();
        waits
            .get_mut(id)
            .expect("every node has an entry")
            .extend(gating);
    }
    // Kahn's algorithm, keeping the incoming (topological) order among ready nodes.
    let present: BTreeSet<&str> = nodes.iter().map(|n| n.unique_id.as_str()).collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut pending = nodes;
    let mut ordered = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|n| {
                waits[n.unique_id.as_str()]
                    .iter()
                    .all(|w| !present.contains(w.as_str()) || done.contains(w.as_str()))
            })
            .unwrap_or(0);
        let n = pending.remove(ready);
        done.insert(n.unique_id.as_str());
        ordered.push(n);
    }
    (ordered, waits)
}

/// How a test keeps its failing rows: `store_failures` / `store_failures_as` (`table`,
/// `view`; `ephemeral` keeps none), or every test's with `--store-failures`.
fn store_failures_as(n: &Node, all: bool) -> Option<&'static str> {
    match n.config.get_str("store_failures_as") {
        Some(s) if s.eq_ignore_ascii_case("table") => return Some("TABLE"),
        Some(s) if s.eq_ignore_ascii_case("view") => return Some("VIEW"),
        Some(_) => return None,
        None => {}
    }
    match n.config.get("store_failures") {
        Some(serde_json::Value::Bool(b)) => b.then_some("TABLE"),
        _ => all.then_some("TABLE"),
    }
}

/// The table name a test's failing rows are kept under: its name in lower case (the lake's
/// names are), shortened past 63 characters with a hash of the whole name so that two
/// long names stay apart.
fn audit_name(test: &str) -> String {
    let lower = test.to_lowercase();
    if lower.len() <= 63 {
        return lower;
    }
    // FNV-1a: stable across builds and platforms.
    let hash = lower.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let head: String = lower.chars().take(46).collect();
    format!("{head}_{hash:016x}")
}

/// Runs one data test: the count of failing rows (`fail_calc`) judged by `warn_if` and
/// `error_if` (dbt's `get_test_sql`), then by `severity`. With `store_failures`, the
/// failing rows are first kept in the test's audit relation and counted from there.
async fn run_test(
    manifest: &Manifest,
    session: &Session,
    n: &Node,
    run_dir: &Path,
    store_all: bool,
) -> Result<(Verdict, u64, String)> {
    let compiled = manifest.compile_node(&n.unique_id, &CompileOptions::default())?;
    let body = compiled.trim().trim_end_matches(';').trim_end();
    let stored = match store_failures_as(n, store_all) {
        Some(kind) => {
            let t = TableName::new(&n.relation.schema, &audit_name(&n.relation.identifier))?;
            let relation = t.to_string();
            session.lake().create_namespace(&t.namespace).await?;
            let (exists_other, drop) = if kind == "TABLE" {
                (session.lake().view(&t).await?.is_some(), "VIEW")
            } else {
                (session.lake().table_exists(&t).await?, "TABLE")
            };
            if exists_other {
                session.sql(&format!("DROP {drop} {relation}")).await?;
            }
            session
                .sql(&format!("CREATE OR REPLACE {kind} {relation} AS\n{body}"))
                .await
                .with_context(|| {
                    format!(
                        "{}: storing the test's failing rows in {relation}",
                        n.original_file_path
                    )
                })?;
            Some(relation)
        }
        None => None,
    };
    let body = match &stored {
        Some(relation) => format!("select * from {relation}"),
        None => body.to_string(),
    };
    let body = body.as_str();
    let cfg = |key: &str, default: &str| -> String {
        match n.config.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(x)) => x.to_string(),
            _ => default.to_string(),
        }
    };
    let fail_calc = cfg("fail_calc", "count(*)");
    let warn_if = cfg("warn_if", "!= 0");
    let error_if = cfg("error_if", "!= 0");
    let limit = match n.config.get("limit") {
        Some(serde_json::Value::Number(x)) => format!("\nlimit {x}"),
        _ => String::new(),
    };
    let sql = format!(
        "select\n  cast(coalesce({fail_calc}, 0) as bigint) as failures,\n  \
         coalesce(({fail_calc}) {warn_if}, false) as should_warn,\n  \
         coalesce(({fail_calc}) {error_if}, false) as should_error\n\
         from (\n{body}{limit}\n) dbt_internal_test"
    );
    let file = run_dir.join(&n.package_name).join(test_path(n));
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&file, format!("{sql}\n"))
        .with_context(|| format!("writing {}", file.display()))?;
    let shown = file
        .strip_prefix(&manifest.project.root)
        .unwrap_or(&file)
        .display()
        .to_string();
    let batches = session
        .sql(&sql)
        .await
        .map_err(|e| models_errors::locate(n, &sql, &shown, e.into()))?;
    let batch = batches.iter().find(|b| b.num_rows() > 0).with_context(|| {
        format!(
            "{}: the test query returned no summary row",
            n.original_file_path
        )
    })?;
    let failures = batch
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .map(|a| a.value(0))
        .context("`fail_calc` did not give a number")?;
    let flag = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .is_some_and(|a| a.is_valid(0) && a.value(0))
    };
    let (should_warn, should_error) = (flag(1), flag(2));
    let severity_error = !n
        .config
        .get_str("severity")
        .is_some_and(|s| s.eq_ignore_ascii_case("warn"));
    let count = u64::try_from(failures).unwrap_or(0);
    let see = |condition: String| match &stored {
        Some(relation) => format!("{condition}\n\nSee test failures:\n  select * from {relation}"),
        None => condition,
    };
    Ok(if severity_error && should_error {
        (Verdict::Fail, count, see(error_if))
    } else if should_warn {
        (Verdict::Warn, count, see(warn_if))
    } else {
        (Verdict::Pass, count, String::new())
    })
}

/// Where a test's executed SQL is written under `target/run/<package>/`: generic tests
/// beside their property file, named after the test.
fn test_path(n: &Node) -> PathBuf {
    if n.test_metadata.is_some() {
        let base = n
            .patch_path
            .as_deref()
            .unwrap_or(&n.original_file_path)
            .split_once("://")
            .map_or_else(|| n.original_file_path.clone(), |(_, p)| p.to_string());
        PathBuf::from(base).join(format!("{}.sql", n.name))
    } else {
        PathBuf::from(&n.original_file_path)
    }
}

/// Every node upstream of `id`, through ephemeral models too.
fn ancestors(manifest: &Manifest, id: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![id.to_string()];
    while let Some(cur) = stack.pop() {
        for p in manifest.parent_map.get(&cur).into_iter().flatten() {
            if out.insert(p.clone()) {
                stack.push(p.clone());
            }
        }
    }
    out
}

/// Compiles and materializes one model; returns the rows written for tables.
async fn build_model(
    manifest: &Manifest,
    session: &Session,
    n: &Node,
    run_dir: &Path,
    full_refresh: bool,
    args: &ModelArgs,
) -> Result<Option<u64>> {
    let lake = session.lake();
    let t = lake_name(n)?;
    let incremental = n.materialized() == "incremental"
        && !full_refresh
        && !n
            .config
            .get("full_refresh")
            .is_some_and(|v| v == &serde_json::Value::Bool(true))
        && lake.table_exists(&t).await?;
    if n.materialized() == "incremental"
        && n.config.get_str("incremental_strategy") == Some("microbatch")
    {
        return build_microbatch(manifest, session, n, run_dir, incremental, args)
            .await
            .map(Some);
    }
    let compiled = manifest.compile_node(
        &n.unique_id,
        &CompileOptions {
            is_incremental: incremental,
            ..Default::default()
        },
    )?;
    let body = compiled.trim().trim_end_matches(';').trim_end();
    let relation = n.relation.render();
    let (sql, is_table) = match n.materialized() {
        "incremental" if incremental => (incremental_sql(session, n, &relation, body).await?, true),
        "incremental" => (
            format!("CREATE OR REPLACE TABLE {relation} AS\n{body}"),
            true,
        ),
        "view" => (
            format!("CREATE OR REPLACE VIEW {relation} AS\n{body}"),
            false,
        ),
        "table" => (
            format!("CREATE OR REPLACE TABLE {relation} AS\n{body}"),
            true,
        ),
        other => anyhow::bail!(
            "{}: materialization `{other}` is not supported by `strata run`; use `view`, `table`, `incremental` or `ephemeral`",
            n.original_file_path
        ),
    };
    crate::models_checks::check_contract(session, n, body).await?;
    let file = run_dir.join(&n.package_name).join(&n.original_file_path);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&file, format!("{sql}\n"))
        .with_context(|| format!("writing {}", file.display()))?;
    lake.create_namespace(&t.namespace).await?;
    let shown = file
        .strip_prefix(&manifest.project.root)
        .unwrap_or(&file)
        .display()
        .to_string();
    // A model that changed materialization replaces the other kind of relation; its query
    // is planned first so that a broken model leaves the old relation in place.
    let other_kind = if is_table {
        lake.view(&t).await?.is_some()
    } else {
        lake.table_exists(&t).await?
    };
    if other_kind {
        let explain = format!("EXPLAIN {body}");
        session
            .sql(&explain)
            .await
            .map_err(|e| models_errors::locate(n, &explain, &shown, e.into()))?;
        if is_table {
            lake.drop_view(&t).await?;
        } else {
            lake.drop_table(&t).await?;
        }
    }
    crate::models_docs::run_node_hooks(manifest, session, n, crate::models_docs::HookPhase::Pre)
        .await?;
    let mut rows = None;
    let located = |e: strata_engine::Error| models_errors::locate(n, &sql, &shown, e.into());
    for stmt in session.parse(&sql).map_err(located)? {
        match session.execute(stmt).await.map_err(located)? {
            StatementResult::Done { rows: r, .. } => rows = r,
            StatementResult::Rows { .. } => {}
        }
    }
    crate::models_docs::run_node_hooks(manifest, session, n, crate::models_docs::HookPhase::Post)
        .await?;
    Ok(if is_table { rows.or(Some(0)) } else { None })
}

/// The statements that add an incremental model's new rows to its existing table, by
/// `incremental_strategy`: `append` (INSERT), `merge` (MERGE INTO on `unique_key`),
/// `delete+insert` (rows matching the new keys removed, then the new rows inserted) or
/// `insert_overwrite` (every partition of `partition_by` that the new rows hold replaced).
/// The table's columns first follow the query's by `on_schema_change` (see
/// [`sync_incremental_schema`]).
async fn incremental_sql(
    session: &Session,
    n: &Node,
    relation: &str,
    body: &str,
) -> Result<String> {
    let cols = insert_columns(session, n, relation, body).await?;
    let strategy_set = n.config.get_str("incremental_strategy");
    let key_config = if strategy_set == Some("insert_overwrite") {
        "partition_by"
    } else {
        "unique_key"
    };
    let keys: Vec<String> = match n.config.get(key_config) {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::String(k)) => vec![k.clone()],
        Some(serde_json::Value::Array(ks)) => ks
            .iter()
            .map(|k| {
                k.as_str().map(str::to_string).with_context(|| {
                    format!(
                        "{}: `{key_config}` entries must be column names",
                        n.original_file_path
                    )
                })
            })
            .collect::<Result<_>>()?,
        // dbt-bigquery's form: `partition_by: {field: day, data_type: date}`.
        Some(serde_json::Value::Object(o)) if o.get("field").is_some_and(|f| f.is_string()) => {
            vec![o["field"].as_str().unwrap_or_default().to_string()]
        }
        Some(_) => anyhow::bail!(
            "{}: `{key_config}` must be a column name or a list of column names",
            n.original_file_path
        ),
    };
    let keys: Vec<String> = keys.iter().map(|k| quote_ident(k.trim())).collect();
    let default = if keys.is_empty() {
        "append"
    } else {
        "delete+insert"
    };
    let strategy = strategy_set.unwrap_or(default);
    let col_list = cols.join(", ");
    let insert = format!(
        "INSERT INTO {relation} ({col_list})\nSELECT {col_list} FROM (\n{body}\n) AS dbt_new"
    );
    let on = keys
        .iter()
        .map(|k| format!("dbt_t.{k} = dbt_s.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let need_keys = || -> Result<()> {
        if keys.is_empty() {
            anyhow::bail!(
                "{}: incremental_strategy `{strategy}` needs a `{key_config}`",
                n.original_file_path
            );
        }
        Ok(())
    };
    Ok(match strategy {
        "append" => insert,
        "merge" => {
            need_keys()?;
            let set = cols
                .iter()
                .filter(|c| !keys.contains(c))
                .map(|c| format!("{c} = dbt_s.{c}"))
                .collect::<Vec<_>>();
            let values = cols
                .iter()
                .map(|c| format!("dbt_s.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            let matched = if set.is_empty() {
                String::new()
            } else {
                format!("WHEN MATCHED THEN UPDATE SET {}\n", set.join(", "))
            };
            format!(
                "MERGE INTO {relation} AS dbt_t\nUSING (\n{body}\n) AS dbt_s\nON {on}\n{matched}\
                 WHEN NOT MATCHED THEN INSERT ({col_list}) VALUES ({values})"
            )
        }
        "delete+insert" | "insert_overwrite" => {
            need_keys()?;
            // One MERGE, so one commit and one snapshot: the new rows are read once from
            // the table as it was (a query on `{{ this }}` is not affected by its own
            // deletes), beside one marker row per distinct key. Markers delete the
            // table's rows with their key; the new rows never match and are inserted.
            if let Some(k) = keys.iter().find(|k| !cols.contains(k)) {
                anyhow::bail!(
                    "{}: `{key_config}` names {k}, which is not a column of both the query and {relation}",
                    n.original_file_path
                );
            }
            let markers = cols
                .iter()
                .map(|c| {
                    if keys.contains(c) {
                        c.clone()
                    } else {
                        format!("NULL AS {c}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            let values = cols
                .iter()
                .map(|c| format!("dbt_s.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "MERGE INTO {relation} AS dbt_t\nUSING (\n\
                 SELECT {col_list}, false AS dbt_delete_marker FROM (\n{body}\n) AS dbt_new\n\
                 UNION ALL\n\
                 SELECT DISTINCT {markers}, true AS dbt_delete_marker FROM (\n{body}\n) AS dbt_new\n\
                 ) AS dbt_s\n\
                 ON {on} AND dbt_s.dbt_delete_marker\n\
                 WHEN MATCHED THEN DELETE\n\
                 WHEN NOT MATCHED AND NOT dbt_s.dbt_delete_marker THEN INSERT ({col_list}) VALUES ({values})"
            )
        }
        other => anyhow::bail!(
            "{}: incremental_strategy `{other}` is not supported; use `append`, `merge`, `delete+insert`, `insert_overwrite` or `microbatch`",
            n.original_file_path
        ),
    })
}

/// A microbatch model's `batch_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchSize {
    Hour,
    Day,
    Month,
    Year,
}

impl BatchSize {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "hour" => BatchSize::Hour,
            "day" => BatchSize::Day,
            "month" => BatchSize::Month,
            "year" => BatchSize::Year,
            _ => return None,
        })
    }

    /// The start of the batch holding `t`.
    fn truncate(self, t: NaiveDateTime) -> NaiveDateTime {
        use chrono::{Datelike, NaiveDate, NaiveTime, Timelike};
        let day = |d: NaiveDate| d.and_time(NaiveTime::MIN);
        match self {
            BatchSize::Hour => t
                .with_minute(0)
                .and_then(|t| t.with_second(0))
                .and_then(|t| t.with_nanosecond(0))
                .unwrap_or(t),
            BatchSize::Day => day(t.date()),
            BatchSize::Month => day(t.date().with_day(1).unwrap_or(t.date())),
            BatchSize::Year => day(NaiveDate::from_ymd_opt(t.year(), 1, 1).unwrap_or(t.date())),
        }
    }

    /// `t` moved by `k` batches (negative: back).
    fn step(self, t: NaiveDateTime, k: i32) -> NaiveDateTime {
        let months = |m: i32| {
            let m = chrono::Months::new(m.unsigned_abs());
            if k >= 0 {
                t.checked_add_months(m)
            } else {
                t.checked_sub_months(m)
            }
            .unwrap_or(t)
        };
        match self {
            BatchSize::Hour => t + chrono::Duration::hours(i64::from(k)),
            BatchSize::Day => t + chrono::Duration::days(i64::from(k)),
            BatchSize::Month => months(k),
            BatchSize::Year => months(k * 12),
        }
    }
}

/// Builds a `microbatch` incremental model (dbt 1.9) one time window at a time: each batch
/// compiles the model with its upstream `event_time` relations filtered to the window,
/// then replaces that window of the table (rows whose `event_time` falls in it) with the
/// batch's rows. The first build runs from `begin`; later runs rebuild the current batch
/// and `lookback` batches before it (default 1); `--event-time-start`/`--event-time-end`
/// choose the range, e.g. for a backfill. Returns the rows written.
async fn build_microbatch(
    manifest: &Manifest,
    session: &Session,
    n: &Node,
    run_dir: &Path,
    incremental: bool,
    args: &ModelArgs,
) -> Result<u64> {
    let file = &n.original_file_path;
    let event_time = n.config.get_str("event_time").with_context(|| {
        format!(
            "{file}: a microbatch model needs `event_time`: the column that places its rows in time"
        )
    })?;
    let size = n
        .config
        .get_str("batch_size")
        .and_then(BatchSize::parse)
        .with_context(|| {
            format!("{file}: a microbatch model needs `batch_size`: hour, day, month or year")
        })?;
    let lookback = match n.config.get("lookback") {
        None | Some(serde_json::Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .and_then(|k| i32::try_from(k).ok())
            .with_context(|| format!("{file}: `lookback` must be a number of batches"))?,
    };
    let now = manifest.generated_at.naive_utc();
    let start = match args.event_time_start {
        Some(t) => t,
        None if incremental => size.step(size.truncate(now), -lookback),
        None => {
            let begin = n.config.get_str("begin").with_context(|| {
                format!("{file}: a microbatch model needs `begin` (e.g. '2024-01-01') for its first build")
            })?;
            parse_event_time(begin).map_err(|e| anyhow::anyhow!("{file}: `begin`: {e}"))?
        }
    };
    let end = args.event_time_end.unwrap_or(now);
    if end <= start {
        anyhow::bail!(
            "{file}: the event-time range is empty ({start} to {end}); check `begin`, --event-time-start and --event-time-end"
        );
    }
    let mut windows = Vec::new();
    let mut b = size.truncate(start);
    while b < end {
        let next = size.step(b, 1);
        windows.push((b, next));
        b = next;
    }
    let relation = n.relation.render();
    let t = lake_name(n)?;
    session.lake().create_namespace(&t.namespace).await?;
    let out = run_dir.join(&n.package_name).join(file);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let shown = out
        .strip_prefix(&manifest.project.root)
        .unwrap_or(&out)
        .display()
        .to_string();
    let fmt = |t: NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let mut written = 0;
    let mut all_sql = Vec::new();
    crate::models_docs::run_node_hooks(manifest, session, n, crate::models_docs::HookPhase::Pre)
        .await?;
    for (i, (from, to)) in windows.iter().enumerate() {
        let window = strata_models::EventTimeWindow {
            start: fmt(*from),
            end: fmt(*to),
        };
        let replace_all = i == 0 && !incremental;
        let compiled = manifest.compile_node(
            &n.unique_id,
            &CompileOptions {
                is_incremental: !replace_all,
                event_time_window: Some(window.clone()),
            },
        )?;
        let body = compiled.trim().trim_end_matches(';').trim_end();
        let sql = if replace_all {
            crate::models_checks::check_contract(session, n, body).await?;
            format!("CREATE OR REPLACE TABLE {relation} AS\n{body}")
        } else {
            let col_list = insert_columns(session, n, &relation, body)
                .await?
                .join(", ");
            let et = quote_ident(event_time);
            // Plain string bounds: they coerce to the column's type (a DATE or a
            // TIMESTAMP of any unit) without casting the column.
            format!(
                "DELETE FROM {relation} WHERE {et} >= '{}' AND {et} < '{}';\n\
                 INSERT INTO {relation} ({col_list})\nSELECT {col_list} FROM (\n{body}\n) AS dbt_new",
                window.start, window.end
            )
        };
        all_sql.push(format!(
            "-- batch {} to {}\n{sql};",
            window.start, window.end
        ));
        std::fs::write(&out, all_sql.join("\n\n") + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
        let located = |e: strata_engine::Error| models_errors::locate(n, &sql, &shown, e.into());
        let mut rows = 0;
        for stmt in session.parse(&sql).map_err(located)? {
            if let StatementResult::Done { rows: Some(r), tag } =
                session.execute(stmt).await.map_err(located)?
                && !tag.starts_with("DELETE")
            {
                rows = r;
            }
        }
        written += rows;
    }
    crate::models_docs::run_node_hooks(manifest, session, n, crate::models_docs::HookPhase::Post)
        .await?;
    Ok(written)
}

/// The columns new rows of an incremental model are written to, quoted: after the table
/// follows `on_schema_change`, the table's columns that the query also returns, in the
/// table's order. An error when they share none.
async fn insert_columns(
    session: &Session,
    n: &Node,
    relation: &str,
    body: &str,
) -> Result<Vec<String>> {
    sync_incremental_schema(session, n, relation, body).await?;
    let target = columns_of(session, &format!("SELECT * FROM {relation} LIMIT 0")).await?;
    let source = columns_of(
        session,
        &format!("SELECT * FROM (\n{body}\n) AS dbt_new LIMIT 0"),
    )
    .await
    .with_context(|| format!("{}: planning the incremental query", n.original_file_path))?;
    let cols: Vec<String> = target
        .iter()
        .filter(|c| source.contains(c))
        .map(|c| quote_ident(c))
        .collect();
    if cols.is_empty() {
        anyhow::bail!(
            "{}: the model's query shares no column with {relation} (columns: {})",
            n.original_file_path,
            target.join(", ")
        );
    }
    Ok(cols)
}

/// Brings an incremental model's table in line with its query's columns before new rows
/// are added, by `on_schema_change` (dbt's four settings):
/// - `ignore` (the default): the table keeps its columns; new query columns are left out,
///   removed ones get NULL;
/// - `fail`: any added, removed or retyped column stops the model, the table untouched;
/// - `append_new_columns`: new columns are added (NULL in existing rows), none removed;
/// - `sync_all_columns`: the table takes the query's columns exactly: new ones added,
///   removed ones dropped, changed types cast, in one atomic rewrite.
async fn sync_incremental_schema(
    session: &Session,
    n: &Node,
    relation: &str,
    body: &str,
) -> Result<()> {
    let setting = n.config.get_str("on_schema_change").unwrap_or("ignore");
    if !matches!(
        setting,
        "ignore" | "fail" | "append_new_columns" | "sync_all_columns"
    ) {
        anyhow::bail!(
            "{}: on_schema_change `{setting}` is not one of ignore, fail, append_new_columns, sync_all_columns",
            n.original_file_path
        );
    }
    if setting == "ignore" {
        return Ok(());
    }
    let target =
        crate::models_checks::query_schema(session, &format!("SELECT * FROM {relation} LIMIT 0"))
            .await?;
    let source = crate::models_checks::query_schema(
        session,
        &format!("SELECT * FROM (\n{body}\n) AS dbt_new LIMIT 0"),
    )
    .await
    .with_context(|| format!("{}: planning the incremental query", n.original_file_path))?;
    let added: Vec<&Field> = source
        .fields()
        .iter()
        .filter(|f| target.field_with_name(f.name()).is_err())
        .map(|f| f.as_ref())
        .collect();
    let removed: Vec<&Field> = target
        .fields()
        .iter()
        .filter(|f| source.field_with_name(f.name()).is_err())
        .map(|f| f.as_ref())
        .collect();
    let retyped: Vec<(&Field, &Field)> = source
        .fields()
        .iter()
        .filter_map(|f| {
            let t = target.field_with_name(f.name()).ok()?;
            (!crate::models_checks::same_type(t.data_type(), f.data_type()))
                .then_some((t, f.as_ref()))
        })
        .collect();
    if added.is_empty() && removed.is_empty() && retyped.is_empty() {
        return Ok(());
    }
    let ty = |f: &Field| crate::models_checks::sql_type(f.data_type());
    let names = |fs: &[&Field]| -> String {
        fs.iter()
            .map(|f| format!("{} {}", f.name(), ty(f)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let t = lake_name(n)?;
    match setting {
        "fail" => {
            let mut lines = vec![format!(
                "{}: the columns of the query and of {relation} differ, and on_schema_change is `fail`:",
                n.original_file_path
            )];
            if !added.is_empty() {
                lines.push(format!("  new in the query: {}", names(&added)));
            }
            if !removed.is_empty() {
                lines.push(format!("  gone from the query: {}", names(&removed)));
            }
            for (old, new) in &retyped {
                lines.push(format!(
                    "  retyped: {} {} -> {}",
                    new.name(),
                    ty(old),
                    ty(new)
                ));
            }
            lines.push(
                "The table is unchanged. Use `on_schema_change: append_new_columns` or `sync_all_columns`, or rebuild it with `--full-refresh`.".into(),
            );
            anyhow::bail!(lines.join("\n"))
        }
        "append_new_columns" => {
            if !added.is_empty() {
                let schema = Arc::new(Schema::new(
                    added.iter().map(|f| (*f).clone()).collect::<Vec<_>>(),
                ));
                session.lake().add_columns(&t, &schema).await?;
            }
        }
        _ => {
            // sync_all_columns: one rewrite of the table with the query's columns, in its
            // order; existing values cast, new columns NULL.
            let select: Vec<String> = source
                .fields()
                .iter()
                .map(|f| {
                    let q = quote_ident(f.name());
                    let arrow_type = f.data_type().to_string();
                    match target.field_with_name(f.name()) {
                        Ok(t) if crate::models_checks::same_type(t.data_type(), f.data_type()) => q,
                        Ok(_) => format!("arrow_cast({q}, '{arrow_type}') AS {q}"),
                        Err(_) => format!("arrow_cast(NULL, '{arrow_type}') AS {q}"),
                    }
                })
                .collect();
            let sql = format!(
                "CREATE OR REPLACE TABLE {relation} AS SELECT {} FROM {relation}",
                select.join(", ")
            );
            session.sql(&sql).await.with_context(|| {
                format!(
                    "{}: on_schema_change `sync_all_columns`: changing the columns of {relation}",
                    n.original_file_path
                )
            })?;
        }
    }
    Ok(())
}

/// How a snapshot detects a changed row.
enum SnapshotStrategy {
    /// A newer `updated_at` than the current version's `dbt_valid_from`.
    Timestamp(String),
    /// Any of these columns differs (`None`: every column of the query).
    Check(Option<Vec<String>>),
}

/// Column names from a config value holding one name or a list of names.
fn name_list(n: &Node, key: &str) -> Result<Vec<String>> {
    match n.config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::String(k)) => Ok(vec![k.trim().to_string()]),
        Some(serde_json::Value::Array(ks)) => ks
            .iter()
            .map(|k| {
                k.as_str().map(|s| s.trim().to_string()).with_context(|| {
                    format!(
                        "{}: `{key}` entries must be column names",
                        n.original_file_path
                    )
                })
            })
            .collect(),
        Some(_) => anyhow::bail!(
            "{}: `{key}` must be a column name or a list of column names",
            n.original_file_path
        ),
    }
}

/// Runs one snapshot (dbt's SCD type 2). The first run creates the table from the query
/// with `dbt_scd_id`, `dbt_updated_at`, `dbt_valid_from` and `dbt_valid_to` (NULL: the
/// current version). Later runs apply one MERGE: the current version of a changed row gets
/// its `dbt_valid_to`, the new version is inserted, a new key is inserted, and with
/// `hard_deletes: invalidate` (or `invalidate_hard_deletes: true`) the current version of a
/// key gone from the query is closed at the snapshot time.
async fn build_snapshot(
    manifest: &Manifest,
    session: &Session,
    n: &Node,
    run_dir: &Path,
) -> Result<Option<u64>> {
    let file_name = &n.original_file_path;
    let keys = name_list(n, "unique_key")?;
    if keys.is_empty() {
        anyhow::bail!("{file_name}: a snapshot needs a `unique_key` config");
    }
    let strategy = match n.config.get_str("strategy") {
        Some("timestamp") => SnapshotStrategy::Timestamp(
            n.config
                .get_str("updated_at")
                .with_context(|| {
                    format!("{file_name}: the `timestamp` strategy needs an `updated_at` column")
                })?
                .to_string(),
        ),
        Some("check") => match n.config.get("check_cols") {
            Some(serde_json::Value::String(s)) if s == "all" => SnapshotStrategy::Check(None),
            Some(serde_json::Value::Array(_)) => {
                SnapshotStrategy::Check(Some(name_list(n, "check_cols")?))
            }
            _ => anyhow::bail!(
                "{file_name}: the `check` strategy needs `check_cols`: a list of columns or 'all'"
            ),
        },
        Some(other) => anyhow::bail!(
            "{file_name}: snapshot strategy `{other}` is not supported; use `timestamp` or `check`"
        ),
        None => anyhow::bail!(
            "{file_name}: a snapshot needs a `strategy` config (`timestamp` or `check`)"
        ),
    };
    let invalidate = match n.config.get_str("hard_deletes") {
        Some("invalidate") => true,
        None | Some("ignore") => n
            .config
            .get("invalidate_hard_deletes")
            .is_some_and(|v| v == &serde_json::Value::Bool(true)),
        Some(other) => anyhow::bail!(
            "{file_name}: `hard_deletes: {other}` is not supported; use `ignore` or `invalidate`"
        ),
    };
    let compiled = manifest.compile_node(&n.unique_id, &CompileOptions::default())?;
    let body = compiled.trim().trim_end_matches(';').trim_end();
    let relation = n.relation.render();
    let lake = session.lake();
    let t = lake_name(n)?;
    let file = run_dir.join(&n.package_name).join(file_name);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let shown = file
        .strip_prefix(&manifest.project.root)
        .unwrap_or(&file)
        .display()
        .to_string();
    let located = || format!("{file_name}: compiled SQL at {shown}");
    let source_cols = columns_of(
        session,
        &format!("SELECT * FROM (\n{body}\n) AS dbt_src LIMIT 0"),
    )
    .await
    .with_context(|| format!("{file_name}: planning the snapshot query"))?;
    for k in &keys {
        if !source_cols.contains(k) {
            anyhow::bail!(
                "{file_name}: `unique_key` names `{k}`, which the snapshot query does not return (columns: {})",
                source_cols.join(", ")
            );
        }
    }
    let now = format!(
        "CAST('{}' AS TIMESTAMP)",
        manifest.generated_at.format("%Y-%m-%d %H:%M:%S%.6f")
    );
    let updated_at = match &strategy {
        SnapshotStrategy::Timestamp(col) => {
            if !source_cols.contains(col) {
                anyhow::bail!(
                    "{file_name}: `updated_at` names `{col}`, which the snapshot query does not return (columns: {})",
                    source_cols.join(", ")
                );
            }
            format!("dbt_src.{}", quote_ident(col))
        }
        SnapshotStrategy::Check(_) => now.clone(),
    };
    let scd_parts: Vec<String> = keys
        .iter()
        .map(|k| format!("coalesce(CAST(dbt_src.{} AS VARCHAR), '')", quote_ident(k)))
        .chain(std::iter::once(format!(
            "coalesce(CAST({updated_at} AS VARCHAR), '')"
        )))
        .collect();
    let staged = format!(
        "SELECT dbt_src.*,\n  md5(concat_ws('|', {})) AS dbt_scd_id,\n  {updated_at} AS dbt_updated_at,\n  \
         {updated_at} AS dbt_valid_from,\n  nullif({updated_at}, {updated_at}) AS dbt_valid_to\n\
         FROM (\n{body}\n) AS dbt_src",
        scd_parts.join(", ")
    );
    lake.create_namespace(&t.namespace).await?;
    let sql = if !lake.table_exists(&t).await? {
        format!("CREATE TABLE {relation} AS\n{staged}")
    } else {
        let mut target_cols =
            columns_of(session, &format!("SELECT * FROM {relation} LIMIT 0")).await?;
        for meta in [
            "dbt_scd_id",
            "dbt_valid_from",
            "dbt_valid_to",
            "dbt_updated_at",
        ] {
            if !target_cols.iter().any(|c| c == meta) {
                anyhow::bail!(
                    "{file_name}: {relation} exists but has no `{meta}` column; it is not a snapshot table"
                );
            }
        }
        // As dbt: columns new in the query are added to the snapshot (NULL in the versions
        // already kept); columns gone from it stay, NULL from now on.
        let added: Vec<String> = source_cols
            .iter()
            .filter(|c| !target_cols.contains(c))
            .cloned()
            .collect();
        if !added.is_empty() {
            let schema = crate::models_checks::query_schema(
                session,
                &format!("SELECT * FROM (\n{body}\n) AS dbt_src LIMIT 0"),
            )
            .await?;
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .filter(|f| added.contains(f.name()))
                .map(|f| f.as_ref().clone())
                .collect();
            lake.add_columns(&t, &Arc::new(Schema::new(fields))).await?;
            target_cols.extend(added);
        }
        let cols: Vec<String> = source_cols
            .iter()
            .filter(|c| target_cols.contains(c))
            .map(|c| quote_ident(c))
            .collect();
        let on = |a: &str, b: &str| {
            keys.iter()
                .map(|k| format!("{a}.{k} = {b}.{k}", k = quote_ident(k)))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let changed = match &strategy {
            SnapshotStrategy::Timestamp(_) => {
                "dbt_cur.dbt_valid_from < dbt_new.dbt_updated_at".to_string()
            }
            SnapshotStrategy::Check(check) => {
                let check: Vec<String> = match check {
                    Some(cs) => {
                        for c in cs {
                            if !cols.contains(&quote_ident(c)) {
                                anyhow::bail!(
                                    "{file_name}: `check_cols` names `{c}`, which the snapshot query does not return"
                                );
                            }
                        }
                        cs.iter().map(|c| quote_ident(c)).collect()
                    }
                    None => cols.clone(),
                };
                let parts: Vec<String> = check
                    .iter()
                    // Parenthesised: the parser reads `a IS DISTINCT FROM b OR …` with the
                    // whole `b OR …` as the right-hand side.
                    .map(|c| format!("(dbt_cur.{c} IS DISTINCT FROM dbt_new.{c})"))
                    .collect();
                format!("({})", parts.join(" OR "))
            }
        };
        let pick = |alias: &str| {
            cols.iter()
                .map(|c| format!("{alias}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let current = format!(
            "(SELECT *, true AS dbt_in_target FROM {relation} WHERE dbt_valid_to IS NULL) AS dbt_cur"
        );
        let fresh = format!("(\n{staged}\n) AS dbt_new");
        let mut branches = vec![
            format!(
                "SELECT {}, dbt_new.dbt_scd_id, dbt_new.dbt_updated_at, dbt_new.dbt_valid_from, \
                 dbt_new.dbt_valid_to, 'insert' AS dbt_change_type\n\
                 FROM {fresh}\nLEFT JOIN {current} ON {}\n\
                 WHERE dbt_cur.dbt_in_target IS NULL OR {changed}",
                pick("dbt_new"),
                on("dbt_cur", "dbt_new")
            ),
            format!(
                "SELECT {}, dbt_cur.dbt_scd_id, dbt_cur.dbt_updated_at, dbt_cur.dbt_valid_from, \
                 dbt_new.dbt_updated_at AS dbt_valid_to, 'update' AS dbt_change_type\n\
                 FROM {fresh}\nJOIN {current} ON {}\nWHERE {changed}",
                pick("dbt_cur"),
                on("dbt_cur", "dbt_new")
            ),
        ];
        if invalidate {
            branches.push(format!(
                "SELECT {}, dbt_cur.dbt_scd_id, dbt_cur.dbt_updated_at, dbt_cur.dbt_valid_from, \
                 {now} AS dbt_valid_to, 'delete' AS dbt_change_type\n\
                 FROM {current}\nLEFT JOIN (SELECT *, true AS dbt_in_source FROM (\n{body}\n) AS dbt_src) AS dbt_new ON {}\n\
                 WHERE dbt_new.dbt_in_source IS NULL",
                pick("dbt_cur"),
                on("dbt_cur", "dbt_new")
            ));
        }
        let all_cols: Vec<String> = cols
            .iter()
            .cloned()
            .chain(
                [
                    "dbt_scd_id",
                    "dbt_updated_at",
                    "dbt_valid_from",
                    "dbt_valid_to",
                ]
                .map(String::from),
            )
            .collect();
        let values = all_cols
            .iter()
            .map(|c| format!("dbt_s.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "MERGE INTO {relation} AS dbt_t\nUSING (\n{}\n) AS dbt_s\n\
             ON dbt_s.dbt_scd_id = dbt_t.dbt_scd_id\n\
             WHEN MATCHED AND dbt_t.dbt_valid_to IS NULL AND dbt_s.dbt_change_type IN ('update', 'delete')\n  \
             THEN UPDATE SET dbt_valid_to = dbt_s.dbt_valid_to\n\
             WHEN NOT MATCHED AND dbt_s.dbt_change_type = 'insert'\n  \
             THEN INSERT ({}) VALUES ({values})",
            branches.join("\nUNION ALL\n"),
            all_cols.join(", ")
        )
    };
    std::fs::write(&file, format!("{sql}\n"))
        .with_context(|| format!("writing {}", file.display()))?;
    let mut rows = None;
    for stmt in session.parse(&sql).with_context(located)? {
        if let StatementResult::Done { rows: r, .. } =
            session.execute(stmt).await.with_context(located)?
        {
            rows = r;
        }
    }
    Ok(rows.or(Some(0)))
}

/// Runs the queries of compile-time Jinja (`run_query`, `statement`,
/// `adapter.get_columns_in_relation`) on the engine session. Rendering is synchronous and
/// happens inside async code, so each query blocks its thread in place (multi-thread
/// runtime only) while the runtime drives it.
#[derive(Debug)]
struct SessionQueries {
    session: Session,
    handle: tokio::runtime::Handle,
}

impl SessionQueries {
    fn shared(session: &Session) -> Arc<dyn strata_models::QueryRunner> {
        Arc::new(SessionQueries {
            session: session.clone(),
            handle: tokio::runtime::Handle::current(),
        })
    }

    /// Runs every statement of `sql`; the schema and rows of the last one.
    fn run(&self, sql: &str) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), String> {
        if self.handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err("queries while rendering need the multi-thread runtime".into());
        }
        let session = &self.session;
        let work = async {
            let mut last = (Arc::new(Schema::empty()), Vec::new());
            for stmt in session.parse(sql)? {
                last = match session.execute(stmt).await? {
                    StatementResult::Rows { schema, stream } => (
                        schema,
                        strata_engine::datafusion::physical_plan::common::collect(stream).await?,
                    ),
                    StatementResult::Done { .. } => (Arc::new(Schema::empty()), Vec::new()),
                };
            }
            Ok::<_, strata_engine::Error>(last)
        };
        tokio::task::block_in_place(|| self.handle.block_on(work)).map_err(|e| e.to_string())
    }
}

impl strata_models::QueryRunner for SessionQueries {
    fn query(&self, sql: &str) -> std::result::Result<strata_models::QueryResult, String> {
        let (schema, batches) = self.run(sql)?;
        let mut rows = Vec::new();
        for b in &batches {
            let cols = b
                .columns()
                .iter()
                .map(|c| json_values(c.as_ref()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            for i in 0..b.num_rows() {
                rows.push(cols.iter().map(|c| c[i].clone()).collect());
            }
        }
        Ok(strata_models::QueryResult {
            columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
            types: schema
                .fields()
                .iter()
                .map(|f| sql_type(f.data_type()))
                .collect(),
            rows,
        })
    }

    fn columns(&self, relation: &str) -> std::result::Result<Vec<(String, String)>, String> {
        let (schema, _) = self.run(&format!("select * from {relation} limit 0"))?;
        Ok(schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), sql_type(f.data_type())))
            .collect())
    }
}

/// An Arrow column as JSON values: numbers and booleans as such, everything else (dates,
/// timestamps, decimals…) as its text.
fn json_values(
    a: &dyn Array,
) -> std::result::Result<Vec<serde_json::Value>, strata_engine::datafusion::arrow::error::ArrowError>
{
    use strata_engine::datafusion::arrow::array::{AsArray, Float64Array};
    use strata_engine::datafusion::arrow::compute::cast;
    use strata_engine::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let t = a.data_type();
    let n = a.len();
    let null_or = |i: usize, v: serde_json::Value| {
        if a.is_null(i) {
            serde_json::Value::Null
        } else {
            v
        }
    };
    Ok(if t.is_integer() {
        let c = cast(a, &DataType::Int64)?;
        let c = c
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("cast to Int64");
        (0..n).map(|i| null_or(i, c.value(i).into())).collect()
    } else if t.is_floating() {
        let c = cast(a, &DataType::Float64)?;
        let c = c
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("cast to Float64");
        (0..n).map(|i| null_or(i, c.value(i).into())).collect()
    } else if *t == DataType::Boolean {
        let c = a.as_boolean();
        (0..n).map(|i| null_or(i, c.value(i).into())).collect()
    } else {
        let f = ArrayFormatter::try_new(a, &FormatOptions::default())?;
        (0..n)
            .map(|i| null_or(i, f.value(i).to_string().into()))
            .collect()
    })
}

/// The SQL name of an Arrow type, as `adapter.get_columns_in_relation` reports it.
fn sql_type(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => "bigint".into(),
        DataType::Float16 | DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "varchar".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        other => other.to_string().to_ascii_lowercase(),
    }
}

/// The output column names of a query.
async fn columns_of(session: &Session, sql: &str) -> Result<Vec<String>> {
    let mut cols = Vec::new();
    for stmt in session.parse(sql)? {
        if let StatementResult::Rows { schema, .. } = session.execute(stmt).await? {
            cols = schema.fields().iter().map(|f| f.name().clone()).collect();
        }
    }
    Ok(cols)
}

impl ModelArgs {
    /// Whether `--select` or `--selector` narrows the command (else it takes its default set).
    pub(crate) fn selects(&self) -> bool {
        !self.select.is_empty() || self.selector.is_some()
    }

    /// The arguments and `--full-refresh` as recorded with the run.
    fn describe_with(&self, full_refresh: bool) -> String {
        let mut s = self.describe();
        if full_refresh {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str("--full-refresh");
        }
        s
    }

    /// The arguments as recorded with the run.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.select.is_empty() {
            parts.push(format!("--select {}", self.select.join(" ")));
        }
        if !self.exclude.is_empty() {
            parts.push(format!("--exclude {}", self.exclude.join(" ")));
        }
        if let Some(s) = &self.selector {
            parts.push(format!("--selector {s}"));
        }
        if let Some(v) = &self.vars {
            parts.push(format!("--vars {v}"));
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn row_counts_are_grouped_by_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(10_431), "10,431");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
