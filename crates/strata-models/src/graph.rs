//! The graph: nodes (models, seeds, snapshots, analyses, tests, sources), their configs,
//! relations and edges, built by rendering every node once in the parse phase.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::{NodeConfig, folder_layers};
use crate::jinja::{
    BUILTIN_MACROS, Capture, MacroSource, Phase, RefCall, RefLookup, Renderer, RendererSetup,
    Scope, Target,
};
use crate::project::{
    ColumnProps, DbtProject, FileKind, ProjectFile, PropertiesFile, ResourceProps, find_blocks,
    line_col, parse_properties, positioned,
};
use crate::{DEFAULT_TARGET_SCHEMA, Error, Result, TARGET_DATABASE};

pub use crate::jinja::RelationName as Relation;

/// The kind of a node, spelled as dbt spells it in unique ids and `--resource-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    /// A SQL model.
    Model,
    /// A CSV seed.
    Seed,
    /// A snapshot block.
    Snapshot,
    /// A data test (generic or singular).
    Test,
    /// A source table.
    Source,
    /// An analysis (compiled, never run).
    Analysis,
}

impl ResourceType {
    /// `model`, `seed`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Model => "model",
            ResourceType::Seed => "seed",
            ResourceType::Snapshot => "snapshot",
            ResourceType::Test => "test",
            ResourceType::Source => "source",
            ResourceType::Analysis => "analysis",
        }
    }

    /// Parses `model`, `seed`, … (`data_test` is accepted for `test`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "model" => ResourceType::Model,
            "seed" => ResourceType::Seed,
            "snapshot" => ResourceType::Snapshot,
            "test" | "data_test" => ResourceType::Test,
            "source" => ResourceType::Source,
            "analysis" => ResourceType::Analysis,
            _ => return None,
        })
    }
}

/// A documented column.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// `description:`.
    pub description: String,
    /// `data_type:` (contracts).
    pub data_type: Option<String>,
    /// `constraints:`.
    pub constraints: Vec<Value>,
    /// `meta:`.
    pub meta: Map<String, Value>,
    /// `tags:`.
    pub tags: Vec<String>,
}

/// What a node depends on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DependsOn {
    /// Unique ids of upstream nodes and sources.
    pub nodes: Vec<String>,
    /// Unique ids of the macros its rendering called.
    pub macros: Vec<String>,
}

/// Metadata of a generic test.
#[derive(Debug, Clone, Serialize)]
pub struct TestMetadata {
    /// `unique`, `not_null`, `accepted_values`, `relationships`, or a custom test's name.
    pub name: String,
    /// Its arguments (besides `model`).
    pub kwargs: Map<String, Value>,
    /// The package of a namespaced test (`dbt_utils.expression_is_true`).
    pub namespace: Option<String>,
}

/// A `unit_tests:` entry, attached to its model.
#[derive(Debug, Clone, Serialize)]
pub struct UnitTest {
    /// `unit_test.<package>.<model>.<name>`.
    pub unique_id: String,
    /// Its name.
    pub name: String,
    /// The package.
    pub package_name: String,
    /// The model under test (unique id).
    pub model: String,
    /// `given:` as written.
    pub given: Vec<Value>,
    /// `expect:` as written.
    pub expect: Value,
    /// `overrides:` as written.
    pub overrides: Option<Value>,
    /// `description:`.
    pub description: String,
    /// The property file.
    pub original_file_path: String,
}

/// One node of the graph.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// dbt's unique id: `model.<package>.<name>`, `source.<package>.<source>.<table>`, ….
    pub unique_id: String,
    /// What it is.
    pub resource_type: ResourceType,
    /// The package (project) defining it.
    pub package_name: String,
    /// Its name.
    pub name: String,
    /// The file, relative to its package's root (`models/staging/stg_orders.sql`).
    pub original_file_path: String,
    /// The file relative to its resource path (`staging/stg_orders.sql`).
    pub path: String,
    /// The package's root folder (absolute).
    #[serde(skip)]
    pub package_root: std::path::PathBuf,
    /// The fully qualified name: package, folders, name.
    pub fqn: Vec<String>,
    /// The SQL with Jinja, as written (for snapshots: the block's body).
    pub raw_code: String,
    /// Where `raw_code` starts in its file (1-based line, column).
    #[serde(skip)]
    pub raw_start: (usize, usize),
    /// The resolved config.
    pub config: NodeConfig,
    /// `description:`.
    pub description: String,
    /// Documented columns, by name.
    pub columns: BTreeMap<String, Column>,
    /// Upstream nodes and macros.
    pub depends_on: DependsOn,
    /// `ref` calls as written.
    pub refs: Vec<RefCall>,
    /// `source` calls as written.
    pub sources: Vec<(String, String)>,
    /// Where it lands (for sources: what it reads).
    pub relation: Relation,
    /// sha256 of the file (for tests and sources: of their definition).
    pub checksum: String,
    /// Set for generic tests.
    pub test_metadata: Option<TestMetadata>,
    /// For tests: the node the test is attached to.
    pub attached_node: Option<String>,
    /// For column tests: the column.
    pub column_name: Option<String>,
    /// The property file that described it.
    pub patch_path: Option<String>,
    /// For sources: `source_name`.
    pub source_name: Option<String>,
    /// For sources: `loaded_at_field`.
    pub loaded_at_field: Option<String>,
    /// For sources: `freshness` (`warn_after`, `error_after`, `filter`).
    pub freshness: Option<Value>,
    /// Model-level `constraints:`.
    pub constraints: Vec<Value>,
}

impl Node {
    /// `materialized` (`ephemeral` models are inlined as CTEs).
    pub fn materialized(&self) -> &str {
        self.config.materialized()
    }
}

/// A macro of the project, a package, or the built-in `dbt` package.
#[derive(Debug, Clone, Serialize)]
pub struct MacroDef {
    /// `macro.<package>.<name>`.
    pub unique_id: String,
    /// Its name.
    pub name: String,
    /// Its package.
    pub package_name: String,
    /// Its file.
    pub original_file_path: String,
    /// The block as written.
    pub macro_sql: String,
    /// `description:` from a `macros:` property entry.
    pub description: String,
    /// sha256 of `macro_sql`.
    pub checksum: String,
}

/// Options of [`Manifest::load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `--vars` as YAML or JSON text.
    pub vars: Option<String>,
    /// `target.name`.
    pub target_name: String,
    /// `target.schema`.
    pub target_schema: String,
    /// `target.threads`.
    pub threads: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            vars: None,
            target_name: "dev".into(),
            target_schema: DEFAULT_TARGET_SCHEMA.into(),
            threads: 4,
        }
    }
}

/// Options of [`Manifest::compile_node`].
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// What `is_incremental()` returns (the execution layer knows whether the table exists
    /// and the run is not a full refresh).
    pub is_incremental: bool,
    /// For one batch of a `microbatch` model: `ref`s and `source`s of nodes configured with
    /// an `event_time` column read only the rows inside this window.
    pub event_time_window: Option<EventTimeWindow>,
}

/// A microbatch window `[start, end)`, as SQL timestamp text (`2024-01-01 00:00:00`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTimeWindow {
    /// First instant inside the window.
    pub start: String,
    /// First instant after it.
    pub end: String,
}

