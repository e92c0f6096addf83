//! Jinja rendering with MiniJinja, in dbt's two phases.
//!
//! * **parse**: each node is rendered with a [`Scope`] that captures its `ref`, `source` and
//!   `config(...)` calls and the macros it reaches; `execute` is false and `is_incremental()`
//!   false.
//! * **compile**: the node is rendered with a [`Scope`] whose `ref`/`source` return the real
//!   relation names (a [`RefLookup`]), `is_incremental()` as the caller says.
//!
//! Every macro of every package (and the built-in `dbt` package: generic tests, defaults) is
//! its own template, padded so that its lines and columns are those of its file; a macro is a
//! global callable ([`MacroRef`]) that renders its template with the caller's context, so
//! macros call macros across files and packages, and `return(x)` hands back `x` as in dbt.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use minijinja::value::{ArgType, Enumerator, Kwargs, Object, ObjectExt, ObjectRepr, Rest, Value};
use minijinja::{AutoEscape, Environment, ErrorKind, State, UndefinedBehavior};
use serde_json::Map;

use crate::project::line_col;
use crate::query::{LoadResultFn, QueryCtx, QueryRunner, RunQueryFn, StatementFn};
use crate::{ADAPTER_TYPE, Error, Result};

/// The Jinja error detail a `return(...)` call raises; caught by the calling macro.
const RETURN_MARKER: &str = "\u{0}strata-return";
/// Context keys carried from a caller into the macros it calls.
const CONTEXT_KEYS: &[&str] = &[
    "ref",
    "source",
    "config",
    "this",
    "model",
    "is_incremental",
    "execute",
    "var",
    "run_query",
    "statement",
    "load_result",
    "adapter",
    "__strata_capture",
];

thread_local! {
    static RETURNED: std::cell::RefCell<Vec<Value>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A relation name: `schema.identifier` in the target catalog, or an ephemeral CTE name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RelationName {
    /// The catalog.
    pub database: String,
    /// The schema (lake namespace).
    pub schema: String,
    /// The table or view name.
    pub identifier: String,
    /// Set for ephemeral models: renders as this CTE name instead.
    pub cte: Option<String>,
    /// A condition the relation's rows are read through, as a subquery: a microbatch
    /// model's event-time window on an upstream with `event_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

impl RelationName {
    /// The SQL text: `schema.identifier` (each part quoted when not a plain lower-case
    /// identifier), or the CTE name for ephemeral models.
    pub fn render(&self) -> String {
        let name = match &self.cte {
            Some(c) => c.clone(),
            None => format!(
                "{}.{}",
                quote_if_needed(&self.schema),
                quote_if_needed(&self.identifier)
            ),
        };
        match &self.filter {
            Some(f) => format!("(select * from {name} where {f})"),
            None => name,
        }
    }
}

fn quote_if_needed(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

impl Object for RelationName {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(match key.as_str()? {
            "database" => Value::from(self.database.clone()),
            "schema" => Value::from(self.schema.clone()),
            "identifier" | "name" | "table" => Value::from(self.identifier.clone()),
            "is_cte" => Value::from(self.cte.is_some()),
            _ => return None,
        })
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        match method {
            "render" => Ok(Value::from_safe_string(RelationName::render(self))),
            "include" | "quote" | "incorporate" => Ok(Value::from_dyn_object(Arc::clone(self))),
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&RelationName::render(self))
    }
}

/// A `ref(...)` call as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct RefCall {
    /// The package (two-argument form).
    pub package: Option<String>,
    /// The model name.
    pub name: String,
    /// `version=` / `v=`.
    pub version: Option<String>,
}

/// What the parse phase learns from rendering a node.
#[derive(Debug, Default, Clone)]
pub struct Capture {
    /// `ref` calls in order (duplicates removed).
    pub refs: Vec<RefCall>,
    /// `source(source, table)` calls in order (duplicates removed).
    pub sources: Vec<(String, String)>,
    /// Merged `config(...)` keyword arguments.
    pub config: Map<String, serde_json::Value>,
    /// Unique ids (`macro.<package>.<name>`) of the macros called.
    pub macros: BTreeSet<String>,
}

/// Resolves `ref` and `source` at compile time.
pub trait RefLookup: Send + Sync + std::fmt::Debug {
    /// The relation of `ref(package?, name, version?)`, or an error message (with a
    /// suggestion) for an unknown model.
    fn resolve_ref(&self, call: &RefCall) -> std::result::Result<RelationName, String>;
    /// The relation of `source(source, table)`.
    fn resolve_source(
        &self,
        source: &str,
        table: &str,
    ) -> std::result::Result<RelationName, String>;
}

/// Which phase a render belongs to.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Capture dependencies and config; placeholders for relations.
    Parse(Arc<Mutex<Capture>>),
    /// Real relation names.
    Compile(Arc<dyn RefLookup>),
}

