//! `target/manifest.json` (dbt's schema v12, the parts tools read) and compiled SQL under
//! `target/compiled/<project>/<path>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::graph::{Manifest, Node, ResourceType};
use crate::{Error, Result};

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn node_json(n: &Node, compiled: Option<&String>) -> Value {
    let mut v = json!({
        "unique_id": n.unique_id,
        "resource_type": n.resource_type.as_str(),
        "package_name": n.package_name,
        "name": n.name,
        "path": n.path,
        "original_file_path": n.original_file_path,
        "fqn": n.fqn,
        "database": n.relation.database,
        "schema": n.relation.schema,
        "alias": n.relation.identifier,
        "relation_name": if n.relation.cte.is_some() { Value::Null } else { Value::String(n.relation.render()) },
        "checksum": {"name": "sha256", "checksum": n.checksum},
        "config": n.config,
        "tags": n.config.tags(),
        "description": n.description,
        "columns": n.columns.iter().map(|(k, c)| (k.clone(), json!({
            "name": c.name, "description": c.description, "data_type": c.data_type,
            "constraints": c.constraints, "meta": c.meta, "tags": c.tags,
        }))).collect::<serde_json::Map<_, _>>(),
        "meta": n.config.get("meta").cloned().unwrap_or(json!({})),
        "patch_path": n.patch_path.as_ref().map(|p| format!("{}://{p}", n.package_name)),
        "language": "sql",
        "raw_code": n.raw_code,
        "refs": n.refs.iter().map(|r| json!({"name": r.name, "package": r.package, "version": r.version})).collect::<Vec<_>>(),
        "sources": n.sources.iter().map(|(s, t)| json!([s, t])).collect::<Vec<_>>(),
        "depends_on": {"nodes": n.depends_on.nodes, "macros": n.depends_on.macros},
        "constraints": n.constraints,
    });
    let o = v.as_object_mut().expect("built as an object");
    if let Some(sql) = compiled {
        o.insert("compiled".into(), Value::Bool(true));
        o.insert("compiled_code".into(), Value::String(sql.clone()));
        o.insert(
            "compiled_path".into(),
            Value::String(format!(
                "target/compiled/{}/{}",
                n.package_name,
                compiled_rel(n)
            )),
        );
    }
    if let Some(t) = &n.test_metadata {
        o.insert(
            "test_metadata".into(),
            json!({"name": t.name, "kwargs": t.kwargs, "namespace": t.namespace}),
        );
        o.insert("column_name".into(), json!(n.column_name));
        o.insert("attached_node".into(), json!(n.attached_node));
    }
    if n.resource_type == ResourceType::Source {
        for k in [
            "raw_code",
            "refs",
            "depends_on",
            "language",
            "constraints",
            "alias",
        ] {
            o.remove(k);
        }
        o.insert("source_name".into(), json!(n.source_name));
        o.insert("identifier".into(), json!(n.relation.identifier));
        o.insert("loaded_at_field".into(), json!(n.loaded_at_field));
        o.insert("freshness".into(), json!(n.freshness));
    }
    v
}

/// The path of a node's compiled file under `target/compiled/<package>/`: its
/// `original_file_path`, or for generic tests `<yml path>/<test name>.sql` as dbt writes it.
fn compiled_rel(n: &Node) -> String {
    if n.test_metadata.is_some() {
        format!("{}/{}.sql", n.original_file_path, n.name)
    } else {
        n.original_file_path.clone()
    }
}

/// Writes `<target_dir>/manifest.json`. `compiled` holds the compiled SQL of the nodes that
/// were compiled.
pub fn write_manifest(
    m: &Manifest,
    compiled: &BTreeMap<String, String>,
    target_dir: &Path,
) -> Result<PathBuf> {
    let mut nodes = serde_json::Map::new();
    let mut sources = serde_json::Map::new();
    for n in m.nodes.values() {
        let v = node_json(n, compiled.get(&n.unique_id));
        if n.resource_type == ResourceType::Source {
            sources.insert(n.unique_id.clone(), v);
        } else {
            nodes.insert(n.unique_id.clone(), v);
        }
    }
    let macros: serde_json::Map<String, Value> = m
        .macros
        .values()
        .map(|x| {
            (
                x.unique_id.clone(),
                json!({
                    "unique_id": x.unique_id, "name": x.name, "package_name": x.package_name,
                    "original_file_path": x.original_file_path, "path": x.original_file_path,
                    "macro_sql": x.macro_sql, "description": x.description,
                    "resource_type": "macro", "checksum": x.checksum,
                    "depends_on": {"macros": []},
                }),
            )
        })
        .collect();
    let docs: serde_json::Map<String, Value> = m
        .docs
        .iter()
        .map(|(k, v)| {
            let (pkg, name) = k.split_once('.').unwrap_or(("", k));
            (
                format!("doc.{k}"),
                json!({"unique_id": format!("doc.{k}"), "name": name, "package_name": pkg, "block_contents": v, "resource_type": "doc"}),
            )
        })
        .collect();
    let manifest = json!({
        "metadata": {
            "dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v12.json",
            "dbt_version": "1.10.0",
            "generated_at": m.generated_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "invocation_id": m.invocation_id,
            "env": {},
            "project_name": m.project.name,
            "adapter_type": crate::ADAPTER_TYPE,
            "generator": "strata",
        },
        "nodes": nodes,
        "sources": sources,
        "macros": macros,
        "docs": docs,
        "exposures": {},
        "metrics": {},
        "groups": {},
        "selectors": {},
        "disabled": {},
        "semantic_models": {},
        "saved_queries": {},
        "unit_tests": m.unit_tests,
        "parent_map": m.parent_map,
        "child_map": m.child_map,
        "group_map": {},
    });
    let path = target_dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Input {
        what: "manifest".into(),
        message: e.to_string(),
    })?;
    write(&path, &text)?;
    Ok(path)
}

/// Writes each compiled node to `<target_dir>/compiled/<package>/<path>`; returns the files.
pub fn write_compiled(
    m: &Manifest,
    compiled: &BTreeMap<String, String>,
    target_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (id, sql) in compiled {
        let Some(n) = m.nodes.get(id) else { continue };
        if n.resource_type == ResourceType::Seed || n.resource_type == ResourceType::Source {
            continue;
        }
        let path = target_dir
            .join("compiled")
            .join(&n.package_name)
            .join(compiled_rel(n));
        write(&path, sql)?;
        out.push(path);
    }
    Ok(out)
}