/// Name resolution for one microbatch: relations of nodes with an `event_time` column are
/// read through the window's filter, as dbt does.
#[derive(Debug)]
struct WindowedLookup {
    inner: Arc<NameIndex>,
    /// Rendered relation → its `event_time` column.
    event_times: BTreeMap<String, String>,
    window: EventTimeWindow,
}

impl WindowedLookup {
    fn filtered(&self, mut r: Relation) -> Relation {
        if r.cte.is_none()
            && let Some(col) = self.event_times.get(&r.render())
        {
            r.filter = Some(format!(
                "{col} >= cast('{}' as timestamp) and {col} < cast('{}' as timestamp)",
                self.window.start, self.window.end
            ));
        }
        r
    }
}

impl RefLookup for WindowedLookup {
    fn resolve_ref(&self, call: &RefCall) -> std::result::Result<Relation, String> {
        self.inner.resolve_ref(call).map(|r| self.filtered(r))
    }
    fn resolve_source(&self, source: &str, table: &str) -> std::result::Result<Relation, String> {
        self.inner
            .resolve_source(source, table)
            .map(|r| self.filtered(r))
    }
}

/// A loaded, parsed project: every node with its config, relation and edges.
#[derive(Debug)]
pub struct Manifest {
    /// The project and its packages as loaded.
    pub project: DbtProject,
    /// Every node and source, by unique id.
    pub nodes: BTreeMap<String, Node>,
    /// Every macro, by unique id.
    pub macros: BTreeMap<String, MacroDef>,
    /// Docs blocks by `<package>.<name>`.
    pub docs: BTreeMap<String, String>,
    /// Unit tests by unique id.
    pub unit_tests: BTreeMap<String, UnitTest>,
    /// Node → its parents.
    pub parent_map: BTreeMap<String, Vec<String>>,
    /// Node → its children.
    pub child_map: BTreeMap<String, Vec<String>>,
    /// The renderer (macros, globals).
    pub renderer: Renderer,
    /// The target.
    pub target: Target,
    /// `invocation_id` of this load.
    pub invocation_id: String,
    /// When the load started.
    pub generated_at: chrono::DateTime<chrono::Utc>,
    index: Arc<NameIndex>,
    /// Runs `run_query` and friends while compiling; set by the execution layer.
    query_runner: std::sync::RwLock<Option<Arc<dyn crate::QueryRunner>>>,
}

#[derive(Debug, Default)]
struct NameIndex {
    /// (package, name) → relation and ephemeral flag, for models/seeds/snapshots.
    refs: BTreeMap<(String, String), (String, Relation)>,
    sources: BTreeMap<(String, String), (String, Relation)>,
}

impl RefLookup for NameIndex {
    fn resolve_ref(&self, call: &RefCall) -> std::result::Result<Relation, String> {
        self.find_ref(call, None).map(|(_, r)| r.clone())
    }
    fn resolve_source(&self, source: &str, table: &str) -> std::result::Result<Relation, String> {
        self.sources
            .get(&(source.to_string(), table.to_string()))
            .map(|(_, r)| r.clone())
            .ok_or_else(|| self.source_missing(source, table))
    }
}

impl NameIndex {
    fn find_ref(
        &self,
        call: &RefCall,
        from_package: Option<&str>,
    ) -> std::result::Result<&(String, Relation), String> {
        if let Some(p) = &call.package {
            return self
                .refs
                .get(&(p.clone(), call.name.clone()))
                .ok_or_else(|| self.ref_missing(call));
        }
        if let Some(p) = from_package
            && let Some(x) = self.refs.get(&(p.to_string(), call.name.clone()))
        {
            return Ok(x);
        }
        self.refs
            .iter()
            .find(|((_, n), _)| *n == call.name)
            .map(|(_, v)| v)
            .ok_or_else(|| self.ref_missing(call))
    }

    fn ref_missing(&self, call: &RefCall) -> String {
        let names: Vec<&str> = self.refs.keys().map(|(_, n)| n.as_str()).collect();
        let shown = match &call.package {
            Some(p) => format!("ref('{p}', '{}')", call.name),
            None => format!("ref('{}')", call.name),
        };
        match closest(&call.name, names) {
            Some(s) => format!("{shown} names no model, seed or snapshot; did you mean `{s}`?"),
            None => format!("{shown} names no model, seed or snapshot"),
        }
    }

    fn source_missing(&self, source: &str, table: &str) -> String {
        let names: Vec<String> = self
            .sources
            .keys()
            .map(|(s, t)| format!("{s}.{t}"))
            .collect();
        let want = format!("{source}.{table}");
        match closest(&want, names.iter().map(String::as_str)) {
            Some(s) => format!(
                "source('{source}', '{table}') is not declared in any sources: block; did you mean `{s}`?"
            ),
            None => format!(
                "source('{source}', '{table}') is not declared; add it under `sources:` in a .yml file"
            ),
        }
    }
}

/// The candidate closest to `want` by edit distance, when close enough to be a typo.
pub(crate) fn closest<'a>(
    want: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(want, c), c))
        .filter(|(d, c)| *d <= (want.len().max(c.len()) / 3).max(2))
        .min()
        .map(|(_, c)| c.to_string())
}