/// Everything specific to one node's render.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The node's package (selects its `vars`).
    pub package: String,
    /// `this`.
    pub this: Option<RelationName>,
    /// `model` (the node as a dict).
    pub model: serde_json::Value,
    /// The node's resolved config (`config.get` at compile time).
    pub config: Map<String, serde_json::Value>,
    /// `is_incremental()`.
    pub is_incremental: bool,
    /// The phase.
    pub phase: Phase,
    /// Runs `run_query`, `statement` and `adapter.get_columns_in_relation` in the compile
    /// phase; without one they fail there (and do nothing at parse time).
    pub query: Option<Arc<dyn QueryRunner>>,
}

/// The `target` object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    /// `target.name` (`dev`).
    pub name: String,
    /// `target.schema`.
    pub schema: String,
    /// `target.database`.
    pub database: String,
    /// `target.threads`.
    pub threads: u32,
}

/// A macro known to the renderer.
#[derive(Debug, Clone)]
pub struct MacroSource {
    /// Its package.
    pub package: String,
    /// Its name (`test_unique` for `{% test unique %}`).
    pub name: String,
    /// The file, as shown in messages.
    pub path: String,
    /// The template text (the block, positioned at its place in the file).
    pub template: String,
}

/// Inputs of [`Renderer::new`].
#[derive(Debug, Clone)]
pub struct RendererSetup {
    /// The root project's name.
    pub root_package: String,
    /// Every package name, root first.
    pub packages: Vec<String>,
    /// Every macro (user and built-in).
    pub macros: Vec<MacroSource>,
    /// Variables visible to each package (project vars with `--vars` applied).
    pub vars: BTreeMap<String, Map<String, serde_json::Value>>,
    /// The target.
    pub target: Target,
    /// `invocation_id`.
    pub invocation_id: String,
    /// `run_started_at`.
    pub run_started_at: chrono::DateTime<chrono::Utc>,
    /// `dispatch:` search orders by macro namespace.
    pub dispatch: BTreeMap<String, Vec<String>>,
}

/// Renders nodes and macros. One per manifest; cheap to share by reference across threads.
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
    setup: RendererSetup,
    /// macro name → (package → template name).
    macros: BTreeMap<String, BTreeMap<String, String>>,
    logs: Arc<Mutex<Vec<String>>>,
    dispatch: Arc<DispatchIndex>,
}

