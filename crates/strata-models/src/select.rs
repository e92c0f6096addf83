//! dbt's node selection: `--select` / `--exclude` expressions, graph operators, methods,
//! unions (space) and intersections (comma), and `selectors.yml`.
//!
//! Grammar of one criterion: `[@][N+]<method:value | name>[+N]`. Methods: `tag:`, `path:`,
//! `source:`, `resource_type:`, `config.<key>:`, `package:`, `fqn:`, `test_type:`,
//! `state:modified` / `state:new`, `result:<status>`, `selector:`. A bare name matches a
//! node's name or fqn (with `*` wildcards) or a file path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::graph::{Manifest, ResourceType};
use crate::{Error, Result};

/// What selection compares against: a previous manifest (`--state`) and run results.
#[derive(Debug, Default, Clone)]
pub struct SelectContext {
    /// `--state DIR`'s `manifest.json`, parsed.
    pub state_manifest: Option<Value>,
    /// `run_results.json` (from `--state DIR` or `target/`), parsed.
    pub run_results: Option<Value>,
    /// `selectors.yml` definitions by name.
    pub selectors: BTreeMap<String, Value>,
}

impl SelectContext {
    /// Reads `manifest.json` and `run_results.json` from `state_dir` (either may be absent),
    /// and `selectors.yml` from the project root.
    pub fn load(project_root: &Path, state_dir: Option<&Path>) -> Result<Self> {
        let mut ctx = SelectContext::default();
        if let Some(dir) = state_dir {
            let read = |name: &str| -> Result<Option<Value>> {
                let p = dir.join(name);
                match std::fs::read_to_string(&p) {
                    Ok(t) => serde_json::from_str(&t)
                        .map(Some)
                        .map_err(|e| Error::Input {
                            what: p.display().to_string(),
                            message: format!("not valid JSON: {e}"),
                        }),
                    Err(_) => Ok(None),
                }
            };
            ctx.state_manifest = read("manifest.json")?;
            ctx.run_results = read("run_results.json")?;
        }
        let sel = project_root.join("selectors.yml");
        if let Ok(text) = std::fs::read_to_string(&sel) {
            let shown = sel.display().to_string();
            let v: Value = serde_saphyr::from_str(&text)
                .map_err(|e| crate::project::yaml_error(&shown, &e))?;
            for s in v
                .get("selectors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(name), Some(def)) =
                    (s.get("name").and_then(Value::as_str), s.get("definition"))
                {
                    ctx.selectors.insert(name.to_string(), def.clone());
                }
            }
        }
        Ok(ctx)
    }
}

/// Selects node ids: the union of `select` expressions (all nodes when empty; sources are
/// not selected by default), minus those of `exclude`. Tests attached to a selected node are
/// not added implicitly (`strata ls` shows what was asked, as `dbt ls` does).
pub fn select(
    m: &Manifest,
    select: &[String],
    exclude: &[String],
    ctx: &SelectContext,
) -> Result<BTreeSet<String>> {
    let mut chosen = if select.is_empty() {
        m.nodes
            .values()
            .filter(|n| n.resource_type != ResourceType::Source)
            .map(|n| n.unique_id.clone())
            .collect()
    } else {
        union(m, select, ctx)?
    };
    if !exclude.is_empty() {
        for id in union(m, exclude, ctx)? {
            chosen.remove(&id);
        }
    }
    Ok(chosen)
}

fn union(m: &Manifest, exprs: &[String], ctx: &SelectContext) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for e in exprs {
        for part in e.split_whitespace() {
            out.extend(intersection(m, part, ctx)?);
        }
    }
    Ok(out)
}

fn intersection(m: &Manifest, expr: &str, ctx: &SelectContext) -> Result<BTreeSet<String>> {
    let mut acc: Option<BTreeSet<String>> = None;
    for c in expr.split(',').filter(|c| !c.is_empty()) {
        let s = criterion(m, c, ctx)?;
        acc = Some(match acc {
            None => s,
            Some(a) => a.intersection(&s).cloned().collect(),
        });
    }
    Ok(acc.unwrap_or_default())
}

fn bad(expr: &str, message: impl Into<String>) -> Error {
    Error::Selection {
        expr: expr.to_string(),
        message: message.into(),
    }
}

