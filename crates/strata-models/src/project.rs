//! Loading a dbt project from disk: `dbt_project.yml`, the files under each resource path,
//! property files (`*.yml`), docs blocks, snapshot and macro blocks, and local packages.
//!
//! Nothing here renders Jinja; `graph.rs` turns a [`DbtProject`] into a manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use crate::{DBT_PROJECT_FILE, Error, Result};

/// One loaded dbt project (the root project or a package), with its files read.
#[derive(Debug, Clone)]
pub struct DbtProject {
    /// Absolute directory holding `dbt_project.yml`.
    pub root: PathBuf,
    /// `name:`, the package name of every node it defines.
    pub name: String,
    /// `model-paths` (default `["models"]`).
    pub model_paths: Vec<String>,
    /// `seed-paths` (default `["seeds"]`).
    pub seed_paths: Vec<String>,
    /// `snapshot-paths` (default `["snapshots"]`).
    pub snapshot_paths: Vec<String>,
    /// `test-paths` (default `["tests"]`).
    pub test_paths: Vec<String>,
    /// `macro-paths` (default `["macros"]`).
    pub macro_paths: Vec<String>,
    /// `analysis-paths` (default `["analyses"]`).
    pub analysis_paths: Vec<String>,
    /// `vars:` as written (global keys, and per-package maps keyed by package name).
    pub vars: Map<String, Value>,
    /// Folder config blocks by resource key: `models`, `seeds`, `snapshots`, `data_tests`
    /// (also read from `tests:`), `sources`, `analyses`, `unit_tests`.
    pub configs: BTreeMap<String, Value>,
    /// `dispatch:` — macro namespace → search order of packages.
    pub dispatch: BTreeMap<String, Vec<String>>,
    /// `on-run-start:` hooks (a string or a list), raw Jinja.
    pub on_run_start: Vec<String>,
    /// `on-run-end:` hooks (a string or a list), raw Jinja.
    pub on_run_end: Vec<String>,
    /// Every file found under the resource paths, sorted by path.
    pub files: Vec<ProjectFile>,
    /// Packages (from `packages.yml` `local:` entries and installed `dbt_packages/`).
    /// Only the root project has packages; each package's own packages are flattened here.
    pub packages: Vec<DbtProject>,
}

/// What a file is, by the resource path it was found under and its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    /// `models/**/*.sql`.
    Model,
    /// `analyses/**/*.sql`.
    Analysis,
    /// `seeds/**/*.csv`.
    Seed,
    /// `snapshots/**/*.sql`.
    Snapshot,
    /// `tests/**/*.sql` outside `tests/generic/`.
    SingularTest,
    /// `macros/**/*.sql` and `tests/generic/**/*.sql`.
    Macro,
    /// `*.yml` / `*.yaml` property files under any resource path.
    Properties,
    /// `*.md` files holding `{% docs %}` blocks.
    Docs,
}

/// One file of a project.
#[derive(Debug, Clone)]
pub struct ProjectFile {
    /// What it is.
    pub kind: FileKind,
    /// The path relative to the project root, with `/` separators (dbt's
    /// `original_file_path`).
    pub path: String,
    /// The resource path it was found under (`models`, `seeds`, …).
    pub resource_dir: String,
    /// Its content (empty for seeds: their rows are read by the execution layer).
    pub text: String,
}

#[derive(Debug, Deserialize)]
struct ProjectYml {
    name: Spanned<String>,
    #[serde(default, rename = "model-paths", alias = "source-paths")]
    model_paths: Option<Vec<String>>,
    #[serde(default, rename = "seed-paths", alias = "data-paths")]
    seed_paths: Option<Vec<String>>,
    #[serde(default, rename = "snapshot-paths")]
    snapshot_paths: Option<Vec<String>>,
    #[serde(default, rename = "test-paths")]
    test_paths: Option<Vec<String>>,
    #[serde(default, rename = "macro-paths")]
    macro_paths: Option<Vec<String>>,
    #[serde(default, rename = "analysis-paths")]
    analysis_paths: Option<Vec<String>>,
    #[serde(default)]
    vars: Option<Map<String, Value>>,
    #[serde(default)]
    models: Option<Value>,
    #[serde(default)]
    seeds: Option<Value>,
    #[serde(default)]
    snapshots: Option<Value>,
    #[serde(default)]
    tests: Option<Value>,
    #[serde(default)]
    data_tests: Option<Value>,
    #[serde(default)]
    sources: Option<Value>,
    #[serde(default)]
    analyses: Option<Value>,
    #[serde(default)]
    unit_tests: Option<Value>,
    #[serde(default)]
    dispatch: Vec<DispatchYml>,
    #[serde(default, rename = "on-run-start")]
    on_run_start: Option<Value>,
    #[serde(default, rename = "on-run-end")]
    on_run_end: Option<Value>,
}