impl Renderer {
    /// Builds the environment: globals, every macro as a template. A macro with a Jinja
    /// syntax error fails here with its file, line and column.
    pub fn new(setup: RendererSetup) -> Result<Self> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_recursion_limit(1000);
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut macros: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for m in &setup.macros {
            let tname = format!("{}#{}.{}", m.path, m.package, m.name);
            env.add_template_owned(tname.clone(), m.template.clone())
                .map_err(|e| map_template_error(&e, Some(&m.template)))?;
            macros
                .entry(m.name.clone())
                .or_default()
                .insert(m.package.clone(), tname);
        }
        let mut r = Renderer {
            env,
            setup,
            macros,
            logs,
            dispatch: Arc::default(),
        };
        r.dispatch = r.dispatch_index();
        r.install_globals();
        Ok(r)
    }

    /// Log lines written by `log(…, info=true)`, `print` and `exceptions.warn`, drained.
    pub fn take_logs(&self) -> Vec<String> {
        std::mem::take(&mut *self.logs.lock().expect("log buffer lock is never poisoned"))
    }

    /// The template name of macro `name`, looked up as an unqualified call from anywhere
    /// resolves it: the root project, then the built-in `dbt` package, then other packages.
    pub fn find_macro(&self, name: &str) -> Option<(&str, &str)> {
        let by_pkg = self.macros.get(name)?;
        let root = &self.setup.root_package;
        if let Some(t) = by_pkg.get(root) {
            return Some((root.as_str(), t.as_str()));
        }
        if let Some(t) = by_pkg.get("dbt") {
            return Some(("dbt", t.as_str()));
        }
        by_pkg.iter().next().map(|(p, t)| (p.as_str(), t.as_str()))
    }

    /// True when the root project (or a package) overrides `name`.
    pub fn has_user_macro(&self, name: &str) -> bool {
        self.macros
            .get(name)
            .is_some_and(|m| m.keys().any(|p| p != "dbt"))
    }

    fn install_globals(&mut self) {
        let names: Vec<String> = self.macros.keys().cloned().collect();
        for name in &names {
            if let Some((pkg, t)) = self.find_macro(name) {
                let v = MacroRef::value(pkg, name, t);
                self.env.add_global(name.clone(), v);
            }
        }
        // Package namespaces: `dbt_utils.star()`, `my_pkg.my_macro()`.
        let mut namespaces: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for (name, by_pkg) in &self.macros {
            for (pkg, t) in by_pkg {
                namespaces
                    .entry(pkg.clone())
                    .or_default()
                    .insert(name.clone(), MacroRef::value(pkg, name, t));
            }
        }
        for pkg in &self.setup.packages {
            if pkg == "dbt" {
                continue;
            }
            let members = namespaces.remove(pkg).unwrap_or_default();
            self.env
                .add_global(pkg.clone(), Value::from_object(Namespace { members }));
        }
        let dbt_members = namespaces.remove("dbt").unwrap_or_default();
        self.env.add_global(
            "dbt",
            Value::from_object(DbtNamespace {
                macros: dbt_members,
            }),
        );
        for name in crate::crossdb::NAMES {
            if !self.macros.contains_key(*name) && !["replace", "length"].contains(name) {
                self.env
                    .add_global(*name, Value::from_object(CrossDb { name }));
            }
        }

        let t = &self.setup.target;
        self.env.add_global(
            "target",
            to_value(serde_json::json!({
                "name": t.name, "target_name": t.name, "schema": t.schema,
                "database": t.database, "type": ADAPTER_TYPE, "threads": t.threads,
                "profile_name": "strata",
            })),
        );
        self.env.add_global(
            "invocation_id",
            Value::from(self.setup.invocation_id.clone()),
        );
        self.env.add_global(
            "run_started_at",
            Value::from_object(DateTime(self.setup.run_started_at)),
        );
        self.env.add_global("modules", modules());
        let logs = Arc::clone(&self.logs);
        self.env.add_function("log", move |msg: Value, kw: Kwargs| {
            let info = kw.get::<Option<bool>>("info")?.unwrap_or(false);
            kw.assert_all_used()?;
            if info {
                logs.lock()
                    .expect("log buffer lock is never poisoned")
                    .push(msg.to_string());
            }
            Ok(String::new())
        });
        let logs = Arc::clone(&self.logs);
        self.env.add_function("print", move |msg: Value| {
            logs.lock()
                .expect("log buffer lock is never poisoned")
                .push(msg.to_string());
            String::new()
        });
        self.env.add_global(
            "exceptions",
            Value::from_object(Exceptions {
                logs: Arc::clone(&self.logs),
            }),
        );
        self.env.add_function(
            "return",
            |v: Option<Value>| -> std::result::Result<Value, minijinja::Error> {
                RETURNED.with(|r| r.borrow_mut().push(v.unwrap_or(Value::from(()))));
                Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    RETURN_MARKER,
                ))
            },
        );
        self.env.add_function("env_var", |name: String, default: Option<Value>| {
            match std::env::var(&name) {
                Ok(v) => Ok(Value::from(v)),
                Err(_) => default.ok_or_else(|| {
                    minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("Env var required but not provided: '{name}'; set it or give env_var a default"),
                    )
                }),
            }
        });
        self.env.add_function(
            "zip",
            |lists: Rest<Value>| -> std::result::Result<Value, minijinja::Error> {
                let iters: Vec<Vec<Value>> = lists
                    .iter()
                    .map(|l| l.try_iter().map(|i| i.collect()))
                    .collect::<std::result::Result<_, _>>()?;
                let n = iters.iter().map(Vec::len).min().unwrap_or(0);
                Ok(Value::from(
                    (0..n)
                        .map(|i| {
                            Value::from(iters.iter().map(|l| l[i].clone()).collect::<Vec<_>>())
                        })
                        .collect::<Vec<_>>(),
                ))
            },
        );
        self.env.add_function(
            "tojson",
            |v: Value, kw: Kwargs| -> std::result::Result<String, minijinja::Error> {
                let sort = kw.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
                kw.assert_all_used()?;
                let j: serde_json::Value = serde_json::to_value(&v).map_err(|e| {
                    minijinja::Error::new(ErrorKind::BadSerialization, e.to_string())
                })?;
                let _ = sort; // serde_json maps are ordered by key already.
                Ok(j.to_string())
            },
        );
        self.env
            .add_function(
                "fromjson",
                |s: String, default: Option<Value>| match serde_json::from_str::<serde_json::Value>(
                    &s,
                ) {
                    Ok(v) => Ok(to_value(v)),
                    Err(e) => default.ok_or_else(|| {
                        minijinja::Error::new(ErrorKind::InvalidOperation, format!("fromjson: {e}"))
                    }),
                },
            );
        self.env
            .add_function("fromyaml", |s: String, default: Option<Value>| {
                match serde_saphyr::from_str::<serde_json::Value>(&s) {
                    Ok(v) => Ok(to_value(v)),
                    Err(e) => default.ok_or_else(|| {
                        minijinja::Error::new(ErrorKind::InvalidOperation, format!("fromyaml: {e}"))
                    }),
                }
            });
        self.env.add_function(
            "set",
            |v: Value| -> std::result::Result<Value, minijinja::Error> {
                let mut out: Vec<Value> = Vec::new();
                for i in v.try_iter()? {
                    if !out.contains(&i) {
                        out.push(i);
                    }
                }
                Ok(Value::from(out))
            },
        );
        self.env.add_function(
            "list",
            |v: Value| -> std::result::Result<Value, minijinja::Error> {
                Ok(Value::from(v.try_iter()?.collect::<Vec<_>>()))
            },
        );
        self.env
            .add_function("get_where_subquery", |state: &State, rel: Value| {
                let where_ = state
                    .lookup("config")
                    .and_then(|c| {
                        c.downcast_object_ref::<ConfigObj>()
                            .and_then(|c| c.config.get("where").cloned())
                    })
                    .and_then(|w| w.as_str().map(str::to_string));
                match where_ {
                    Some(w) if !w.is_empty() => Value::from_safe_string(format!(
                        "(select * from {rel} where {w}) dbt_subquery"
                    )),
                    _ => rel,
                }
            });
        self.env.add_global(
            "adapter",
            Value::from_object(Adapter {
                dispatch: Arc::clone(&self.dispatch),
                query: None,
            }),
        );
    }

    fn dispatch_index(&self) -> Arc<DispatchIndex> {
        let mut by_name = BTreeMap::new();
        for (name, by_pkg) in &self.macros {
            for (pkg, t) in by_pkg {
                by_name.insert((pkg.clone(), name.clone()), t.clone());
            }
        }
        Arc::new(DispatchIndex {
            root: self.setup.root_package.clone(),
            packages: self.setup.packages.clone(),
            orders: self.setup.dispatch.clone(),
            macros: by_name,
        })
    }

    /// Compiles `source` as the template `name` (the file path shown in messages) and renders
    /// it in `scope`.
    pub fn render(&self, name: &str, source: &str, scope: &Scope) -> Result<String> {
        let tmpl = self
            .env
            .template_from_named_str(name, source)
            .map_err(|e| map_template_error(&e, Some(source)))?;
        let ctx = self.context(scope);
        let out = tmpl.render(ctx);
        RETURNED.with(|r| r.borrow_mut().clear());
        out.map_err(|e| self.map_error(&e, Some((name, source))))
    }

    /// Calls macro `name` (as an unqualified call resolves it) with `args` in `scope`, and
    /// returns its rendered text or `return(...)` value as a string.
    pub fn call_macro(&self, name: &str, args: &[Value], scope: &Scope) -> Result<String> {
        let (pkg, t) = self.find_macro(name).ok_or_else(|| Error::Input {
            what: "macro".into(),
            message: format!("no macro named `{name}`"),
        })?;
        let tmpl = self
            .env
            .get_template(t)
            .map_err(|e| self.map_error(&e, None))?;
        let mut captured = tmpl
            .render_captured(self.context(scope))
            .map_err(|e| self.map_error(&e, None))?;
        let r = captured.with_state_mut(|st| {
            let f = st.lookup(name).ok_or_else(|| {
                minijinja::Error::new(
                    ErrorKind::UnknownFunction,
                    format!("macro {pkg}.{name} is not defined"),
                )
            })?;
            f.call(st, args)
        });
        match r {
            Ok(v) => Ok(v.to_string()),
            Err(e) if is_return(&e) => Ok(take_returned().to_string()),
            Err(e) => Err(self.map_error(&e, None)),
        }
    }

    fn context(&self, scope: &Scope) -> Value {
        let vars = self
            .setup
            .vars
            .get(&scope.package)
            .or_else(|| self.setup.vars.get(&self.setup.root_package))
            .cloned()
            .unwrap_or_default();
        let capture = match &scope.phase {
            Phase::Parse(c) => Some(Arc::clone(c)),
            Phase::Compile(_) => None,
        };
        let mut ctx = BTreeMap::new();
        ctx.insert(
            "ref",
            Value::from_object(RefFn {
                phase: scope.phase.clone(),
            }),
        );
        ctx.insert(
            "source",
            Value::from_object(SourceFn {
                phase: scope.phase.clone(),
            }),
        );
        ctx.insert(
            "config",
            Value::from_object(ConfigObj {
                capture: capture.clone(),
                config: scope.config.clone(),
            }),
        );
        ctx.insert(
            "this",
            scope
                .this
                .clone()
                .map(Value::from_object)
                .unwrap_or(Value::from(())),
        );
        ctx.insert("model", to_value(&scope.model));
        let inc = scope.is_incremental;
        ctx.insert("is_incremental", Value::from_function(move || inc));
        ctx.insert(
            "execute",
            Value::from(matches!(scope.phase, Phase::Compile(_))),
        );
        ctx.insert("var", Value::from_object(VarObj { vars }));
        let executing = matches!(scope.phase, Phase::Compile(_));
        let query = QueryCtx::new(executing, scope.query.clone().filter(|_| executing));
        for (name, v) in [
            (
                "run_query",
                Value::from_object(RunQueryFn(Arc::clone(&query))),
            ),
            (
                "statement",
                Value::from_object(StatementFn(Arc::clone(&query))),
            ),
            (
                "load_result",
                Value::from_object(LoadResultFn(Arc::clone(&query))),
            ),
        ] {
            // A project's own macro of that name wins, as in dbt.
            if !self.has_user_macro(name) {
                ctx.insert(name, v);
            }
        }
        ctx.insert(
            "adapter",
            Value::from_object(Adapter {
                dispatch: Arc::clone(&self.dispatch),
                query: Some(query),
            }),
        );
        if let Some(c) = capture {
            ctx.insert("__strata_capture", Value::from_object(CaptureObj(c)));
        }
        Value::from(ctx)
    }

    fn map_error(&self, e: &minijinja::Error, current: Option<(&str, &str)>) -> Error {
        let source = match (e.name(), current) {
            (Some(n), Some((cn, cs))) if n == cn => Some(cs.to_string()),
            (Some(n), _) => self
                .env
                .get_template(n)
                .ok()
                .map(|t| t.source().to_string()),
            _ => None,
        };
        map_template_error(e, source.as_deref())
    }
}