fn criterion(m: &Manifest, raw: &str, ctx: &SelectContext) -> Result<BTreeSet<String>> {
    let mut s = raw;
    let at = s.starts_with('@');
    if at {
        s = &s[1..];
    }
    let mut up: Option<Option<usize>> = None;
    if let Some(i) = s.find('+')
        && s[..i].chars().all(|c| c.is_ascii_digit())
        && !s[..i].contains(':')
    {
        let n = &s[..i];
        up = Some(if n.is_empty() {
            None
        } else {
            Some(n.parse().map_err(|_| bad(raw, "bad depth"))?)
        });
        s = &s[i + 1..];
    }
    let mut down: Option<Option<usize>> = None;
    if let Some(i) = s.rfind('+') {
        let n = &s[i + 1..];
        if n.chars().all(|c| c.is_ascii_digit()) {
            down = Some(if n.is_empty() {
                None
            } else {
                Some(n.parse().map_err(|_| bad(raw, "bad depth"))?)
            });
            s = &s[..i];
        }
    }
    if s.is_empty() {
        return Err(bad(raw, "nothing to select; write a name or method:value"));
    }
    let base = method(m, s, raw, ctx)?;
    let mut out = base.clone();
    if at {
        let desc = walk(&m.child_map, &base, None);
        out.extend(desc.iter().cloned());
        out.extend(walk(&m.parent_map, &desc, None));
        out.extend(walk(&m.parent_map, &base, None));
    } else {
        if let Some(d) = up {
            out.extend(walk(&m.parent_map, &base, d));
        }
        if let Some(d) = down {
            out.extend(walk(&m.child_map, &base, d));
        }
    }
    Ok(out)
}

fn walk(
    edges: &BTreeMap<String, Vec<String>>,
    start: &BTreeSet<String>,
    depth: Option<usize>,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut frontier: Vec<String> = start.iter().cloned().collect();
    let mut level = 0;
    while !frontier.is_empty() && depth.is_none_or(|d| level < d) {
        let mut next = Vec::new();
        for id in frontier {
            for n in edges.get(&id).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    next.push(n.clone());
                }
            }
        }
        frontier = next;
        level += 1;
    }
    seen
}

/// Shell-style match: `*` any run, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let re = format!(
        "^{}$",
        regex::escape(pattern)
            .replace(r"\*", ".*")
            .replace(r"\?", ".")
    );
    regex::Regex::new(&re).is_ok_and(|r| r.is_match(text))
}

fn fqn_matches(fqn: &[String], pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    // As dbt's `_node_is_match`: a bare name matches the node's name; any pattern matches a
    // prefix of the fqn (so a package name selects the package) or of the fqn without its
    // package (so `marts` or `marts.finance` selects a folder, `staging.stg_orders` a node).
    if parts.len() == 1 && fqn.last().is_some_and(|l| glob(pattern, l)) {
        return true;
    }
    let try_from = |skip: usize| {
        let f = &fqn[skip.min(fqn.len())..];
        parts.len() <= f.len() && parts.iter().zip(f).all(|(p, x)| glob(p, x))
    };
    try_from(0) || try_from(1)
}

