//! Node configs: the merge rules dbt applies (most keys clobber; `tags` add up; `meta`,
//! `grants` and `docs` merge key by key; hooks append) and the folder blocks of
//! `dbt_project.yml` (`+`-prefixed keys, nested by folder, as dbt resolves them).

use serde::Serialize;
use serde_json::{Map, Value};

/// A node's resolved configuration (`materialized`, `schema`, `alias`, `tags`, …), as dbt
/// writes it under `config` in `manifest.json`. Keys are dbt's (`pre-hook` is stored as
/// `pre-hook`, whichever spelling the project used).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct NodeConfig(pub Map<String, Value>);

const MERGED_DICTS: &[&str] = &["meta", "grants", "docs", "persist_docs", "contract"];
const APPENDED_LISTS: &[&str] = &["pre-hook", "post-hook"];
/// Configs whose value is itself a map: in `dbt_project.yml` such a key is a config, not a
/// folder, even without the `+` prefix.
const DICT_CONFIGS: &[&str] = &[
    "meta",
    "grants",
    "docs",
    "persist_docs",
    "contract",
    "freshness",
    "quoting",
    "column_types",
    "partition_by",
    "labels",
];

/// Normalizes a config key: drops the `+` prefix and writes hooks as `pre-hook`/`post-hook`.
pub(crate) fn normalize_key(key: &str) -> String {
    let k = key.strip_prefix('+').unwrap_or(key);
    match k {
        "pre_hook" => "pre-hook".to_string(),
        "post_hook" => "post-hook".to_string(),
        other => other.to_string(),
    }
}

impl NodeConfig {
    /// Defaults every node of a resource type starts from.
    pub(crate) fn defaults(materialized: &str) -> Self {
        let mut m = Map::new();
        m.insert("enabled".into(), Value::Bool(true));
        m.insert("materialized".into(), Value::String(materialized.into()));
        m.insert("tags".into(), Value::Array(vec![]));
        m.insert("meta".into(), Value::Object(Map::new()));
        m.insert("pre-hook".into(), Value::Array(vec![]));
        m.insert("post-hook".into(), Value::Array(vec![]));
        NodeConfig(m)
    }

    /// Applies one more specific layer on top of this one.
    pub fn apply(&mut self, layer: &Map<String, Value>) {
        for (k, v) in layer {
            let key = normalize_key(k);
            if key == "tags" {
                let tags = self.0.entry("tags").or_insert_with(|| Value::Array(vec![]));
                let list = tags
                    .as_array_mut()
                    .expect("tags are always stored as a list");
                let new: Vec<Value> = match v {
                    Value::Array(a) => a.clone(),
                    Value::String(_) => vec![v.clone()],
                    _ => vec![],
                };
                for t in new {
                    if !list.contains(&t) {
                        list.push(t);
                    }
                }
            } else if MERGED_DICTS.contains(&key.as_str()) && v.is_object() {
                let slot = self
                    .0
                    .entry(key)
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                let m = slot.as_object_mut().expect("checked above");
                for (mk, mv) in v.as_object().expect("checked above") {
                    m.insert(mk.clone(), mv.clone());
                }
            } else if APPENDED_LISTS.contains(&key.as_str()) {
                let slot = self.0.entry(key).or_insert_with(|| Value::Array(vec![]));
                if !slot.is_array() {
                    *slot = Value::Array(vec![]);
                }
                let list = slot.as_array_mut().expect("checked above");
                match v {
                    Value::Array(a) => list.extend(a.iter().cloned()),
                    Value::Null => {}
                    other => list.push(other.clone()),
                }
            } else {
                self.0.insert(key, v.clone());
            }
        }
    }

    /// A config value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// A string config value (`None` when missing or null).
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    /// `materialized` (`view`, `table`, `incremental`, `ephemeral`, `seed`, `snapshot`, `test`).
    pub fn materialized(&self) -> &str {
        self.get_str("materialized").unwrap_or("view")
    }

    /// `enabled` (true unless set false).
    pub fn enabled(&self) -> bool {
        self.0
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }

    /// The custom schema, if any.
    pub fn schema(&self) -> Option<&str> {
        self.get_str("schema")
    }

    /// The alias, if any.
    pub fn alias(&self) -> Option<&str> {
        self.get_str("alias")
    }

    /// The custom database, if any.
    pub fn database(&self) -> Option<&str> {
        self.get_str("database")
    }

    /// The tags, in the order they were added.
    pub fn tags(&self) -> Vec<String> {
        self.0
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The config layers a folder block of `dbt_project.yml` gives a node whose path in the
/// project is `fqn` (`[package, folder…, name]`), least specific first.
pub(crate) fn folder_layers(block: &Value, fqn: &[String]) -> Vec<Map<String, Value>> {
    let mut out = Vec::new();
    let mut level = block;
    out.push(configs_of(level));
    for part in fqn {
        match level.get(part.as_str()) {
            Some(next) if next.is_object() && !is_config_key(part) => {
                level = next;
                out.push(configs_of(level));
            }
            _ => break,
        }
    }
    out
}

fn is_config_key(k: &str) -> bool {
    k.starts_with('+') || DICT_CONFIGS.contains(&k)
}

/// The configs at one level of a folder block: `+key` entries, and legacy unprefixed keys
/// whose values are not folders.
fn configs_of(level: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(obj) = level.as_object() {
        for (k, v) in obj {
            if k.starts_with('+') || DICT_CONFIGS.contains(&k.as_str()) || !v.is_object() {
                m.insert(normalize_key(k), v.clone());
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_add_up_and_meta_merges() {
        let mut c = NodeConfig::defaults("view");
        c.apply(
            serde_json::json!({"tags": ["a"], "meta": {"x": 1}, "materialized": "table"})
                .as_object()
                .unwrap(),
        );
        c.apply(
            serde_json::json!({"+tags": "b", "meta": {"y": 2}, "+pre_hook": "select 1"})
                .as_object()
                .unwrap(),
        );
        assert_eq!(c.tags(), vec!["a", "b"]);
        assert_eq!(c.get("meta").unwrap(), &serde_json::json!({"x": 1, "y": 2}));
        assert_eq!(c.materialized(), "table");
        assert_eq!(c.get("pre-hook").unwrap(), &serde_json::json!(["select 1"]));
    }

    #[test]
    fn folder_layers_follow_the_path() {
        let block = serde_json::json!({
            "+materialized": "view",
            "shop": {"+schema": "x", "staging": {"+materialized": "table", "meta": {"a": 1}},
                     "materialized": "ephemeral"}
        });
        let fqn: Vec<String> = ["shop", "staging", "stg_a"].map(String::from).into();
        let layers = folder_layers(&block, &fqn);
        assert_eq!(layers.len(), 3);
        assert_eq!(layers[1].get("materialized").unwrap(), "ephemeral");
        assert_eq!(layers[2].get("materialized").unwrap(), "table");
        assert!(layers[2].contains_key("meta"));
    }
}