/// Converts any serializable value into a template value.
pub(crate) fn to_value<T: serde::Serialize>(v: T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

/// The keyword arguments of a call, when its last argument holds them.
pub(crate) fn kwargs_of(v: &Value) -> Option<Kwargs> {
    if v.is_kwargs() {
        Kwargs::from_value(Some(v)).ok()
    } else {
        None
    }
}

fn is_return(e: &minijinja::Error) -> bool {
    e.detail() == Some(RETURN_MARKER)
}

fn take_returned() -> Value {
    RETURNED
        .with(|r| r.borrow_mut().pop())
        .unwrap_or(Value::from(()))
}

/// Maps a MiniJinja error to `file:line:column: message`. Template names are file paths,
/// with `#package.macro` appended for macros.
fn map_template_error(e: &minijinja::Error, source: Option<&str>) -> Error {
    // An error raised inside a nested call keeps the innermost location; find it.
    let mut inner: &minijinja::Error = e;
    while let Some(src) =
        std::error::Error::source(inner).and_then(|s| s.downcast_ref::<minijinja::Error>())
    {
        if src.name().is_none() {
            break;
        }
        inner = src;
    }
    let name = inner.name().unwrap_or("<template>");
    let path = name.split('#').next().unwrap_or(name).to_string();
    let line = inner.line().unwrap_or(0) as u64;
    let column = match (inner.range(), source) {
        (Some(r), Some(s)) if std::ptr::eq(inner, e) => line_col(s, r.start).1 as u64,
        _ => 0,
    };
    let message = if is_return(inner) {
        "`return(...)` used outside a macro".to_string()
    } else {
        match (inner.kind(), inner.detail()) {
            (ErrorKind::InvalidOperation, Some(d)) => d.to_string(),
            (kind, Some(d)) => format!("{kind}: {d}"),
            (kind, None) => kind.to_string(),
        }
    };
    Error::at(path, line, column.max(u64::from(line > 0)), message)
}

// ---------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------

/// A macro as a global callable: renders its template with the caller's context.
#[derive(Debug)]
struct MacroRef {
    package: String,
    name: String,
    template: String,
}

impl MacroRef {
    fn value(package: &str, name: &str, template: &str) -> Value {
        Value::from_object(MacroRef {
            package: package.to_string(),
            name: name.to_string(),
            template: template.to_string(),
        })
    }
}

impl Object for MacroRef {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn call(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        let mut ctx = BTreeMap::new();
        for key in CONTEXT_KEYS {
            if let Some(v) = state.lookup(key) {
                ctx.insert(*key, v);
            }
        }
        if let Some(c) = state.lookup("__strata_capture")
            && let Some(c) = c.downcast_object_ref::<CaptureObj>()
        {
            c.0.lock()
                .expect("capture lock is never poisoned")
                .macros
                .insert(format!("macro.{}.{}", self.package, self.name));
        }
        // A `{% call %}` block: render the caller's body now, in the caller's state, and hand
        // the text to the macro (a caller taking arguments is rendered without them).
        let mut args = args.to_vec();
        if let Some(last) = args.last()
            && let Some(kw) = kwargs_of(last)
            && kw.has("caller")
        {
            let caller: Value = kw.get("caller")?;
            let body = caller.call(state, &[])?;
            let mut rest: Vec<(String, Value)> = Vec::new();
            for k in kw.args() {
                if k != "caller" {
                    rest.push((k.to_string(), kw.get::<Value>(k)?));
                }
            }
            let body = body.to_string();
            rest.push((
                "caller".into(),
                Value::from_function(move |_: Rest<Value>| Value::from_safe_string(body.clone())),
            ));
            let n = args.len();
            args[n - 1] = Value::from(Kwargs::from_iter(rest));
        }
        let env = state.env();
        let tmpl = env.get_template(&self.template)?;
        let mut captured = tmpl.render_captured(Value::from(ctx))?;
        let r = captured.with_state_mut(|st| {
            let f = st.lookup(&self.name).ok_or_else(|| {
                minijinja::Error::new(
                    ErrorKind::UnknownFunction,
                    format!(
                        "macro {}.{} is not defined in its file",
                        self.package, self.name
                    ),
                )
            })?;
            f.call(st, &args)
        });
        match r {
            Ok(v) => Ok(v),
            Err(e) if is_return(&e) => Ok(take_returned()),
            Err(e) => Err(e),
        }
    }
}

#[derive(Debug)]
struct Namespace {
    members: BTreeMap<String, Value>,
}

impl Object for Namespace {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.members.get(key.as_str()?).cloned()
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| {
            Box::new(
                this.members
                    .keys()
                    .map(|k| Value::from(k.clone()))
                    .collect::<Vec<_>>()
                    .into_iter(),
            )
        })
    }
}

