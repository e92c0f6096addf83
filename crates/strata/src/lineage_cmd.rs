//! `strata lineage <model>[.<column>]`: column-level lineage of a dbt project's models,
//! computed from each model's planned query over the lake's current relations.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use strata_engine::Session;
use strata_engine::lineage::{LineageKind, column_lineage};
use strata_meta::LineageEdge;
use strata_models::{CompileOptions, Manifest, Node, ResourceType};

use crate::Ctx;
use crate::models_cmd::{self, ModelArgs};

/// An upstream column: (node name, column, how).
type Upstream = (String, String, LineageKind);

/// The lineage of one model, with relations mapped back to node names.
#[derive(Default)]
struct ModelLineage {
    /// Output columns in order, each with its upstream columns.
    columns: Vec<(String, Vec<Upstream>)>,
    /// (node, column) read by filters and joins.
    filtered_by: Vec<(String, String)>,
}

/// `strata lineage`.
pub(crate) async fn lineage(
    ctx: &Ctx,
    project: Option<&Path>,
    args: &ModelArgs,
    target: &str,
) -> Result<()> {
    let (manifest, _) = models_cmd::load(project, args)?;
    let (model, column) = match target.split_once('.') {
        Some((m, c)) => (m, Some(c)),
        None => (target, None),
    };
    if !manifest
        .nodes
        .values()
        .any(|n| n.resource_type == ResourceType::Model && n.name == model)
    {
        bail!("no model named `{model}` in {}", manifest.project.name);
    }
    let relations = relation_nodes(&manifest);
    let display = |id: &str| -> String {
        match manifest.nodes.get(id) {
            Some(n) if n.resource_type == ResourceType::Source => format!(
                "source:{}",
                n.unique_id.splitn(3, '.').nth(2).unwrap_or(&n.name)
            ),
            Some(n) => n.name.clone(),
            None => id.to_string(),
        }
    };
    let session = ctx.engine.session().await?;
    let mut all: BTreeMap<String, ModelLineage> = BTreeMap::new();
    for n in manifest.nodes.values() {
        if n.resource_type != ResourceType::Model {
            continue;
        }
        let (columns, edges) = match model_lineage(&manifest, &session, n, &relations).await {
            Ok(l) => l,
            Err(e) => {
                if n.name == model {
                    bail!(
                        "cannot plan model `{}` ({e:#}); run `strata run` first so its upstream relations exist",
                        n.name
                    );
                }
                eprintln!("warning: no lineage for model `{}`: {e:#}", n.name);
                continue;
            }
        };
        let mut l = ModelLineage {
            columns: columns.into_iter().map(|c| (c, Vec::new())).collect(),
            filtered_by: Vec::new(),
        };
        for e in edges {
            let up = display(&e.upstream_node);
            match usize::try_from(e.position) {
                Err(_) => l.filtered_by.push((up, e.upstream_column)),
                Ok(i) => {
                    let kind = match e.kind.as_str() {
                        "copied" => LineageKind::Copied,
                        "aggregated" => LineageKind::Aggregated,
                        _ => LineageKind::Transformed,
                    };
                    l.columns[i].1.push((up, e.upstream_column, kind));
                }
            }
        }
        l.filtered_by.sort();
        l.filtered_by.dedup();
        all.insert(n.name.clone(), l);
    }
    let Some(this) = all.get(model) else {
        bail!("no lineage for model `{model}`");
    };
    let columns: Vec<&(String, Vec<Upstream>)> = match column {
        Some(c) => {
            let found: Vec<_> = this
                .columns
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case(c))
                .collect();
            if found.is_empty() {
                let known: Vec<&str> = this.columns.iter().map(|(n, _)| n.as_str()).collect();
                bail!(
                    "model `{model}` has no column `{c}` (columns: {})",
                    known.join(", ")
                );
            }
            found
        }
        None => this.columns.iter().collect(),
    };
    let downstream = |col: &str| -> Vec<(String, String, LineageKind)> {
        let mut out = Vec::new();
        for (m, l) in &all {
            for (c, ups) in &l.columns {
                for (t, uc, k) in ups {
                    if t == model && uc.eq_ignore_ascii_case(col) {
                        out.push((m.clone(), c.clone(), *k));
                    }
                }
            }
        }
        out
    };
    if ctx.json {
        let cols: Vec<serde_json::Value> = columns
            .iter()
            .map(|(c, ups)| {
                serde_json::json!({
                    "column": c,
                    "upstream": ups.iter().map(|(t, uc, k)| serde_json::json!({
                        "node": t, "column": uc, "kind": k.as_str(),
                    })).collect::<Vec<_>>(),
                    "downstream": downstream(c).iter().map(|(t, dc, k)| serde_json::json!({
                        "model": t, "column": dc, "kind": k.as_str(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let filtered: Vec<serde_json::Value> = this
            .filtered_by
            .iter()
            .map(|(t, c)| serde_json::json!({"node": t, "column": c}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": model,
                "columns": cols,
                "filtered_by": filtered,
            }))?
        );
        return Ok(());
    }
    for (c, ups) in &columns {
        println!("{model}.{c}");
        let mut seen = Vec::new();
        print_upstream(&all, ups, 1, &mut seen);
        let down = downstream(c);
        if !down.is_empty() {
            println!("  used by:");
            for (m, dc, k) in down {
                println!("    → {m}.{dc} ({k})");
            }
        }
    }
    if !this.filtered_by.is_empty() {
        println!("filtered by:");
        for (t, c) in &this.filtered_by {
            println!("  {t}.{c}");
        }
    }
    Ok(())
}

/// Prints the upstream tree, following models into their own upstream columns.
fn print_upstream(
    all: &BTreeMap<String, ModelLineage>,
    ups: &[Upstream],
    depth: usize,
    seen: &mut Vec<(String, String)>,
) {
    for (t, c, k) in ups {
        println!("{}← {t}.{c} ({k})", "  ".repeat(depth));
        let key = (t.clone(), c.clone());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        if let Some(next) = all
            .get(t)
            .and_then(|l| l.columns.iter().find(|(name, _)| name == c))
        {
            print_upstream(all, &next.1, depth + 1, seen);
        }
        seen.pop();
    }
}

/// Relations (`namespace.identifier`, lowercase) → the unique id of the node that produces
/// them (model, seed, snapshot or source).
pub(crate) fn relation_nodes(manifest: &Manifest) -> BTreeMap<String, String> {
    manifest
        .nodes
        .values()
        .filter(|n| {
            matches!(
                n.resource_type,
                ResourceType::Model
                    | ResourceType::Seed
                    | ResourceType::Snapshot
                    | ResourceType::Source
            )
        })
        .map(|n| {
            (
                format!("{}.{}", n.relation.schema, n.relation.identifier).to_lowercase(),
                n.unique_id.clone(),
            )
        })
        .collect()
}

/// The column-level lineage of model `n`, planned from its full (not incremental) query
/// over the lake's current relations; upstream relations are named by their nodes' unique
/// ids (see [`relation_nodes`]). Returns the output columns in order and the edges; filter
/// and join columns come first, at position -1.
pub(crate) async fn model_lineage(
    manifest: &Manifest,
    session: &Session,
    n: &Node,
    relations: &BTreeMap<String, String>,
) -> Result<(Vec<String>, Vec<LineageEdge>)> {
    let sql = manifest.compile_node(
        &n.unique_id,
        &CompileOptions {
            is_incremental: false,
            ..Default::default()
        },
    )?;
    let sql = sql.trim().trim_end_matches(';').trim_end();
    let l = column_lineage(session, sql).await?;
    let node = |table: &str| {
        relations
            .get(&table.to_lowercase())
            .cloned()
            .unwrap_or_else(|| table.to_string())
    };
    let mut edges: Vec<LineageEdge> = l
        .filtered_by
        .into_iter()
        .map(|c| LineageEdge {
            node: n.unique_id.clone(),
            position: -1,
            column: None,
            upstream_node: node(&c.table),
            upstream_column: c.column,
            kind: "filtered_by".into(),
        })
        .collect();
    let columns = l.columns.iter().map(|c| c.column.clone()).collect();
    for (position, c) in l.columns.into_iter().enumerate() {
        for s in c.sources {
            edges.push(LineageEdge {
                node: n.unique_id.clone(),
                position: position as i64,
                column: Some(c.column.clone()),
                upstream_node: node(&s.table),
                upstream_column: s.column,
                kind: s.kind.as_str().into(),
            });
        }
    }
    Ok((columns, edges))
}