/// Hex MD5, as dbt hashes long test names.
fn md5(s: &str) -> String {
    use md5::Digest;
    md5::Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn sha256(s: &str) -> String {
    let mut h = Sha256::new();
    h.update(s.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn package_vars(
    project: &DbtProject,
    cli: &Map<String, Value>,
) -> BTreeMap<String, Map<String, Value>> {
    let names: BTreeSet<String> = project.all().map(|p| p.name.clone()).collect();
    let globals = |p: &DbtProject| -> Map<String, Value> {
        p.vars
            .iter()
            .filter(|(k, v)| !(names.contains(*k) && v.is_object()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let scoped = |p: &DbtProject, pkg: &str| -> Map<String, Value> {
        p.vars
            .get(pkg)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let mut out = BTreeMap::new();
    for p in project.all() {
        let mut m = Map::new();
        if p.name != project.name {
            m.extend(globals(p));
            m.extend(scoped(p, &p.name));
        }
        m.extend(globals(project));
        m.extend(scoped(project, &p.name));
        m.extend(cli.clone());
        out.insert(p.name.clone(), m);
    }
    out
}

fn parse_cli_vars(text: Option<&str>) -> Result<Map<String, Value>> {
    let Some(t) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Map::new());
    };
    let v: Value = serde_saphyr::from_str(t).map_err(|e| Error::Input {
        what: "--vars".into(),
        message: format!(
            "not valid YAML or JSON: {}",
            e.to_string().lines().next().unwrap_or("")
        ),
    })?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(Error::Input {
            what: "--vars".into(),
            message: "expected a mapping like '{key: value}'".into(),
        }),
    }
}

/// The display path of a package file: relative to the root project when inside it.
fn display_path(root: &Path, pkg: &DbtProject, rel: &str) -> String {
    let abs = pkg.root.join(rel);
    abs.strip_prefix(root)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .unwrap_or_else(|_| abs.display().to_string())
}

fn collect_macros(project: &DbtProject) -> Result<(Vec<MacroSource>, Vec<MacroDef>)> {
    let mut sources = Vec::new();
    let mut defs = Vec::new();
    let mut push = |package: &str, path: String, file_text: &str| -> Result<()> {
        for b in find_blocks(&path, file_text, &["macro", "test", "materialization"])? {
            let (name, template) = match b.kind.as_str() {
                "macro" => (b.name.clone(), positioned(&b.full, b.start)),
                "test" => {
                    let name = format!("test_{}", b.name);
                    let t = format!("{{% macro {name}{} %}}{}{{% endmacro %}}", b.args, b.body);
                    (name, positioned(&t, b.start))
                }
                _ => {
                    let adapter = b
                        .args
                        .split(',')
                        .nth(1)
                        .map(|a| {
                            a.trim()
                                .trim_start_matches("adapter")
                                .trim_start_matches('=')
                                .trim_matches(|c| c == '\'' || c == '"' || c == ' ')
                                .to_string()
                        })
                        .unwrap_or_else(|| "default".into());
                    let name = format!("materialization_{}_{adapter}", b.name);
                    let t = format!("{{% macro {name}() %}}{}{{% endmacro %}}", b.body);
                    (name, positioned(&t, b.start))
                }
            };
            defs.push(MacroDef {
                unique_id: format!("macro.{package}.{name}"),
                name: name.clone(),
                package_name: package.to_string(),
                original_file_path: path.clone(),
                checksum: sha256(&b.full),
                macro_sql: b.full.clone(),
                description: String::new(),
            });
            sources.push(MacroSource {
                package: package.to_string(),
                name,
                path: path.clone(),
                template,
            });
        }
        Ok(())
    };
    push("dbt", "dbt/generic_tests.sql".into(), BUILTIN_MACROS)?;
    for p in project.all() {
        for f in p.files.iter().filter(|f| f.kind == FileKind::Macro) {
            push(&p.name, display_path(&project.root, p, &f.path), &f.text)?;
        }
    }
    Ok((sources, defs))
}

/// Config keys a generic test entry may carry beside its arguments.
const TEST_CONFIG_KEYS: &[&str] = &[
    "severity",
    "where",
    "limit",
    "warn_if",
    "error_if",
    "fail_calc",
    "store_failures",
    "store_failures_as",
    "enabled",
    "tags",
    "meta",
    "database",
    "schema",
    "alias",
];

struct PendingTest {
    package: String,
    yml_path: String,
    yml_dirs: Vec<String>,
    target: TestTarget,
    column: Option<String>,
    entry: serde_saphyr::Spanned<Value>,
}

enum TestTarget {
    Ref(String),
    Source(String, String),
}

impl TestTarget {
    fn jinja(&self) -> String {
        match self {
            TestTarget::Ref(m) => format!("ref('{m}')"),
            TestTarget::Source(s, t) => format!("source('{s}', '{t}')"),
        }
    }
    fn label(&self) -> String {
        match self {
            TestTarget::Ref(m) => m.clone(),
            TestTarget::Source(s, t) => format!("{s}_{t}"),
        }
    }
}

fn jinja_literal(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::Bool(b) => if *b { "true" } else { "false" }.into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(jinja_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    jinja_literal(&Value::String(k.clone())),
                    jinja_literal(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// dbt's generic test naming: `<type>_<model>_<args…>` with non-word characters as `_`;
/// names of 64 characters or more are shortened with a hash.
fn test_name(
    namespace: Option<&str>,
    test: &str,
    model: &str,
    kwargs: &Map<String, Value>,
) -> String {
    let re = regex::Regex::new("[^0-9a-zA-Z_]+").expect("static regex");
    let mut flat = Vec::new();
    for (_, v) in kwargs.iter() {
        let parts: Vec<String> = match v {
            Value::Object(m) => m.values().map(value_str).collect(),
            Value::Array(a) => a.iter().map(value_str).collect(),
            other => vec![value_str(other)],
        };
        flat.extend(
            parts
                .into_iter()
                .map(|p| re.replace_all(&p, "_").into_owned()),
        );
    }
    let prefix = namespace.map(|n| format!("{n}_")).unwrap_or_default();
    let full = format!("{prefix}{test}_{model}_{}", flat.join("__"));
    if full.len() >= 64 {
        let ident: String = format!("{prefix}{test}_{model}").chars().take(30).collect();
        format!("{ident}_{}", md5(&full))
    } else {
        full
    }
}

fn value_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

impl Manifest {
    /// Loads the project in `root` and parses every node.
    pub fn load(root: &Path, opts: &LoadOptions) -> Result<Self> {
        let project = DbtProject::load(root)?;
        Self::from_project(project, opts)
    }

    /// Parses an already loaded project.
    pub fn from_project(project: DbtProject, opts: &LoadOptions) -> Result<Self> {
        let generated_at = chrono::Utc::now();
        let invocation_id = uuid::Uuid::new_v4().to_string();
        let cli_vars = parse_cli_vars(opts.vars.as_deref())?;
        let target = Target {
            name: opts.target_name.clone(),
            schema: opts.target_schema.clone(),
            database: TARGET_DATABASE.into(),
            threads: opts.threads,
        };
        let (macro_sources, macro_defs) = collect_macros(&project)?;
        let mut packages: Vec<String> = project.all().map(|p| p.name.clone()).collect();
        packages.push("dbt".into());
        let renderer = Renderer::new(RendererSetup {
            root_package: project.name.clone(),
            packages,
            macros: macro_sources,
            vars: package_vars(&project, &cli_vars),
            target: target.clone(),
            invocation_id: invocation_id.clone(),
            run_started_at: generated_at,
            dispatch: project.dispatch.clone(),
        })?;
        let mut b = Builder {
            root: project.root.clone(),
            root_name: project.name.clone(),
            renderer: &renderer,
            target: &target,
            nodes: BTreeMap::new(),
            docs: BTreeMap::new(),
            unit_tests: BTreeMap::new(),
            macros: macro_defs
                .into_iter()
                .map(|m| (m.unique_id.clone(), m))
                .collect(),
            tests: Vec::new(),
            props: BTreeMap::new(),
            unit_props: Vec::new(),
            origins: BTreeMap::new(),
            root_configs: project.configs.clone(),
        };
        for p in project.all() {
            b.load_properties_and_docs(p)?;
        }
        for p in project.all() {
            b.load_nodes(p)?;
        }
        b.load_tests(&project)?;
        b.unit_tests_resolve()?;
        let Builder {
            nodes,
            macros,
            docs,
            unit_tests,
            origins,
            ..
        } = b;
        let mut m = Manifest {
            nodes,
            macros,
            docs,
            unit_tests,
            parent_map: BTreeMap::new(),
            child_map: BTreeMap::new(),
            renderer,
            target,
            invocation_id,
            generated_at,
            index: Arc::default(),
            query_runner: std::sync::RwLock::default(),
            project,
        };
        m.link(&origins)?;
        m.topo_order()?;
        Ok(m)
    }

    fn link(&mut self, origins: &BTreeMap<String, (String, u64, u64)>) -> Result<()> {
        let mut index = NameIndex::default();
        for n in self.nodes.values() {
            match n.resource_type {
                ResourceType::Model | ResourceType::Seed | ResourceType::Snapshot => {
                    index.refs.insert(
                        (n.package_name.clone(), n.name.clone()),
                        (n.unique_id.clone(), n.relation.clone()),
                    );
                }
                ResourceType::Source => {
                    let s = n.source_name.clone().unwrap_or_default();
                    index.sources.insert(
                        (s, n.name.clone()),
                        (n.unique_id.clone(), n.relation.clone()),
                    );
                }
                _ => {}
            }
        }
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        for id in &ids {
            let n = &self.nodes[id];
            let mut deps = Vec::new();
            for call in &n.refs {
                match index.find_ref(call, Some(&n.package_name)) {
                    Ok((uid, _)) => deps.push(uid.clone()),
                    Err(msg) => {
                        return Err(self.located(n, origins, &format!("'{}'", call.name), msg));
                    }
                }
            }
            for (s, t) in &n.sources {
                match index.sources.get(&(s.clone(), t.clone())) {
                    Some((uid, _)) => deps.push(uid.clone()),
                    None => {
                        let msg = index.source_missing(s, t);
                        return Err(self.located(n, origins, &format!("'{t}'"), msg));
                    }
                }
            }
            let mut seen = BTreeSet::new();
            deps.retain(|d| seen.insert(d.clone()));
            let node = self.nodes.get_mut(id).expect("id taken from the map");
            node.depends_on.nodes = deps;
        }
        let mut parents = BTreeMap::new();
        let mut children: BTreeMap<String, Vec<String>> =
            self.nodes.keys().map(|k| (k.clone(), Vec::new())).collect();
        for n in self.nodes.values() {
            parents.insert(n.unique_id.clone(), n.depends_on.nodes.clone());
            for p in &n.depends_on.nodes {
                children
                    .entry(p.clone())
                    .or_default()
                    .push(n.unique_id.clone());
            }
        }
        for c in children.values_mut() {
            c.sort();
        }
        self.parent_map = parents;
        self.child_map = children;
        self.index = Arc::new(index);
        Ok(())
    }

    /// An error at the place in `n`'s file where `needle` appears (a ref or source name), or
    /// at the yml entry that generated a test.
    fn located(
        &self,
        n: &Node,
        origins: &BTreeMap<String, (String, u64, u64)>,
        needle: &str,
        msg: String,
    ) -> Error {
        if let Some((path, line, col)) = origins.get(&n.unique_id) {
            return Error::at(path, *line, *col, format!("{msg} (in {})", n.name));
        }
        let path = display_path(
            &self.project.root,
            self.package(&n.package_name),
            &n.original_file_path,
        );
        let (line, col) = match n.raw_code.find(needle) {
            Some(off) => {
                let (l, c) = line_col(&n.raw_code, off);
                let l = l + n.raw_start.0 - 1;
                let c = if l == n.raw_start.0 {
                    c + n.raw_start.1 - 1
                } else {
                    c
                };
                (l as u64, c as u64)
            }
            None => (0, 0),
        };
        Error::at(path, line, col, msg)
    }

    fn package(&self, name: &str) -> &DbtProject {
        self.project
            .all()
            .find(|p| p.name == name)
            .unwrap_or(&self.project)
    }

    /// Node ids (sources excluded) in an order where every node comes after its parents.
    /// Fails with [`Error::Cycle`] naming the nodes of a cycle.
    pub fn topo_order(&self) -> Result<Vec<String>> {
        let mut state: BTreeMap<&str, u8> = BTreeMap::new();
        let mut order = Vec::new();
        fn visit<'a>(
            m: &'a Manifest,
            id: &'a str,
            state: &mut BTreeMap<&'a str, u8>,
            stack: &mut Vec<&'a str>,
            order: &mut Vec<String>,
        ) -> Result<()> {
            match state.get(id) {
                Some(2) => return Ok(()),
                Some(1) => {
                    let start = stack.iter().position(|s| *s == id).unwrap_or(0);
                    let mut members: Vec<String> =
                        stack[start..].iter().map(|s| s.to_string()).collect();
                    members.push(id.to_string());
                    return Err(Error::Cycle { members });
                }
                _ => {}
            }
            state.insert(id, 1);
            stack.push(id);
            if let Some(ps) = m.parent_map.get(id) {
                for p in ps {
                    visit(m, p, state, stack, order)?;
                }
            }
            stack.pop();
            state.insert(id, 2);
            if m.nodes
                .get(id)
                .is_some_and(|n| n.resource_type != ResourceType::Source)
            {
                order.push(id.to_string());
            }
            Ok(())
        }
        for id in self.nodes.keys() {
            visit(self, id, &mut state, &mut Vec::new(), &mut order)?;
        }
        Ok(order)
    }

    /// Gives compile-time rendering a database connection: `run_query`, `statement` /
    /// `load_result` and `adapter.get_columns_in_relation` run through `runner`.
    pub fn set_query_runner(&self, runner: Arc<dyn crate::QueryRunner>) {
        *self.query_runner.write().unwrap_or_else(|p| p.into_inner()) = Some(runner);
    }

    fn query_runner(&self) -> Option<Arc<dyn crate::QueryRunner>> {
        self.query_runner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The scope a node renders in.
    fn scope(&self, n: &Node, phase: Phase, is_incremental: bool) -> Scope {
        Scope {
            package: n.package_name.clone(),
            this: Some(n.relation.clone()),
            model: node_dict(n),
            config: n.config.0.clone(),
            is_incremental,
            phase,
            query: self.query_runner(),
        }
    }

    /// Renders node `id`'s SQL with real relation names, ephemeral models inlined as CTEs.
    pub fn compile_node(&self, id: &str, opts: &CompileOptions) -> Result<String> {
        let n = self.nodes.get(id).ok_or_else(|| Error::Input {
            what: "node".into(),
            message: format!("no node `{id}`"),
        })?;
        if n.resource_type == ResourceType::Source || n.resource_type == ResourceType::Seed {
            return Ok(String::new());
        }
        let sql = self.render_body(n, opts.is_incremental, opts.event_time_window.as_ref())?;
        let mut ephemerals = Vec::new();
        self.ephemeral_parents(id, &mut ephemerals, &mut BTreeSet::new());
        if ephemerals.is_empty() {
            return Ok(sql);
        }
        let mut ctes = Vec::new();
        for e in &ephemerals {
            let en = &self.nodes[e];
            let body = self.render_body(en, false, None)?;
            ctes.push(format!("__dbt__cte__{} as (\n{}\n)", en.name, body.trim()));
        }
        Ok(inject_ctes(&sql, &ctes))
    }

    fn render_body(
        &self,
        n: &Node,
        is_incremental: bool,
        window: Option<&EventTimeWindow>,
    ) -> Result<String> {
        let lookup: Arc<dyn RefLookup> = match window {
            None => Arc::clone(&self.index) as Arc<dyn RefLookup>,
            Some(w) => Arc::new(WindowedLookup {
                inner: Arc::clone(&self.index),
                event_times: self
                    .nodes
                    .values()
                    .filter_map(|n| {
                        let col = n.config.get_str("event_time")?;
                        Some((n.relation.render(), col.to_string()))
                    })
                    .collect(),
                window: w.clone(),
            }),
        };
        let scope = self.scope(n, Phase::Compile(lookup), is_incremental);
        let name = if n.test_metadata.is_some() {
            n.patch_path
                .clone()
                .unwrap_or_else(|| n.original_file_path.clone())
        } else {
            display_path(
                &self.project.root,
                self.package(&n.package_name),
                &n.original_file_path,
            )
        };
        self.renderer
            .render(&name, &positioned(&n.raw_code, n.raw_start), &scope)
            .map(|s| {
                if n.raw_start == (1, 1) {
                    s
                } else {
                    s.trim().to_string()
                }
            })
    }

    fn ephemeral_parents(&self, id: &str, out: &mut Vec<String>, seen: &mut BTreeSet<String>) {
        for p in self.parent_map.get(id).into_iter().flatten() {
            let Some(pn) = self.nodes.get(p) else {
                continue;
            };
            if pn.resource_type == ResourceType::Model
                && pn.materialized() == "ephemeral"
                && seen.insert(p.clone())
            {
                self.ephemeral_parents(p, out, seen);
                out.push(p.clone());
            }
        }
    }

    /// Renders a hook at run time: with a node, `this` is its relation (`pre-hook`,
    /// `post-hook`); without one, a project hook (`on-run-start`, `on-run-end`). `name`
    /// locates errors.
    pub fn render_hook(&self, node: Option<&str>, name: &str, text: &str) -> Result<String> {
        let lookup: Arc<dyn RefLookup> = Arc::clone(&self.index) as Arc<dyn RefLookup>;
        let scope = match node.and_then(|id| self.nodes.get(id)) {
            Some(n) => self.scope(n, Phase::Compile(lookup), false),
            None => Scope {
                package: self.project.name.clone(),
                this: None,
                model: serde_json::Value::Null,
                config: serde_json::Map::new(),
                is_incremental: false,
                phase: Phase::Compile(lookup),
                query: self.query_runner(),
            },
        };
        self.renderer
            .render(name, text, &scope)
            .map(|s| s.trim().to_string())
    }

    /// Every node (sources excluded) compiled, keyed by unique id.
    pub fn compile_all(&self, ids: &[String]) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for id in ids {
            out.insert(
                id.clone(),
                self.compile_node(id, &CompileOptions::default())?,
            );
        }
        Ok(out)
    }
}

fn inject_ctes(sql: &str, ctes: &[String]) -> String {
    let trimmed = sql.trim_start();
    let lower = trimmed.to_ascii_lowercase();
    if lower.starts_with("with ") || lower.starts_with("with\n") {
        format!("with {},\n{}", ctes.join(",\n"), &trimmed[4..].trim_start())
    } else {
        format!("with {}\n{}", ctes.join(",\n"), trimmed)
    }
}

fn node_dict(n: &Node) -> Value {
    json!({
        "unique_id": n.unique_id, "name": n.name, "package_name": n.package_name,
        "resource_type": n.resource_type.as_str(), "fqn": n.fqn, "path": n.path,
        "original_file_path": n.original_file_path, "config": n.config,
        "tags": n.config.tags(), "alias": n.relation.identifier, "schema": n.relation.schema,
        "database": n.relation.database, "raw_code": n.raw_code,
    })
}

struct Builder<'a> {
    root: std::path::PathBuf,
    root_name: String,
    renderer: &'a Renderer,
    target: &'a Target,
    nodes: BTreeMap<String, Node>,
    docs: BTreeMap<String, String>,
    unit_tests: BTreeMap<String, UnitTest>,
    macros: BTreeMap<String, MacroDef>,
    tests: Vec<PendingTest>,
    /// (package, resource type, name) → (properties, yml path).
    props: BTreeMap<(String, ResourceType, String), (ResourceProps, String)>,
    unit_props: Vec<(String, String, crate::project::UnitTestProps)>,
    /// Generated test id → (yml path, line, column) of its entry.
    origins: BTreeMap<String, (String, u64, u64)>,
    /// The root project's folder config blocks (they apply to packages' nodes too).
    root_configs: BTreeMap<String, Value>,
}

fn resource_key(t: ResourceType) -> &'static str {
    match t {
        ResourceType::Model => "models",
        ResourceType::Seed => "seeds",
        ResourceType::Snapshot => "snapshots",
        ResourceType::Test => "data_tests",
        ResourceType::Source => "sources",
        ResourceType::Analysis => "analyses",
    }
}

impl Builder<'_> {
    fn doc_text(&self, package: &str, text: Option<&str>) -> String {
        let Some(t) = text else { return String::new() };
        let re = regex::Regex::new(r#"\{\{\s*doc\(\s*['"]([^'"]+)['"]\s*\)\s*\}\}"#)
            .expect("static regex");
        re.replace_all(t, |c: &regex::Captures<'_>| {
            self.docs
                .get(&format!("{package}.{}", &c[1]))
                .or_else(|| self.docs.get(&format!("{}.{}", self.root_name, &c[1])))
                .cloned()
                .unwrap_or_default()
        })
        .into_owned()
    }

    fn load_properties_and_docs(&mut self, p: &DbtProject) -> Result<()> {
        for f in p.files.iter().filter(|f| f.kind == FileKind::Docs) {
            let path = display_path(&self.root, p, &f.path);
            for b in find_blocks(&path, &f.text, &["docs"])? {
                self.docs
                    .insert(format!("{}.{}", p.name, b.name), b.body.trim().to_string());
            }
        }
        for f in p.files.iter().filter(|f| f.kind == FileKind::Properties) {
            let path = display_path(&self.root, p, &f.path);
            let props: PropertiesFile = parse_properties(&path, &f.text)?;
            let dirs: Vec<String> = dirs_of(f);
            for (list, rt) in [
                (props.models, ResourceType::Model),
                (props.seeds, ResourceType::Seed),
                (props.snapshots, ResourceType::Snapshot),
                (props.analyses, ResourceType::Analysis),
            ] {
                for r in list {
                    let name = r.name.value.clone();
                    for t in &r.tests {
                        self.tests.push(PendingTest {
                            package: p.name.clone(),
                            yml_path: path.clone(),
                            yml_dirs: dirs.clone(),
                            target: TestTarget::Ref(name.clone()),
                            column: None,
                            entry: t.clone(),
                        });
                    }
                    self.column_tests(p, &path, &dirs, &r.columns, || {
                        TestTarget::Ref(name.clone())
                    });
                    self.props
                        .insert((p.name.clone(), rt, name), (r, path.clone()));
                }
            }
            for m in props.macros {
                let id = format!("macro.{}.{}", p.name, m.name.value);
                if let Some(def) = self.macros.get_mut(&id) {
                    def.description = m.description.unwrap_or_default();
                }
            }
            for u in props.unit_tests {
                self.unit_props.push((p.name.clone(), path.clone(), u));
            }
            for s in props.sources {
                self.add_source_props(p, &path, &dirs, s)?;
            }
        }
        Ok(())
    }

    fn column_tests(
        &mut self,
        p: &DbtProject,
        path: &str,
        dirs: &[String],
        columns: &[ColumnProps],
        target: impl Fn() -> TestTarget,
    ) {
        for c in columns {
            for t in &c.tests {
                self.tests.push(PendingTest {
                    package: p.name.clone(),
                    yml_path: path.to_string(),
                    yml_dirs: dirs.to_vec(),
                    target: target(),
                    column: Some(c.name.value.clone()),
                    entry: t.clone(),
                });
            }
        }
    }

    fn columns(&self, package: &str, cols: &[ColumnProps]) -> BTreeMap<String, Column> {
        cols.iter()
            .map(|c| {
                (
                    c.name.value.clone(),
                    Column {
                        name: c.name.value.clone(),
                        description: self.doc_text(package, c.description.as_deref()),
                        data_type: c.data_type.clone(),
                        constraints: c.constraints.clone(),
                        meta: c.meta.clone().unwrap_or_default(),
                        tags: c.tags.clone(),
                    },
                )
            })
            .collect()
    }

    fn add_source_props(
        &mut self,
        p: &DbtProject,
        path: &str,
        dirs: &[String],
        s: crate::project::SourceProps,
    ) -> Result<()> {
        let sname = s.name.value.clone();
        for t in &s.tables {
            let tname = t.name.value.clone();
            let id = format!("source.{}.{sname}.{tname}", p.name);
            let mut fqn = vec![p.name.clone()];
            fqn.extend(dirs.iter().cloned());
            fqn.push(sname.clone());
            fqn.push(tname.clone());
            let mut config = NodeConfig::default();
            config.0.insert("enabled".into(), Value::Bool(true));
            config.0.insert("tags".into(), Value::Array(vec![]));
            config.0.insert("meta".into(), Value::Object(Map::new()));
            for layer in self.project_layers(p, ResourceType::Source, &fqn) {
                config.apply(&layer);
            }
            for layer in [&s.config, &t.config].into_iter().flatten() {
                config.apply(layer);
            }
            let tags: Vec<Value> = s
                .tags
                .iter()
                .chain(&t.tags)
                .map(|x| Value::String(x.clone()))
                .collect();
            config.apply(&Map::from_iter([("tags".to_string(), Value::Array(tags))]));
            if !config.enabled() {
                continue;
            }
            let freshness = match &t.freshness {
                Some(Value::Null) => None,
                Some(f) => Some(f.clone()),
                None => s.freshness.clone().filter(|f| !f.is_null()),
            };
            let relation = Relation {
                database: s.database.clone().unwrap_or_else(|| TARGET_DATABASE.into()),
                schema: s.schema.clone().unwrap_or_else(|| sname.clone()),
                identifier: t.identifier.clone().unwrap_or_else(|| tname.clone()),
                cte: None,
                filter: None,
            };
            let definition = format!(
                "{sname}.{tname}:{relation:?}:{freshness:?}:{:?}",
                t.loaded_at_field
            );
            self.nodes.insert(
                id.clone(),
                Node {
                    unique_id: id,
                    resource_type: ResourceType::Source,
                    package_name: p.name.clone(),
                    name: tname.clone(),
                    original_file_path: path_in_package(&self.root, p, path),
                    path: path_in_package(&self.root, p, path),
                    package_root: p.root.clone(),
                    fqn,
                    raw_code: String::new(),
                    raw_start: (1, 1),
                    config,
                    description: self.doc_text(
                        &p.name,
                        t.description.as_deref().or(s.description.as_deref()),
                    ),
                    columns: self.columns(&p.name, &t.columns),
                    depends_on: DependsOn::default(),
                    refs: vec![],
                    sources: vec![],
                    relation,
                    checksum: sha256(&definition),
                    test_metadata: None,
                    attached_node: None,
                    column_name: None,
                    patch_path: Some(path.to_string()),
                    source_name: Some(sname.clone()),
                    loaded_at_field: t
                        .loaded_at_field
                        .clone()
                        .or_else(|| s.loaded_at_field.clone()),
                    freshness,
                    constraints: vec![],
                },
            );
            for test in &t.tests {
                self.tests.push(PendingTest {
                    package: p.name.clone(),
                    yml_path: path.to_string(),
                    yml_dirs: dirs.to_vec(),
                    target: TestTarget::Source(sname.clone(), tname.clone()),
                    column: None,
                    entry: test.clone(),
                });
            }
            let (sn, tn) = (sname.clone(), tname.clone());
            self.column_tests(p, path, dirs, &t.columns, || {
                TestTarget::Source(sn.clone(), tn.clone())
            });
        }
        Ok(())
    }

    /// Folder config layers from the package's own `dbt_project.yml`, then the root's.
    fn project_layers(
        &self,
        p: &DbtProject,
        rt: ResourceType,
        fqn: &[String],
    ) -> Vec<Map<String, Value>> {
        let key = resource_key(rt);
        let mut layers = Vec::new();
        if let Some(block) = p.configs.get(key) {
            layers.extend(folder_layers(block, fqn));
        }
        if p.name != self.root_name
            && let Some(root) = self.root_project_configs(key)
        {
            layers.extend(folder_layers(&root, fqn));
        }
        layers
    }

    fn root_project_configs(&self, key: &str) -> Option<Value> {
        self.root_configs.get(key).cloned()
    }

    fn load_nodes(&mut self, p: &DbtProject) -> Result<()> {
        for f in &p.files {
            let rt = match f.kind {
                FileKind::Model => ResourceType::Model,
                FileKind::Analysis => ResourceType::Analysis,
                FileKind::Seed => ResourceType::Seed,
                FileKind::Snapshot => ResourceType::Snapshot,
                FileKind::SingularTest => ResourceType::Test,
                _ => continue,
            };
            let stem = Path::new(&f.path)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            let mut fqn = vec![p.name.clone()];
            fqn.extend(dirs_of(f));
            let shown = display_path(&self.root, p, &f.path);
            if rt == ResourceType::Snapshot {
                for b in find_blocks(&shown, &f.text, &["snapshot"])? {
                    let mut fq = fqn.clone();
                    fq.push(stem.clone());
                    fq.push(b.name.clone());
                    self.add_node(
                        p,
                        f,
                        rt,
                        b.name.clone(),
                        fq,
                        b.body.clone(),
                        b.body_start,
                        &shown,
                    )?;
                }
                continue;
            }
            fqn.push(stem.clone());
            self.add_node(p, f, rt, stem, fqn, f.text.clone(), (1, 1), &shown)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn add_node(
        &mut self,
        p: &DbtProject,
        f: &ProjectFile,
        rt: ResourceType,
        name: String,
        fqn: Vec<String>,
        raw_code: String,
        raw_start: (usize, usize),
        shown: &str,
    ) -> Result<()> {
        let default_mat = match rt {
            ResourceType::Seed => "seed",
            ResourceType::Snapshot => "snapshot",
            ResourceType::Test => "test",
            _ => "view",
        };
        let mut config = NodeConfig::defaults(default_mat);
        if rt == ResourceType::Test {
            config.apply(&test_defaults());
        }
        for layer in self.project_layers(p, rt, &fqn) {
            config.apply(&layer);
        }
        let props = self.props.remove(&(p.name.clone(), rt, name.clone()));
        if let Some((r, _)) = &props {
            if let Some(meta) = &r.meta {
                config.apply(&Map::from_iter([(
                    "meta".to_string(),
                    Value::Object(meta.clone()),
                )]));
            }
            if let Some(c) = &r.config {
                config.apply(c);
            }
        }
        let capture = Arc::new(Mutex::new(Capture::default()));
        if rt != ResourceType::Seed {
            let scope = Scope {
                package: p.name.clone(),
                this: None,
                model: json!({"name": name, "package_name": p.name, "resource_type": rt.as_str()}),
                config: config.0.clone(),
                is_incremental: false,
                phase: Phase::Parse(Arc::clone(&capture)),
                query: None,
            };
            self.renderer
                .render(shown, &positioned(&raw_code, raw_start), &scope)?;
        }
        let cap = capture
            .lock()
            .expect("capture lock is never poisoned")
            .clone();
        config.apply(&cap.config);
        if !config.enabled() {
            return Ok(());
        }
        let id = format!("{}.{}.{}", rt.as_str(), p.name, name);
        let rel_path = f
            .path
            .strip_prefix(&format!("{}/", f.resource_dir))
            .unwrap_or(&f.path)
            .to_string();
        let mut node = Node {
            unique_id: id.clone(),
            resource_type: rt,
            package_name: p.name.clone(),
            name: name.clone(),
            original_file_path: f.path.clone(),
            path: rel_path,
            package_root: p.root.clone(),
            fqn,
            raw_code,
            raw_start,
            config,
            description: String::new(),
            columns: BTreeMap::new(),
            depends_on: DependsOn {
                nodes: vec![],
                macros: cap.macros.iter().cloned().collect(),
            },
            refs: cap.refs,
            sources: cap.sources,
            relation: Relation {
                database: String::new(),
                schema: String::new(),
                identifier: String::new(),
                cte: None,
                filter: None,
            },
            checksum: sha256(if rt == ResourceType::Seed {
                &f.path
            } else {
                &f.text
            }),
            test_metadata: None,
            attached_node: None,
            column_name: None,
            patch_path: None,
            source_name: None,
            loaded_at_field: None,
            freshness: None,
            constraints: vec![],
        };
        if rt == ResourceType::Seed {
            node.checksum = match std::fs::read(p.root.join(&f.path)) {
                Ok(bytes) => sha256(&String::from_utf8_lossy(&bytes)),
                Err(source) => {
                    return Err(Error::Read {
                        path: p.root.join(&f.path),
                        source,
                    });
                }
            };
        }
        if let Some((r, yml)) = props {
            node.description = self.doc_text(&p.name, r.description.as_deref());
            node.columns = self.columns(&p.name, &r.columns);
            node.constraints = r.constraints.clone();
            node.patch_path = Some(yml);
        }
        node.relation = self.relation_for(&node)?;
        self.nodes.insert(id, node);
        Ok(())
    }

    /// The relation a node lands in: `generate_database_name`, `generate_schema_name` and
    /// `generate_alias_name` (the project's overrides when defined, else dbt's defaults).
    fn relation_for(&self, n: &Node) -> Result<Relation> {
        let scope = Scope {
            package: n.package_name.clone(),
            this: None,
            model: node_dict(n),
            config: n.config.0.clone(),
            is_incremental: false,
            phase: Phase::Parse(Arc::default()),
            query: None,
        };
        let model = crate::jinja::to_value(node_dict(n));
        let opt = |s: Option<&str>| {
            s.map(minijinja::Value::from)
                .unwrap_or(minijinja::Value::from(()))
        };
        let call = |name: &str, custom: Option<&str>| -> Result<Option<String>> {
            if self.renderer.has_user_macro(name) {
                let out = self
                    .renderer
                    .call_macro(name, &[opt(custom), model.clone()], &scope)?;
                Ok(Some(out.trim().to_string()))
            } else {
                Ok(None)
            }
        };
        let legacy_snapshot_schema = (n.resource_type == ResourceType::Snapshot)
            .then(|| n.config.get_str("target_schema"))
            .flatten();
        let schema = match call("generate_schema_name", n.config.schema())? {
            _ if legacy_snapshot_schema.is_some() => {
                legacy_snapshot_schema.unwrap_or_default().to_string()
            }
            Some(s) => s,
            None => match n.config.schema() {
                Some(c) => format!("{}_{}", self.target.schema, c.trim()),
                None => self.target.schema.clone(),
            },
        };
        let identifier = match call("generate_alias_name", n.config.alias())? {
            Some(s) => s,
            None => n
                .config
                .alias()
                .map(str::to_string)
                .unwrap_or_else(|| n.name.clone()),
        };
        let database = match call("generate_database_name", n.config.database())? {
            Some(s) => s,
            None => n
                .config
                .database()
                .unwrap_or(&self.target.database)
                .to_string(),
        };
        let cte = (n.resource_type == ResourceType::Model
            && n.config.materialized() == "ephemeral")
            .then(|| format!("__dbt__cte__{}", n.name));
        Ok(Relation {
            database,
            schema,
            identifier,
            cte,
            filter: None,
        })
    }

    fn load_tests(&mut self, root: &DbtProject) -> Result<()> {
        let pending = std::mem::take(&mut self.tests);
        for t in pending {
            let p = root.all().find(|p| p.name == t.package).unwrap_or(root);
            let (line, col) = (t.entry.referenced.line(), t.entry.referenced.column());
            let at = |msg: String| Error::at(&t.yml_path, line, col, msg);
            let (full_name, mut args) = match &t.entry.value {
                Value::String(s) => (s.clone(), Map::new()),
                Value::Object(m) if m.len() == 1 => {
                    let (k, v) = m.iter().next().expect("one entry");
                    let args = match v {
                        Value::Object(a) => a.clone(),
                        Value::Null => Map::new(),
                        _ => {
                            return Err(at(format!(
                                "test `{k}`: expected its arguments as a mapping"
                            )));
                        }
                    };
                    (k.clone(), args)
                }
                _ => {
                    return Err(at(
                        "a test is written as a name (`- unique`) or a one-key mapping (`- accepted_values: {values: [...]}`)".into(),
                    ));
                }
            };
            let (namespace, test) = match full_name.split_once('.') {
                Some((ns, n)) => (Some(ns.to_string()), n.to_string()),
                None => (None, full_name.clone()),
            };
            let macro_name = format!("test_{test}");
            let known = match &namespace {
                Some(ns) => self
                    .macros
                    .contains_key(&format!("macro.{ns}.{macro_name}")),
                None => self.renderer.find_macro(&macro_name).is_some(),
            };
            if !known {
                let names: Vec<String> = self
                    .macros
                    .values()
                    .filter_map(|m| m.name.strip_prefix("test_").map(str::to_string))
                    .collect();
                let hint = closest(&test, names.iter().map(String::as_str))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_else(|| "; define it with `{% test name(model, column_name) %}` in macros/ or tests/generic/".into());
                return Err(at(format!("unknown generic test `{full_name}`{hint}")));
            }
            let custom_name = args
                .remove("name")
                .and_then(|v| v.as_str().map(str::to_string));
            if let Some(Value::Object(a)) = args.remove("arguments") {
                args.extend(a);
            }
            let mut test_config = Map::new();
            if let Some(Value::Object(c)) = args.remove("config") {
                test_config.extend(c);
            }
            for k in TEST_CONFIG_KEYS {
                if let Some(v) = args.remove(*k) {
                    test_config.insert((*k).to_string(), v);
                }
            }
            let mut kwargs = Map::new();
            if let Some(c) = &t.column {
                kwargs.insert("column_name".into(), Value::String(c.clone()));
            }
            kwargs.extend(args);
            let name = custom_name.unwrap_or_else(|| {
                // dbt names a source's test `source_<test>_<source>_<table>_…`.
                let test = match &t.target {
                    TestTarget::Source(..) => format!("source_{test}"),
                    TestTarget::Ref(_) => test.clone(),
                };
                test_name(namespace.as_deref(), &test, &t.target.label(), &kwargs)
            });
            let mut call_args = vec![format!("model=get_where_subquery({})", t.target.jinja())];
            for (k, v) in &kwargs {
                let lit = match v {
                    Value::String(s)
                        if k == "to"
                            || s.trim_start().starts_with("ref(")
                            || s.trim_start().starts_with("source(") =>
                    {
                        s.clone()
                    }
                    Value::String(s) if s.trim().starts_with("{{") && s.trim().ends_with("}}") => {
                        let t = s.trim();
                        t[2..t.len() - 2].trim().to_string()
                    }
                    other => jinja_literal(other),
                };
                call_args.push(format!("{k}={lit}"));
            }
            let callee = match &namespace {
                Some(ns) => format!("{ns}.{macro_name}"),
                None => macro_name.clone(),
            };
            let raw_code = format!("{{{{ {callee}({}) }}}}", call_args.join(", "));
            let mut fqn = vec![p.name.clone()];
            fqn.extend(t.yml_dirs.iter().cloned());
            fqn.push(name.clone());
            let mut config = NodeConfig::defaults("test");
            config.apply(&test_defaults());
            for layer in self.project_layers(p, ResourceType::Test, &fqn) {
                config.apply(&layer);
            }
            config.apply(&test_config);
            if !config.enabled() {
                continue;
            }
            let capture = Arc::new(Mutex::new(Capture::default()));
            let scope = Scope {
                package: p.name.clone(),
                this: None,
                model: json!({"name": name, "package_name": p.name, "resource_type": "test"}),
                config: config.0.clone(),
                is_incremental: false,
                phase: Phase::Parse(Arc::clone(&capture)),
                query: None,
            };
            self.renderer.render(
                &t.yml_path,
                &positioned(&raw_code, (line as usize, col as usize)),
                &scope,
            )?;
            let cap = capture
                .lock()
                .expect("capture lock is never poisoned")
                .clone();
            let hash = &sha256(&format!("{name}{raw_code}"))[..10];
            let id = format!("test.{}.{name}.{hash}", p.name);
            let attached = match &t.target {
                TestTarget::Ref(m) => self
                    .nodes
                    .values()
                    .find(|n| {
                        n.name == *m
                            && n.resource_type != ResourceType::Source
                            && n.resource_type != ResourceType::Test
                    })
                    .map(|n| n.unique_id.clone()),
                TestTarget::Source(s, tb) => Some(format!("source.{}.{s}.{tb}", p.name)),
            };
            let mut node = Node {
                unique_id: id.clone(),
                resource_type: ResourceType::Test,
                package_name: p.name.clone(),
                name: name.clone(),
                original_file_path: path_in_package(&self.root, p, &t.yml_path),
                path: format!("{name}.sql"),
                package_root: p.root.clone(),
                fqn,
                raw_code: raw_code.clone(),
                raw_start: (line as usize, col as usize),
                config,
                description: String::new(),
                columns: BTreeMap::new(),
                depends_on: DependsOn {
                    nodes: vec![],
                    macros: cap.macros.iter().cloned().collect(),
                },
                refs: cap.refs,
                sources: cap.sources,
                relation: Relation {
                    database: String::new(),
                    schema: String::new(),
                    identifier: String::new(),
                    cte: None,
                    filter: None,
                },
                checksum: sha256(&raw_code),
                test_metadata: Some(TestMetadata {
                    name: test.clone(),
                    kwargs,
                    namespace,
                }),
                attached_node: attached,
                column_name: t.column.clone(),
                patch_path: Some(t.yml_path.clone()),
                source_name: None,
                loaded_at_field: None,
                freshness: None,
                constraints: vec![],
            };
            node.relation = self.relation_for(&node)?;
            self.origins
                .insert(id.clone(), (t.yml_path.clone(), line, col));
            self.nodes.insert(id, node);
        }
        Ok(())
    }

    fn unit_tests_resolve(&mut self) -> Result<()> {
        for (pkg, path, u) in std::mem::take(&mut self.unit_props) {
            let model = self
                .nodes
                .values()
                .find(|n| n.resource_type == ResourceType::Model && n.name == u.model.value)
                .map(|n| n.unique_id.clone());
            let Some(model) = model else {
                let names: Vec<&str> = self
                    .nodes
                    .values()
                    .filter(|n| n.resource_type == ResourceType::Model)
                    .map(|n| n.name.as_str())
                    .collect();
                let hint = closest(&u.model.value, names)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                return Err(Error::at(
                    &path,
                    u.model.referenced.line(),
                    u.model.referenced.column(),
                    format!(
                        "unit test `{}` names unknown model `{}`{hint}",
                        u.name.value, u.model.value
                    ),
                ));
            };
            let id = format!("unit_test.{pkg}.{}.{}", u.model.value, u.name.value);
            self.unit_tests.insert(
                id.clone(),
                UnitTest {
                    unique_id: id,
                    name: u.name.value.clone(),
                    package_name: pkg,
                    model,
                    given: u.given,
                    expect: u.expect,
                    overrides: u.overrides,
                    description: u.description.unwrap_or_default(),
                    original_file_path: path,
                },
            );
        }
        Ok(())
    }
}

fn test_defaults() -> Map<String, Value> {
    Map::from_iter([
        ("severity".to_string(), json!("ERROR")),
        ("schema".to_string(), json!("dbt_test__audit")),
        ("warn_if".to_string(), json!("!= 0")),
        ("error_if".to_string(), json!("!= 0")),
        ("fail_calc".to_string(), json!("count(*)")),
        ("store_failures".to_string(), Value::Null),
        ("where".to_string(), Value::Null),
        ("limit".to_string(), Value::Null),
    ])
}

/// Folders between the resource path and the file.
fn dirs_of(f: &ProjectFile) -> Vec<String> {
    let rel = f
        .path
        .strip_prefix(&format!("{}/", f.resource_dir))
        .unwrap_or(&f.path);
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    parts.pop();
    parts
}

fn path_in_package(root: &Path, p: &DbtProject, shown: &str) -> String {
    let abs = root.join(shown);
    abs.strip_prefix(&p.root)
        .map(|x| x.to_string_lossy().replace('\\', "/"))
        .unwrap_or_else(|_| shown.to_string())
}