#[derive(Debug)]
struct DbtNamespace {
    macros: BTreeMap<String, Value>,
}

impl Object for DbtNamespace {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let k = key.as_str()?;
        if let Some(m) = self.macros.get(k) {
            return Some(m.clone());
        }
        crate::crossdb::NAMES
            .iter()
            .find(|n| **n == k)
            .map(|n| Value::from_object(CrossDb { name: n }))
    }
}

#[derive(Debug)]
struct CrossDb {
    name: &'static str,
}

impl Object for CrossDb {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
    fn call(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        crate::crossdb::render(self.name, args).map(Value::from_safe_string)
    }
}

#[derive(Debug)]
struct RefFn {
    phase: Phase,
}

impl Object for RefFn {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
    fn call(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        let (pos, kw) = match args.last().and_then(kwargs_of) {
            Some(k) => (&args[..args.len() - 1], Some(k)),
            None => (args, None),
        };
        let strs: Vec<String> = pos.iter().map(|v| v.to_string()).collect();
        let version = match &kw {
            Some(k) => k
                .get::<Option<Value>>("version")?
                .or(k.get::<Option<Value>>("v")?)
                .map(|v| v.to_string()),
            None => None,
        };
        let call = match strs.as_slice() {
            [name] => RefCall {
                package: None,
                name: name.clone(),
                version,
            },
            [pkg, name] => RefCall {
                package: Some(pkg.clone()),
                name: name.clone(),
                version,
            },
            _ => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "ref() takes 1 or 2 arguments (got {}); write ref('model') or ref('package', 'model')",
                        strs.len()
                    ),
                ));
            }
        };
        match &self.phase {
            Phase::Parse(c) => {
                let mut c = c.lock().expect("capture lock is never poisoned");
                if !c.refs.contains(&call) {
                    c.refs.push(call.clone());
                }
                Ok(Value::from_object(RelationName {
                    database: crate::TARGET_DATABASE.into(),
                    schema: crate::DEFAULT_TARGET_SCHEMA.into(),
                    identifier: call.name,
                    cte: None,
                    filter: None,
                }))
            }
            Phase::Compile(l) => l
                .resolve_ref(&call)
                .map(Value::from_object)
                .map_err(|m| minijinja::Error::new(ErrorKind::InvalidOperation, m)),
        }
    }
}