fn method(m: &Manifest, s: &str, raw: &str, ctx: &SelectContext) -> Result<BTreeSet<String>> {
    let (meth, value) = match s.split_once(':') {
        Some((a, b)) => (Some(a), b),
        None => (None, s),
    };
    let nodes = m.nodes.values();
    let set: BTreeSet<String> = match meth {
        None => {
            if value.contains('/') || value.ends_with(".sql") || value.ends_with(".csv") {
                return method(m, &format!("path:{value}"), raw, ctx);
            }
            nodes
                .filter(|n| n.resource_type != ResourceType::Source)
                .filter(|n| fqn_matches(&n.fqn, value))
                .map(|n| n.unique_id.clone())
                .collect()
        }
        Some("fqn") => nodes
            .filter(|n| fqn_matches(&n.fqn, value))
            .map(|n| n.unique_id.clone())
            .collect(),
        Some("tag") => nodes
            .filter(|n| n.config.tags().iter().any(|t| glob(value, t)))
            .map(|n| n.unique_id.clone())
            .collect(),
        Some("path") => {
            let v = value.trim_end_matches('/');
            nodes
                .filter(|n| {
                    n.resource_type != ResourceType::Source || n.original_file_path.starts_with(v)
                })
                .filter(|n| {
                    let p = &n.original_file_path;
                    glob(v, p) || p.starts_with(&format!("{v}/")) || p == v
                })
                .map(|n| n.unique_id.clone())
                .collect()
        }
        Some("source") => {
            let parts: Vec<&str> = value.split('.').collect();
            nodes
                .filter(|n| n.resource_type == ResourceType::Source)
                .filter(|n| {
                    let src = n.source_name.as_deref().unwrap_or("");
                    match parts.as_slice() {
                        [s] => glob(s, src),
                        [a, b] => {
                            (glob(a, src) && glob(b, &n.name))
                                || (glob(a, &n.package_name) && glob(b, src))
                        }
                        [p, s, t] => glob(p, &n.package_name) && glob(s, src) && glob(t, &n.name),
                        _ => false,
                    }
                })
                .map(|n| n.unique_id.clone())
                .collect()
        }
        Some("resource_type") => {
            let rt = ResourceType::parse(value)
                .ok_or_else(|| bad(raw, format!("unknown resource type `{value}`; use model, seed, snapshot, test, source or analysis")))?;
            nodes
                .filter(|n| n.resource_type == rt)
                .map(|n| n.unique_id.clone())
                .collect()
        }
        Some("package") => nodes
            .filter(|n| glob(value, &n.package_name))
            .map(|n| n.unique_id.clone())
            .collect(),
        Some("test_type") => nodes
            .filter(|n| n.resource_type == ResourceType::Test)
            .filter(|n| match value {
                "generic" | "data" => n.test_metadata.is_some() || value == "data",
                "singular" => n.test_metadata.is_none(),
                "unit" => false,
                _ => false,
            })
            .map(|n| n.unique_id.clone())
            .collect(),
        // A generic test by its test's name (`unique`, `dbt_utils.expression_is_true`), a
        // singular one by its own.
        Some("test_name") => nodes
            .filter(|n| n.resource_type == ResourceType::Test)
            .filter(|n| match &n.test_metadata {
                Some(t) => {
                    glob(value, &t.name)
                        || t.namespace
                            .as_ref()
                            .is_some_and(|ns| glob(value, &format!("{ns}.{}", t.name)))
                }
                None => glob(value, &n.name),
            })
            .map(|n| n.unique_id.clone())
            .collect(),
        // A node by its file's name, with or without the extension.
        Some("file") => nodes
            .filter(|n| n.resource_type != ResourceType::Source && n.test_metadata.is_none())
            .filter(|n| {
                let file = n
                    .original_file_path
                    .rsplit('/')
                    .next()
                    .unwrap_or(&n.original_file_path);
                let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
                glob(value, file) || glob(value, stem)
            })
            .map(|n| n.unique_id.clone())
            .collect(),
        Some(k) if k.starts_with("config.") => {
            let key = &k["config.".len()..];
            nodes
                .filter(|n| match n.config.get(key) {
                    Some(Value::String(s)) => glob(value, s),
                    Some(Value::Array(a)) => {
                        a.iter().any(|x| x.as_str().is_some_and(|s| glob(value, s)))
                    }
                    Some(Value::Bool(b)) => value == b.to_string(),
                    Some(Value::Number(x)) => value == x.to_string(),
                    _ => false,
                })
                .map(|n| n.unique_id.clone())
                .collect()
        }
        Some("state") => state(m, value, raw, ctx)?,
        Some("result") => {
            let rr = ctx.run_results.as_ref().ok_or_else(|| {
                bad(
                    raw,
                    "needs a previous run_results.json; pass --state DIR holding it",
                )
            })?;
            rr.get("results")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|r| r.get("status").and_then(Value::as_str) == Some(value))
                .filter_map(|r| r.get("unique_id").and_then(Value::as_str))
                .filter(|id| m.nodes.contains_key(*id))
                .map(str::to_string)
                .collect()
        }
        Some("selector") => {
            let def = ctx
                .selectors
                .get(value)
                .ok_or_else(|| bad(raw, format!("no selector `{value}` in selectors.yml")))?;
            yaml_selector(m, def, raw, ctx)?
        }
        Some(other) => {
            return Err(bad(
                raw,
                format!(
                    "unknown method `{other}`; use tag, path, file, source, resource_type, config.<key>, package, fqn, test_type, test_name, state, result or selector"
                ),
            ));
        }
    };
    Ok(set)
}

