//! The dbt-compatible modeling layer's commands: `strata compile` and `strata ls` (no
//! warehouse needed), `strata seed` and `strata run` (executed by the engine on the lake).
//!
//! Execution lives here, not in `strata-models`, which renders text and never depends on
//! the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use strata_engine::datafusion::arrow::array::RecordBatch;
use strata_engine::datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use strata_engine::datafusion::prelude::{CsvReadOptions, SessionContext};
use strata_engine::{Session, StatementResult};
use strata_lake::{Lake, TableName, WriteMode, WriteOptions};
use strata_models::select::{SelectContext, select};
use strata_models::{CompileOptions, LoadOptions, Manifest, Node, ResourceType};

use crate::Ctx;

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

fn load(project: Option<&Path>, args: &ModelArgs) -> Result<(Manifest, Vec<String>)> {
    let root = project_root(project)?;
    let opts = LoadOptions {
        vars: args.vars.clone(),
        target_schema: args.target_schema.clone(),
        ..LoadOptions::default()
    };
    let manifest = Manifest::load(&root, &opts)?;
    let ctx = SelectContext::load(&root, args.state.as_deref())?;
    let mut sel = args.select.clone();
    if let Some(s) = &args.selector {
        sel.push(format!("selector:{s}"));
    }
    let chosen = select(&manifest, &sel, &args.exclude, &ctx)?;
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
    /// Failed with this message.
    Error(String),
    /// Not run because an upstream node failed.
    Skip,
}

/// Counts and failures of a `seed` or `run`, printed in dbt's style.
struct Report {
    quiet: bool,
    total: usize,
    done: usize,
    pass: usize,
    skip: usize,
    failures: Vec<(String, String, String)>,
    rows: u64,
    started: Instant,
}

impl Report {
    fn new(quiet: bool, total: usize) -> Self {
        Report {
            quiet,
            total,
            done: 0,
            pass: 0,
            skip: 0,
            failures: Vec::new(),
            rows: 0,
            started: Instant::now(),
        }
    }

    /// Prints one node's result line: `3 of 12 OK created table model analytics.orders … [1.20s, 10,431 rows]`.
    fn record(&mut self, kind: &str, n: &Node, outcome: &Outcome, elapsed: Duration) {
        self.done += 1;
        let relation = n.relation.render();
        let secs = elapsed.as_secs_f64();
        let (what, status) = match outcome {
            Outcome::Pass(rows) => {
                self.pass += 1;
                self.rows += rows.unwrap_or(0);
                let status = match rows {
                    Some(r) => format!("[{secs:.2}s, {} rows]", thousands(*r)),
                    None => format!("[{secs:.2}s]"),
                };
                (format!("OK created {kind} {relation}"), status)
            }
            Outcome::Error(message) => {
                self.failures.push((
                    format!("{} {}", n.resource_type.as_str(), n.name),
                    n.original_file_path.clone(),
                    message.clone(),
                ));
                (
                    format!("ERROR creating {kind} {relation}"),
                    format!("[ERROR in {secs:.2}s]"),
                )
            }
            Outcome::Skip => {
                self.skip += 1;
                (format!("SKIP relation {relation}"), "[SKIP]".to_string())
            }
        };
        if !self.quiet {
            let head = format!("{} of {} {what} ", self.done, self.total);
            let dots = ".".repeat(RESULT_COLUMN.saturating_sub(head.chars().count()).max(3));
            println!("{head}{dots} {status}");
        }
    }