#[derive(Debug)]
struct SourceFn {
    phase: Phase,
}

impl Object for SourceFn {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
    fn call(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        let [s, t] = args else {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "source() takes 2 arguments (got {}); write source('source_name', 'table_name')",
                    args.len()
                ),
            ));
        };
        let (s, t) = (s.to_string(), t.to_string());
        match &self.phase {
            Phase::Parse(c) => {
                let mut c = c.lock().expect("capture lock is never poisoned");
                let pair = (s.clone(), t.clone());
                if !c.sources.contains(&pair) {
                    c.sources.push(pair);
                }
                Ok(Value::from_object(RelationName {
                    database: crate::TARGET_DATABASE.into(),
                    schema: s,
                    identifier: t,
                    cte: None,
                    filter: None,
                }))
            }
            Phase::Compile(l) => l
                .resolve_source(&s, &t)
                .map(Value::from_object)
                .map_err(|m| minijinja::Error::new(ErrorKind::InvalidOperation, m)),
        }
    }
}

#[derive(Debug)]
struct CaptureObj(Arc<Mutex<Capture>>);
impl Object for CaptureObj {}

#[derive(Debug)]
struct ConfigObj {
    capture: Option<Arc<Mutex<Capture>>>,
    config: Map<String, serde_json::Value>,
}

impl ConfigObj {
    fn lookup(&self, key: &str) -> Option<serde_json::Value> {
        if let Some(c) = &self.capture {
            let c = c.lock().expect("capture lock is never poisoned");
            if let Some(v) = c.config.get(key) {
                return Some(v.clone());
            }
        }
        self.config.get(key).cloned()
    }
}

impl Object for ConfigObj {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
    fn call(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        if let Some(c) = &self.capture {
            let mut c = c.lock().expect("capture lock is never poisoned");
            for a in args {
                let j = serde_json::to_value(a).map_err(|e| {
                    minijinja::Error::new(ErrorKind::BadSerialization, e.to_string())
                })?;
                if let serde_json::Value::Object(m) = j {
                    for (k, v) in m {
                        c.config.insert(crate::config::normalize_key(&k), v);
                    }
                }
            }
        }
        Ok(Value::from(""))
    }
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        let key = args.first().map(|v| v.to_string()).unwrap_or_default();
        match method {
            "get" => Ok(self
                .lookup(&key)
                .map(to_value)
                .or_else(|| args.get(1).cloned())
                .unwrap_or(Value::from(()))),
            "require" => self.lookup(&key).map(to_value).ok_or_else(|| {
                minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("config `{key}` is required; set it in config() or the model's yml"),
                )
            }),
            "set" => Ok(Value::from("")),
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[derive(Debug)]
struct VarObj {
    vars: Map<String, serde_json::Value>,
}

impl Object for VarObj {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
    fn call(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        let name = args.first().map(|v| v.to_string()).unwrap_or_default();
        match self.vars.get(&name) {
            Some(v) => Ok(to_value(v)),
            None => args.get(1).cloned().ok_or_else(|| {
                minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("Required var '{name}' not found in config: add it under `vars:` in dbt_project.yml, pass --vars '{{{name}: …}}', or give var() a default"),
                )
            }),
        }
    }
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        match method {
            "has_var" => Ok(Value::from(
                self.vars
                    .contains_key(&args.first().map(|v| v.to_string()).unwrap_or_default()),
            )),
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[derive(Debug)]
struct Exceptions {
    logs: Arc<Mutex<Vec<String>>>,
}

impl Object for Exceptions {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        let msg = args.first().map(|v| v.to_string()).unwrap_or_default();
        match method {
            "raise_compiler_error" => Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("Compilation Error: {msg}"),
            )),
            "raise_not_implemented" => Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("Not implemented: {msg}"),
            )),
            "warn" => {
                self.logs
                    .lock()
                    .expect("log buffer lock is never poisoned")
                    .push(format!("warning: {msg}"));
                Ok(Value::from(""))
            }
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[derive(Debug, Default)]
struct DispatchIndex {
    root: String,
    packages: Vec<String>,
    orders: BTreeMap<String, Vec<String>>,
    macros: BTreeMap<(String, String), String>,
}