fn state(m: &Manifest, value: &str, raw: &str, ctx: &SelectContext) -> Result<BTreeSet<String>> {
    let old = ctx.state_manifest.as_ref().ok_or_else(|| {
        bad(
            raw,
            "needs a previous manifest; pass --state DIR holding manifest.json",
        )
    })?;
    let old_nodes = |id: &str| {
        old.get("nodes")
            .and_then(|n| n.get(id))
            .or_else(|| old.get("sources").and_then(|n| n.get(id)))
    };
    let old_macro = |id: &str| old.get("macros").and_then(|n| n.get(id));
    let mut out = BTreeSet::new();
    for n in m.nodes.values() {
        let prev = old_nodes(&n.unique_id);
        let hit = match (value, prev) {
            ("new", None) => true,
            ("new", Some(_)) => false,
            (v, None) if v.starts_with("modified") => true,
            (v, Some(p)) if v.starts_with("modified") => {
                let body = p.pointer("/checksum/checksum").and_then(Value::as_str)
                    != Some(n.checksum.as_str());
                let config = p.get("config").is_some_and(|c| {
                    let now = serde_json::to_value(&n.config).unwrap_or(Value::Null);
                    c != &now
                });
                let macros = n.depends_on.macros.iter().any(|mid| {
                    let now = m.macros.get(mid).map(|x| x.checksum.as_str());
                    let was = old_macro(mid)
                        .and_then(|x| x.get("checksum"))
                        .and_then(Value::as_str);
                    // dbt's manifest has no macro checksum; compare the SQL when it is absent.
                    match was {
                        Some(w) => Some(w) != now,
                        None => {
                            old_macro(mid)
                                .and_then(|x| x.get("macro_sql"))
                                .and_then(Value::as_str)
                                != m.macros.get(mid).map(|x| x.macro_sql.as_str())
                        }
                    }
                });
                match v {
                    "modified" => body || config || macros,
                    "modified.body" => body,
                    "modified.configs" => config,
                    "modified.macros" => macros,
                    _ => {
                        return Err(bad(
                            raw,
                            "use state:modified, state:modified.body, .configs, .macros or state:new",
                        ));
                    }
                }
            }
            _ => {
                return Err(bad(
                    raw,
                    "use state:modified, state:modified.body, .configs, .macros or state:new",
                ));
            }
        };
        if hit {
            out.insert(n.unique_id.clone());
        }
    }
    Ok(out)
}

/// A `selectors.yml` definition: a string (CLI syntax), `{method: …, value: …, parents,
/// children, …}`, `{union: [...]}`, `{intersection: [...]}`, with `exclude:` entries.
fn yaml_selector(
    m: &Manifest,
    def: &Value,
    raw: &str,
    ctx: &SelectContext,
) -> Result<BTreeSet<String>> {
    match def {
        Value::String(s) => union(m, std::slice::from_ref(s), ctx),
        Value::Object(o) => {
            if let Some(list) = o.get("union").and_then(Value::as_array) {
                let mut out = BTreeSet::new();
                let mut excl = BTreeSet::new();
                for d in list {
                    if let Some(e) = d.get("exclude") {
                        for x in e.as_array().into_iter().flatten() {
                            excl.extend(yaml_selector(m, x, raw, ctx)?);
                        }
                    } else {
                        out.extend(yaml_selector(m, d, raw, ctx)?);
                    }
                }
                return Ok(out.difference(&excl).cloned().collect());
            }
            if let Some(list) = o.get("intersection").and_then(Value::as_array) {
                let mut acc: Option<BTreeSet<String>> = None;
                for d in list {
                    let s = yaml_selector(m, d, raw, ctx)?;
                    acc = Some(match acc {
                        None => s,
                        Some(a) => a.intersection(&s).cloned().collect(),
                    });
                }
                return Ok(acc.unwrap_or_default());
            }
            let meth = o.get("method").and_then(Value::as_str).ok_or_else(|| {
                bad(
                    raw,
                    "a selector definition needs `method`, `union` or `intersection`",
                )
            })?;
            let value = o
                .get("value")
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            let mut expr = if meth == "fqn" && value != "*" {
                value.clone()
            } else {
                format!("{meth}:{value}")
            };
            if meth == "fqn" && value == "*" {
                expr = "fqn:*".into();
            }
            let flag = |k: &str| o.get(k).and_then(Value::as_bool).unwrap_or(false);
            let depth = |k: &str| o.get(k).and_then(Value::as_u64);
            let up = match (flag("parents"), depth("parents_depth")) {
                (_, Some(d)) => format!("{d}+"),
                (true, None) => "+".into(),
                _ => String::new(),
            };
            let down = match (flag("children"), depth("children_depth")) {
                (_, Some(d)) => format!("+{d}"),
                (true, None) => "+".into(),
                _ => String::new(),
            };
            let at = if flag("childrens_parents") { "@" } else { "" };
            let mut out = criterion(m, &format!("{at}{up}{expr}{down}"), ctx)?;
            for x in o
                .get("exclude")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for id in yaml_selector(m, x, raw, ctx)? {
                    out.remove(&id);
                }
            }
            Ok(out)
        }
        _ => Err(bad(raw, "a selector definition is a string or a mapping")),
    }
}