/// Hook SQL from a string or a list of strings.
fn hook_list(v: Option<Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[derive(Debug, Deserialize)]
struct DispatchYml {
    macro_namespace: String,
    search_order: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct PackagesYml {
    #[serde(default)]
    packages: Vec<Map<String, Value>>,
}

/// Turns a YAML error into a located [`Error::At`].
pub(crate) fn yaml_error(path: &str, e: &serde_saphyr::Error) -> Error {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let rendered = e.to_string();
    let message = rendered
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .trim()
        .to_string();
    Error::at(path, line, column, format!("invalid YAML: {message}"))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl DbtProject {
    /// Loads the project in `root` (which holds `dbt_project.yml`) and its packages.
    pub fn load(root: &Path) -> Result<Self> {
        let mut project = Self::load_one(root)?;
        let mut packages = Vec::new();
        let mut seen = vec![project.name.clone()];
        collect_packages(&project.root, &mut packages, &mut seen)?;
        project.packages = packages;
        Ok(project)
    }

    fn load_one(root: &Path) -> Result<Self> {
        let root = absolute(root);
        let file = root.join(DBT_PROJECT_FILE);
        let text = read(&file)?;
        let shown = file.display().to_string();
        let yml: ProjectYml = serde_saphyr::from_str(&text).map_err(|e| yaml_error(&shown, &e))?;
        let name = yml.name.value.clone();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::at(
                &shown,
                yml.name.referenced.line(),
                yml.name.referenced.column(),
                format!("project name `{name}` must hold only letters, digits and underscores"),
            ));
        }
        let or = |v: Option<Vec<String>>, d: &str| v.unwrap_or_else(|| vec![d.to_string()]);
        let mut configs = BTreeMap::new();
        for (key, value) in [
            ("models", yml.models),
            ("seeds", yml.seeds),
            ("snapshots", yml.snapshots),
            ("data_tests", yml.data_tests.or(yml.tests)),
            ("sources", yml.sources),
            ("analyses", yml.analyses),
            ("unit_tests", yml.unit_tests),
        ] {
            if let Some(v) = value {
                configs.insert(key.to_string(), v);
            }
        }
        let mut project = DbtProject {
            root,
            name,
            model_paths: or(yml.model_paths, "models"),
            seed_paths: or(yml.seed_paths, "seeds"),
            snapshot_paths: or(yml.snapshot_paths, "snapshots"),
            test_paths: or(yml.test_paths, "tests"),
            macro_paths: or(yml.macro_paths, "macros"),
            analysis_paths: or(yml.analysis_paths, "analyses"),
            vars: yml.vars.unwrap_or_default(),
            configs,
            dispatch: yml
                .dispatch
                .into_iter()
                .map(|d| (d.macro_namespace, d.search_order))
                .collect(),
            on_run_start: hook_list(yml.on_run_start),
            on_run_end: hook_list(yml.on_run_end),
            files: Vec::new(),
            packages: Vec::new(),
        };
        project.files = project.discover_files()?;
        Ok(project)
    }

    fn discover_files(&self) -> Result<Vec<ProjectFile>> {
        let mut out = Vec::new();
        let groups: [(&Vec<String>, FileKind); 6] = [
            (&self.model_paths, FileKind::Model),
            (&self.analysis_paths, FileKind::Analysis),
            (&self.seed_paths, FileKind::Seed),
            (&self.snapshot_paths, FileKind::Snapshot),
            (&self.test_paths, FileKind::SingularTest),
            (&self.macro_paths, FileKind::Macro),
        ];
        for (dirs, sql_kind) in groups {
            for dir in dirs {
                let mut found = Vec::new();
                walk(&self.root.join(dir), &mut found)?;
                for abs in found {
                    let rel = abs
                        .strip_prefix(&self.root)
                        .unwrap_or(&abs)
                        .to_string_lossy()
                        .replace('\\', "/");
                    let ext = abs.extension().and_then(|e| e.to_str()).unwrap_or("");
                    let kind = match (ext, sql_kind) {
                        ("yml" | "yaml", _) => FileKind::Properties,
                        ("md", _) => FileKind::Docs,
                        ("csv", FileKind::Seed) => FileKind::Seed,
                        ("sql", FileKind::Seed) => continue,
                        ("sql", FileKind::SingularTest)
                            if rel.starts_with(&format!("{dir}/generic/")) =>
                        {
                            FileKind::Macro
                        }
                        ("sql", k) => k,
                        _ => continue,
                    };
                    let text = if kind == FileKind::Seed {
                        String::new()
                    } else {
                        read(&abs)?
                    };
                    out.push(ProjectFile {
                        kind,
                        path: rel,
                        resource_dir: dir.clone(),
                        text,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out.dedup_by(|a, b| a.path == b.path);
        Ok(out)
    }

    /// The root project followed by every package.
    pub fn all(&self) -> impl Iterator<Item = &DbtProject> {
        std::iter::once(self).chain(self.packages.iter())
    }
}

fn collect_packages(root: &Path, out: &mut Vec<DbtProject>, seen: &mut Vec<String>) -> Result<()> {
    let mut dirs = Vec::new();
    let packages_file = root.join("packages.yml");
    if packages_file.is_file() {
        let text = read(&packages_file)?;
        let shown = packages_file.display().to_string();
        let yml: PackagesYml = serde_saphyr::from_str(&text).map_err(|e| yaml_error(&shown, &e))?;
        for entry in yml.packages {
            if let Some(local) = entry.get("local").and_then(Value::as_str) {
                let dir = root.join(local);
                if !dir.join(DBT_PROJECT_FILE).is_file() {
                    return Err(Error::at(
                        &shown,
                        0,
                        0,
                        format!(
                            "local package `{local}` has no {DBT_PROJECT_FILE} (looked in {})",
                            dir.display()
                        ),
                    ));
                }
                dirs.push(dir);
            }
        }
    }
    let installed = root.join("dbt_packages");
    if let Ok(rd) = std::fs::read_dir(&installed) {
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(DBT_PROJECT_FILE).is_file())
            .collect();
        found.sort();
        dirs.extend(found);
    }
    for dir in dirs {
        let pkg = DbtProject::load_one(&dir)?;
        if seen.contains(&pkg.name) {
            continue;
        }
        seen.push(pkg.name.clone());
        let pkg_root = pkg.root.clone();
        out.push(pkg);
        collect_packages(&pkg_root, out, seen)?;
    }
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Property files (`version: 2`)
// ---------------------------------------------------------------------------------------

/// A property file (`models/schema.yml` and the like), as written.
#[derive(Debug, Default, Deserialize)]
pub struct PropertiesFile {
    /// `models:`.
    #[serde(default)]
    pub models: Vec<ResourceProps>,
    /// `seeds:`.
    #[serde(default)]
    pub seeds: Vec<ResourceProps>,
    /// `snapshots:`.
    #[serde(default)]
    pub snapshots: Vec<ResourceProps>,
    /// `analyses:`.
    #[serde(default)]
    pub analyses: Vec<ResourceProps>,
    /// `sources:`.
    #[serde(default)]
    pub sources: Vec<SourceProps>,
    /// `macros:`.
    #[serde(default)]
    pub macros: Vec<MacroProps>,
    /// `unit_tests:`.
    #[serde(default)]
    pub unit_tests: Vec<UnitTestProps>,
}

/// Properties of a model, seed, snapshot or analysis.
#[derive(Debug, Deserialize)]
pub struct ResourceProps {
    /// The resource's name.
    pub name: Spanned<String>,
    /// `description:`.
    #[serde(default)]
    pub description: Option<String>,
    /// `config:`.
    #[serde(default)]
    pub config: Option<Map<String, Value>>,
    /// `columns:`.
    #[serde(default)]
    pub columns: Vec<ColumnProps>,
    /// `tests:` / `data_tests:` on the resource.
    #[serde(default, alias = "data_tests")]
    pub tests: Vec<Spanned<Value>>,
    /// `constraints:` (model level).
    #[serde(default)]
    pub constraints: Vec<Value>,
    /// `meta:` (outside `config:`, older style).
    #[serde(default)]
    pub meta: Option<Map<String, Value>>,
    /// `docs:`.
    #[serde(default)]
    pub docs: Option<Value>,
}

/// Properties of a column.
#[derive(Debug, Deserialize)]
pub struct ColumnProps {
    /// The column's name.
    pub name: Spanned<String>,
    /// `description:`.
    #[serde(default)]
    pub description: Option<String>,
    /// `data_type:`.
    #[serde(default)]
    pub data_type: Option<String>,
    /// `tests:` / `data_tests:`.
    #[serde(default, alias = "data_tests")]
    pub tests: Vec<Spanned<Value>>,
    /// `constraints:`.
    #[serde(default)]
    pub constraints: Vec<Value>,
    /// `meta:`.
    #[serde(default)]
    pub meta: Option<Map<String, Value>>,
    /// `quote:`.
    #[serde(default)]
    pub quote: Option<bool>,
    /// `tags:`.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A `sources:` entry.
#[derive(Debug, Deserialize)]
pub struct SourceProps {
    /// The source's name.
    pub name: Spanned<String>,
    /// `description:`.
    #[serde(default)]
    pub description: Option<String>,
    /// `database:`.
    #[serde(default)]
    pub database: Option<String>,
    /// `schema:` (default: the source's name).
    #[serde(default)]
    pub schema: Option<String>,
    /// `loader:`.
    #[serde(default)]
    pub loader: Option<String>,
    /// `loaded_at_field:`, inherited by tables.
    #[serde(default)]
    pub loaded_at_field: Option<String>,
    /// `freshness:`, inherited by tables.
    #[serde(default)]
    pub freshness: Option<Value>,
    /// `quoting:`.
    #[serde(default)]
    pub quoting: Option<Value>,
    /// `config:`.
    #[serde(default)]
    pub config: Option<Map<String, Value>>,
    /// `meta:`.
    #[serde(default)]
    pub meta: Option<Map<String, Value>>,
    /// `tags:`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `tables:`.
    #[serde(default)]
    pub tables: Vec<SourceTableProps>,
}

/// A table of a source.
#[derive(Debug, Deserialize)]
pub struct SourceTableProps {
    /// The table's name in dbt.
    pub name: Spanned<String>,
    /// `identifier:` (the physical name; default the name).
    #[serde(default)]
    pub identifier: Option<String>,
    /// `description:`.
    #[serde(default)]
    pub description: Option<String>,
    /// `loaded_at_field:`.
    #[serde(default)]
    pub loaded_at_field: Option<String>,
    /// `freshness:` (`Some(null)` when written `null`: turns inherited freshness off).
    #[serde(default, deserialize_with = "present")]
    pub freshness: Option<Value>,
    /// `quoting:`.
    #[serde(default)]
    pub quoting: Option<Value>,
    /// `columns:`.
    #[serde(default)]
    pub columns: Vec<ColumnProps>,
    /// `tests:` / `data_tests:`.
    #[serde(default, alias = "data_tests")]
    pub tests: Vec<Spanned<Value>>,
    /// `config:`.
    #[serde(default)]
    pub config: Option<Map<String, Value>>,
    /// `meta:`.
    #[serde(default)]
    pub meta: Option<Map<String, Value>>,
    /// `tags:`.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A `macros:` entry (documentation of a macro).
#[derive(Debug, Deserialize)]
pub struct MacroProps {
    /// The macro's name.
    pub name: Spanned<String>,
    /// `description:`.
    #[serde(default)]
    pub description: Option<String>,
    /// `arguments:`.
    #[serde(default)]
    pub arguments: Vec<Value>,
}

/// A `unit_tests:` entry.
#[derive(Debug, Deserialize)]
pub struct UnitTestProps {
    /// The unit test's name.
    pub name: Spanned<String>,
    /// The model under test.
    pub model: Spanned<String>,
    /// `description:`.
    #[serde(default)]
    pub description: Option<String>,
    /// `given:` — inputs (`input: ref('x')`, `rows:`, `format:`).
    #[serde(default)]
    pub given: Vec<Value>,
    /// `expect:` — expected rows.
    pub expect: Value,
    /// `overrides:` (macros, vars, env_vars).
    #[serde(default)]
    pub overrides: Option<Value>,
    /// `config:`.
    #[serde(default)]
    pub config: Option<Map<String, Value>>,
}

/// Keeps an explicit `null` as `Some(Value::Null)` (a missing key stays `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Parses a property file.
pub fn parse_properties(path: &str, text: &str) -> Result<PropertiesFile> {
    if text.trim().is_empty() {
        return Ok(PropertiesFile::default());
    }
    serde_saphyr::from_str(text).map_err(|e| yaml_error(path, &e))
}

// ---------------------------------------------------------------------------------------
// Blocks inside files
// ---------------------------------------------------------------------------------------

/// A `{% <kind> name … %}…{% end<kind> %}` block found in a file.
#[derive(Debug, Clone)]
pub struct Block {
    /// `macro`, `test`, `materialization`, `snapshot` or `docs`.
    pub kind: String,
    /// The block's name (for `test` blocks the name as written, without `test_`).
    pub name: String,
    /// The opening tag's arguments as written (`(model, column_name)`, `, adapter='x'`).
    pub args: String,
    /// The whole block, opening and closing tags included.
    pub full: String,
    /// The text between the tags.
    pub body: String,
    /// 1-based line and column where `full` starts.
    pub start: (usize, usize),
    /// 1-based line and column where `body` starts.
    pub body_start: (usize, usize),
}

static OPEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\{%-?\s*(macro|test|materialization|snapshot|docs)\s+([A-Za-z_][A-Za-z0-9_]*)([^%]*?)-?%\}",
    )
    .expect("static regex")
});

/// 1-based (line, column) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// Finds the top-level blocks of the given kinds in `text`. An unclosed block is an error
/// naming the line of its opening tag.
pub fn find_blocks(path: &str, text: &str, kinds: &[&str]) -> Result<Vec<Block>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(m) = OPEN.captures_at(text, pos) {
        let whole = m.get(0).expect("match 0 exists");
        let kind = m[1].to_string();
        if !kinds.contains(&kind.as_str()) {
            pos = whole.end();
            continue;
        }
        let end_re = Regex::new(&format!(r"\{{%-?\s*end{kind}\s*-?%\}}")).expect("valid regex");
        let Some(end) = end_re.find_at(text, whole.end()) else {
            let (line, col) = line_col(text, whole.start());
            return Err(Error::at(
                path,
                line as u64,
                col as u64,
                format!(
                    "`{{% {kind} {} %}}` is never closed; add `{{% end{kind} %}}`",
                    &m[2]
                ),
            ));
        };
        out.push(Block {
            kind,
            name: m[2].to_string(),
            args: m[3].trim().to_string(),
            full: text[whole.start()..end.end()].to_string(),
            body: text[whole.end()..end.start()].to_string(),
            start: line_col(text, whole.start()),
            body_start: line_col(text, whole.end()),
        });
        pos = end.end();
    }
    Ok(out)
}

/// Pads `text` with newlines and spaces so that it starts at `(line, col)`: a template made
/// from a block then reports errors at the block's place in its file.
pub(crate) fn positioned(text: &str, (line, col): (usize, usize)) -> String {
    let mut s = String::with_capacity(text.len() + line + col);
    for _ in 1..line {
        s.push('\n');
    }
    for _ in 1..col {
        s.push(' ');
    }
    s.push_str(text);
    s
}