#[derive(Debug)]
struct Adapter {
    dispatch: Arc<DispatchIndex>,
    /// The render's queries (none for the global fallback).
    query: Option<Arc<QueryCtx>>,
}

impl Object for Adapter {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "type" => Some(Value::from(ADAPTER_TYPE)),
            _ => None,
        }
    }
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        let (pos, kw) = match args.last().and_then(kwargs_of) {
            Some(k) => (&args[..args.len() - 1], Some(k)),
            None => (args, None),
        };
        match method {
            "dispatch" => {
                let name = pos.first().map(|v| v.to_string()).unwrap_or_default();
                let ns = match pos.get(1) {
                    Some(v) if !v.is_none() => Some(v.to_string()),
                    _ => kw
                        .as_ref()
                        .and_then(|k| k.get::<Option<String>>("macro_namespace").ok().flatten()),
                };
                let d = &self.dispatch;
                let order: Vec<String> = match ns.as_ref().and_then(|n| d.orders.get(n)) {
                    Some(o) => o.clone(),
                    None => {
                        let mut o = vec![d.root.clone()];
                        if let Some(n) = &ns {
                            o.push(n.clone());
                        }
                        o.extend(d.packages.iter().cloned());
                        o.push("dbt".into());
                        o
                    }
                };
                for pkg in &order {
                    for prefix in [format!("{ADAPTER_TYPE}__"), "default__".to_string()] {
                        let mname = format!("{prefix}{name}");
                        if let Some(t) = d.macros.get(&(pkg.clone(), mname.clone())) {
                            return Ok(MacroRef::value(pkg, &mname, t));
                        }
                    }
                }
                if ns.as_deref().is_none_or(|n| n == "dbt")
                    && let Some(n) = crate::crossdb::NAMES.iter().find(|n| **n == name)
                {
                    return Ok(Value::from_object(CrossDb { name: n }));
                }
                Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "adapter.dispatch: no macro `{ADAPTER_TYPE}__{name}` or `default__{name}` in {}",
                        order.join(", ")
                    ),
                ))
            }
            "quote" => Ok(Value::from_safe_string(format!(
                "\"{}\"",
                pos.first()
                    .map(|v| v.to_string())
                    .unwrap_or_default()
                    .replace('"', "\"\"")
            ))),
            "get_columns_in_relation" if self.query.is_some() => {
                let rel = match pos.first() {
                    Some(r) => r.clone(),
                    None => kw
                        .as_ref()
                        .and_then(|k| k.get::<Option<Value>>("relation").ok().flatten())
                        .unwrap_or(Value::from(())),
                };
                self.query
                    .as_ref()
                    .expect("checked by the match guard")
                    .columns_in(&rel)
            }
            other => Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("adapter.{other} needs the warehouse and is not available while compiling"),
            )),
        }
    }
}

/// A `datetime` value: `run_started_at`, `modules.datetime.datetime.now()`.
#[derive(Debug, Clone)]
struct DateTime(chrono::DateTime<chrono::Utc>);

impl Object for DateTime {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        use chrono::{Datelike, Timelike};
        let d = &self.0;
        Some(Value::from(match key.as_str()? {
            "year" => d.year() as i64,
            "month" => i64::from(d.month()),
            "day" => i64::from(d.day()),
            "hour" => i64::from(d.hour()),
            "minute" => i64::from(d.minute()),
            "second" => i64::from(d.second()),
            "microsecond" => i64::from(d.timestamp_subsec_micros()),
            _ => return None,
        }))
    }
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        match method {
            "strftime" => {
                let fmt = args.first().map(|v| v.to_string()).unwrap_or_default();
                Ok(Value::from(self.0.format(&fmt).to_string()))
            }
            "isoformat" => Ok(Value::from(
                self.0.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string(),
            )),
            "timestamp" => Ok(Value::from(self.0.timestamp_micros() as f64 / 1e6)),
            "date" => Ok(Value::from(self.0.format("%Y-%m-%d").to_string())),
            "astimezone" | "replace" => Ok(Value::from_dyn_object(Arc::clone(self))),
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }
    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d %H:%M:%S%.6f+00:00"))
    }
}

