//! `strata compile` and `strata ls`: the dbt-compatible modeling layer's commands that need
//! no warehouse.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use strata_models::select::{SelectContext, select};
use strata_models::{LoadOptions, Manifest, ResourceType};

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