    /// Prints the failures and the `Done. PASS=…` line; an error when anything failed.
    fn finish(&self, noun: &str) -> Result<Option<i64>> {
        let errors = self.failures.len();
        if !self.quiet {
            println!(
                "\nFinished running {} {noun}(s) in {:.2}s.",
                self.total,
                self.started.elapsed().as_secs_f64()
            );
        }
        if errors > 0 {
            println!(
                "\nCompleted with {errors} error{}:",
                if errors == 1 { "" } else { "s" }
            );
            for (what, path, message) in &self.failures {
                println!("\nFailure in {what} ({path})");
                for line in message.lines() {
                    println!("  {line}");
                }
            }
        }
        println!(
            "\nDone. PASS={} WARN=0 ERROR={errors} SKIP={} TOTAL={}",
            self.pass, self.skip, self.total
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
        let mut report = Report::new(ctx.quiet, seeds.len());
        for n in seeds {
            let start = Instant::now();
            let outcome = match load_seed(lake, n).await {
                Ok(rows) => Outcome::Pass(Some(rows)),
                Err(e) => Outcome::Error(crate::render_error(&e)),
            };
            report.record("seed file", n, &outcome, start.elapsed());
        }
        report.finish("seed")
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

/// `strata run`: builds the selected models in DAG order. A failed model skips everything
/// downstream of it; the others still run.
pub(crate) async fn run(ctx: &Ctx, project: Option<&Path>, args: &ModelArgs) -> Result<()> {
    let (manifest, order) = load(project, args)?;
    let models: Vec<&Node> = order
        .iter()
        .map(|id| &manifest.nodes[id])
        .filter(|n| n.resource_type == ResourceType::Model && n.materialized() != "ephemeral")
        .collect();
    ctx.recorded("run", &args.describe(), || async {
        if !ctx.quiet {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for n in &models {
                *counts.entry(n.materialized()).or_default() += 1;
            }
            let kinds: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
            println!("Found {} model(s) ({})\n", models.len(), kinds.join(", "));
        }
        let session = ctx.engine.session().await?;
        let run_dir = manifest.project.root.join("target").join("run");
        let mut report = Report::new(ctx.quiet, models.len());
        // Nodes that failed or were skipped: their descendants are skipped.
        let mut broken: BTreeSet<&str> = BTreeSet::new();
        for n in models {
            let start = Instant::now();
            let kind = format!("{} model", n.materialized());
            let upstream_broken = ancestors(&manifest, &n.unique_id)
                .iter()
                .any(|p| broken.contains(p.as_str()));
            let outcome = if upstream_broken {
                Outcome::Skip
            } else {
                match build_model(&manifest, &session, n, &run_dir).await {
                    Ok(rows) => Outcome::Pass(rows),
                    Err(e) => Outcome::Error(crate::render_error(&e)),
                }
            };
            if !matches!(outcome, Outcome::Pass(_)) {
                broken.insert(n.unique_id.as_str());
            }
            report.record(&kind, n, &outcome, start.elapsed());
        }
        for line in manifest.renderer.take_logs() {
            eprintln!("{line}");
        }
        report.finish("model")
    })
    .await
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
) -> Result<Option<u64>> {
    let compiled = manifest.compile_node(&n.unique_id, &CompileOptions::default())?;
    let body = compiled.trim().trim_end_matches(';').trim_end();
    let relation = n.relation.render();
    let (sql, is_table) = match n.materialized() {
        "view" => (
            format!("CREATE OR REPLACE VIEW {relation} AS\n{body}"),
            false,
        ),
        "table" => (
            format!("CREATE OR REPLACE TABLE {relation} AS\n{body}"),
            true,
        ),
        other => anyhow::bail!(
            "{}: materialization `{other}` is not supported by `strata run`; use `view`, `table` or `ephemeral`",
            n.original_file_path
        ),
    };
    let file = run_dir.join(&n.package_name).join(&n.original_file_path);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&file, format!("{sql}\n"))
        .with_context(|| format!("writing {}", file.display()))?;
    let lake = session.lake();
    let t = lake_name(n)?;
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
        session
            .sql(&format!("EXPLAIN {body}"))
            .await
            .with_context(|| format!("{}: compiled SQL at {shown}", n.original_file_path))?;
        if is_table {
            lake.drop_view(&t).await?;
        } else {
            lake.drop_table(&t).await?;
        }
    }
    let mut rows = None;
    for stmt in session
        .parse(&sql)
        .with_context(|| format!("{}: compiled SQL at {shown}", n.original_file_path))?
    {
        match session
            .execute(stmt)
            .await
            .with_context(|| format!("{}: compiled SQL at {shown}", n.original_file_path))?
        {
            StatementResult::Done { rows: r, .. } => rows = r,
            StatementResult::Rows { .. } => {}
        }
    }
    Ok(if is_table { rows.or(Some(0)) } else { None })
}

impl ModelArgs {
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