#[derive(Debug)]
struct DatetimeClass;

impl Object for DatetimeClass {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        match method {
            "now" | "utcnow" => Ok(Value::from_object(DateTime(chrono::Utc::now()))),
            "strptime" => {
                let s = args.first().map(|v| v.to_string()).unwrap_or_default();
                let fmt = args.get(1).map(|v| v.to_string()).unwrap_or_default();
                let parsed = chrono::NaiveDateTime::parse_from_str(&s, &fmt)
                    .or_else(|_| {
                        chrono::NaiveDate::parse_from_str(&s, &fmt)
                            .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight is valid"))
                    })
                    .map_err(|e| {
                        minijinja::Error::new(
                            ErrorKind::InvalidOperation,
                            format!("strptime({s:?}, {fmt:?}): {e}"),
                        )
                    })?;
                Ok(Value::from_object(DateTime(parsed.and_utc())))
            }
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[derive(Debug)]
struct DateClass;

impl Object for DateClass {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        match method {
            "today" => Ok(Value::from(
                chrono::Utc::now().format("%Y-%m-%d").to_string(),
            )),
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `modules.re`: Python's `re` on the `regex` crate (`\1` in replacements becomes `${1}`).
#[derive(Debug)]
struct Re;

fn regex_of(p: &str) -> std::result::Result<regex::Regex, minijinja::Error> {
    regex::Regex::new(p)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("modules.re: {e}")))
}

impl Object for Re {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> std::result::Result<Value, minijinja::Error> {
        let s = |i: usize| args.get(i).map(|v| v.to_string()).unwrap_or_default();
        match method {
            "search" | "match" | "fullmatch" => {
                let pat = match method {
                    "match" => format!("^(?:{})", s(0)),
                    "fullmatch" => format!("^(?:{})$", s(0)),
                    _ => s(0),
                };
                let re = regex_of(&pat)?;
                let text = s(1);
                Ok(match re.captures(&text) {
                    Some(c) => Value::from(
                        c.iter()
                            .map(|m| {
                                m.map(|m| Value::from(m.as_str()))
                                    .unwrap_or(Value::from(()))
                            })
                            .collect::<Vec<_>>(),
                    ),
                    None => Value::from(()),
                })
            }
            "sub" => {
                let re = regex_of(&s(0))?;
                let repl = regex::Regex::new(r"\\(\d+)")
                    .expect("static regex")
                    .replace_all(&s(1), "$${$1}")
                    .into_owned();
                Ok(Value::from(
                    re.replace_all(&s(2), repl.as_str()).into_owned(),
                ))
            }
            "findall" => {
                let re = regex_of(&s(0))?;
                let text = s(1);
                Ok(Value::from(
                    re.captures_iter(&text)
                        .map(|c| {
                            Value::from(c.get(1).or(c.get(0)).map(|m| m.as_str()).unwrap_or(""))
                        })
                        .collect::<Vec<_>>(),
                ))
            }
            "split" => {
                let re = regex_of(&s(0))?;
                Ok(Value::from(
                    re.split(&s(1)).map(Value::from).collect::<Vec<_>>(),
                ))
            }
            "escape" => Ok(Value::from(regex::escape(&s(0)))),
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

fn modules() -> Value {
    let mut datetime = BTreeMap::new();
    datetime.insert("datetime", Value::from_object(DatetimeClass));
    datetime.insert("date", Value::from_object(DateClass));
    let mut m = BTreeMap::new();
    m.insert("datetime", Value::from(datetime));
    m.insert("re", Value::from_object(Re));
    Value::from(m)
}

/// The built-in macros of the `dbt` package: generic tests (dbt's default implementations).
pub(crate) const BUILTIN_MACROS: &str = r#"{% macro test_unique(model, column_name) %}
select {{ column_name }} as unique_field, count(*) as n_records
from {{ model }}
where {{ column_name }} is not null
group by {{ column_name }}
having count(*) > 1
{% endmacro %}
{% macro test_not_null(model, column_name) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} is null
{% endmacro %}
{% macro test_accepted_values(model, column_name, values, quote=True) %}
with all_values as (
    select {{ column_name }} as value_field, count(*) as n_records
    from {{ model }}
    group by {{ column_name }}
)
select *
from all_values
where value_field not in (
    {% for value in values -%}
    {% if quote %}'{{ value }}'{% else %}{{ value }}{% endif %}{% if not loop.last %}, {% endif %}
    {%- endfor %}
)
{% endmacro %}
{% macro test_relationships(model, column_name, to, field) %}
with child as (
    select {{ column_name }} as from_field
    from {{ model }}
    where {{ column_name }} is not null
),
parent as (
    select {{ field }} as to_field
    from {{ to }}
)
select from_field
from child
left join parent on child.from_field = parent.to_field
where parent.to_field is null
{% endmacro %}
"#;
