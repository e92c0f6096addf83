//! dbt's query-time Jinja: `run_query(sql)`, `{% call statement(name, fetch_result=True) %}`
//! with `load_result(name)`, and `adapter.get_columns_in_relation(relation)`.
//!
//! This crate never touches the engine: the execution layer hands the manifest a
//! [`QueryRunner`] (see [`crate::Manifest::set_query_runner`]) and rendering calls it only in
//! the compile phase. At parse time `execute` is false, `run_query` returns none and
//! `statement` runs nothing, as in dbt.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value};
use minijinja::{ErrorKind, State};

use crate::jinja::{kwargs_of, to_value};

/// Runs queries for rendering (`run_query`, `statement`, `adapter.get_columns_in_relation`).
pub trait QueryRunner: Send + Sync + std::fmt::Debug {
    /// Runs `sql` (one or more statements) and returns the rows of the last one.
    fn query(&self, sql: &str) -> std::result::Result<QueryResult, String>;
    /// The columns of `relation` (rendered relation name) as `(name, data type)`.
    fn columns(&self, relation: &str) -> std::result::Result<Vec<(String, String)>, String>;
}

/// The rows a query returned, values as JSON (dates and timestamps as strings).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResult {
    /// Column names.
    pub columns: Vec<String>,
    /// Column data types, as SQL type names.
    pub types: Vec<String>,
    /// Rows, each with one value per column.
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// The query side of one render: whether queries run, the runner, and `statement` results.
#[derive(Debug)]
pub(crate) struct QueryCtx {
    executing: bool,
    runner: Option<Arc<dyn QueryRunner>>,
    results: Mutex<BTreeMap<String, Value>>,
}

impl QueryCtx {
    pub(crate) fn new(executing: bool, runner: Option<Arc<dyn QueryRunner>>) -> Arc<Self> {
        Arc::new(QueryCtx {
            executing,
            runner,
            results: Mutex::default(),
        })
    }

    fn runner(&self, what: &str) -> Result<&Arc<dyn QueryRunner>, minijinja::Error> {
        self.runner.as_ref().ok_or_else(|| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "{what} needs a database connection; use `strata run` or `strata build` rather than `strata compile`"
                ),
            )
        })
    }

    /// Runs `sql` when executing; `None` at parse time.
    fn run(&self, what: &str, sql: &str) -> Result<Option<QueryResult>, minijinja::Error> {
        if !self.executing {
            return Ok(None);
        }
        self.runner(what)?.query(sql).map(Some).map_err(|e| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("{what} failed: {e}\nquery:\n{}", sql.trim()),
            )
        })
    }

    /// `adapter.get_columns_in_relation(relation)`: column objects; empty at parse time.
    pub(crate) fn columns_in(&self, relation: &Value) -> Result<Value, minijinja::Error> {
        if !self.executing {
            return Ok(Value::from(Vec::<Value>::new()));
        }
        let rel = relation.to_string();
        let cols = self
            .runner("adapter.get_columns_in_relation")?
            .columns(&rel)
            .map_err(|e| {
                minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("adapter.get_columns_in_relation({rel}) failed: {e}"),
                )
            })?;
        Ok(Value::from(
            cols.into_iter()
                .map(|(name, dtype)| Value::from_object(AdapterColumn { name, dtype }))
                .collect::<Vec<_>>(),
        ))
    }
}

/// `run_query(sql)`.
#[derive(Debug)]
pub(crate) struct RunQueryFn(pub(crate) Arc<QueryCtx>);

impl Object for RunQueryFn {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
    fn call(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        let sql = match args.first() {
            Some(v) if !v.is_kwargs() => v.to_string(),
            _ => match args.first().and_then(kwargs_of) {
                Some(kw) => kw.get::<String>("sql")?,
                None => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        "run_query() takes the SQL text: run_query('select …')",
                    ));
                }
            },
        };
        Ok(match self.0.run("run_query", &sql)? {
            Some(r) => Value::from_object(QueryTable::new(r)),
            None => Value::from(()),
        })
    }
}

/// `statement(name, fetch_result=False, auto_begin=True)`, used as `{% call statement(…) %}`.
#[derive(Debug)]
pub(crate) struct StatementFn(pub(crate) Arc<QueryCtx>);

impl Object for StatementFn {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
    fn call(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        let (pos, kw) = match args.last().and_then(kwargs_of) {
            Some(k) => (&args[..args.len() - 1], k),
            None => (args, Kwargs::from_iter(Vec::<(String, Value)>::new())),
        };
        let name = match pos.first() {
            Some(v) => v.to_string(),
            None => kw
                .get::<Option<String>>("name")?
                .unwrap_or_else(|| "statement".into()),
        };
        let fetch = match pos.get(1) {
            Some(v) => v.is_true(),
            None => kw.get::<Option<bool>>("fetch_result")?.unwrap_or(false),
        };
        let caller: Option<Value> = kw.get("caller")?;
        let Some(caller) = caller else {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "statement() is a call block: {% call statement('name', fetch_result=True) %}select …{% endcall %}",
            ));
        };
        if !self.0.executing {
            // dbt does not render the body at parse time either.
            return Ok(Value::from(""));
        }
        let sql = caller.call(state, &[])?.to_string();
        let result = self.0.run("statement", &sql)?.unwrap_or_default();
        let n = result.rows.len();
        let table = if fetch {
            QueryTable::new(result)
        } else {
            QueryTable::new(QueryResult::default())
        };
        let data: Vec<Value> = table.rows.clone();
        let mut response = BTreeMap::new();
        response.insert("_message", Value::from(format!("OK {n}")));
        response.insert("code", Value::from("OK"));
        response.insert("rows_affected", Value::from(n));
        let mut out = BTreeMap::new();
        out.insert("response", Value::from(response));
        out.insert("data", Value::from(data));
        out.insert("table", Value::from_object(table));
        self.0
            .results
            .lock()
            .expect("statement results lock is never poisoned")
            .insert(name, Value::from(out));
        Ok(Value::from(""))
    }
}

/// `load_result(name)`: what `statement(name)` stored in this render, or none.
#[derive(Debug)]
pub(crate) struct LoadResultFn(pub(crate) Arc<QueryCtx>);

impl Object for LoadResultFn {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
    fn call(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        let name = args.first().map(|v| v.to_string()).unwrap_or_default();
        Ok(self
            .0
            .results
            .lock()
            .expect("statement results lock is never poisoned")
            .get(&name)
            .cloned()
            .unwrap_or(Value::from(())))
    }
}

/// An agate-like table: `columns`, `column_names`, `column_types`, `rows`; iterating it
/// yields its rows.
#[derive(Debug)]
struct QueryTable {
    names: Arc<Vec<String>>,
    types: Vec<String>,
    /// Each row as a [`TableRow`].
    rows: Vec<Value>,
    /// Values by column.
    columns: Vec<Vec<Value>>,
}

impl QueryTable {
    fn new(r: QueryResult) -> Self {
        let names = Arc::new(r.columns);
        let mut columns: Vec<Vec<Value>> = vec![Vec::with_capacity(r.rows.len()); names.len()];
        let rows = r
            .rows
            .into_iter()
            .map(|row| {
                let values: Vec<Value> = row.into_iter().map(to_value).collect();
                for (c, v) in columns.iter_mut().zip(&values) {
                    c.push(v.clone());
                }
                Value::from_object(TableRow {
                    names: Arc::clone(&names),
                    values,
                })
            })
            .collect();
        QueryTable {
            names,
            types: r.types,
            rows,
            columns,
        }
    }

    fn column(&self, i: usize) -> Value {
        Value::from_object(TableColumn {
            name: self.names[i].clone(),
            data_type: self.types.get(i).cloned().unwrap_or_default(),
            values: self.columns[i].clone(),
        })
    }
}

impl Object for QueryTable {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if let Some(i) = index_of(key, self.rows.len()) {
            return self.rows.get(i).cloned();
        }
        Some(match key.as_str()? {
            "columns" => Value::from_object(ColumnSet(Arc::clone(self))),
            "column_names" => Value::from(self.names.as_ref().clone()),
            "column_types" => Value::from(self.types.clone()),
            "rows" => Value::from(self.rows.clone()),
            _ => return None,
        })
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.rows.len())
    }
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        match method {
            "print_table" | "print_json" => Ok(Value::from("")),
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// A non-negative position (negative ones count from the end).
fn index_of(key: &Value, len: usize) -> Option<usize> {
    if key.as_str().is_some() {
        return None;
    }
    let i = i64::try_from(key.clone()).ok()?;
    if i < 0 {
        len.checked_sub(i.unsigned_abs() as usize)
    } else {
        Some(i as usize)
    }
}

/// `table.columns`: by position or by name.
#[derive(Debug)]
struct ColumnSet(Arc<QueryTable>);

impl Object for ColumnSet {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let t = &self.0;
        let i = match key.as_str() {
            Some(name) => t.names.iter().position(|n| n == name)?,
            None => index_of(key, t.names.len())?,
        };
        (i < t.names.len()).then(|| t.column(i))
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.0.names.len())
    }
}

/// One column of a table: `.name`, `.data_type`, `.values()`; a sequence of its values.
#[derive(Debug)]
struct TableColumn {
    name: String,
    data_type: String,
    values: Vec<Value>,
}

impl Object for TableColumn {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if let Some(i) = index_of(key, self.values.len()) {
            return self.values.get(i).cloned();
        }
        Some(match key.as_str()? {
            "name" => Value::from(self.name.clone()),
            "data_type" => Value::from(self.data_type.clone()),
            _ => return None,
        })
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.values.len())
    }
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        match method {
            "values" => Ok(Value::from(self.values.clone())),
            "values_without_nulls" => Ok(Value::from(
                self.values
                    .iter()
                    .filter(|v| !v.is_none())
                    .cloned()
                    .collect::<Vec<_>>(),
            )),
            "values_distinct" => {
                let mut out: Vec<Value> = Vec::new();
                for v in &self.values {
                    if !out.contains(v) {
                        out.push(v.clone());
                    }
                }
                Ok(Value::from(out))
            }
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// One row: by position or by column name; a sequence of its values.
#[derive(Debug)]
struct TableRow {
    names: Arc<Vec<String>>,
    values: Vec<Value>,
}

impl Object for TableRow {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str() {
            Some(name) => {
                let i = self.names.iter().position(|n| n == name)?;
                self.values.get(i).cloned()
            }
            None => self.values.get(index_of(key, self.values.len())?).cloned(),
        }
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Seq(self.values.len())
    }
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        match method {
            "keys" => Ok(Value::from(self.names.as_ref().clone())),
            "values" => Ok(Value::from(self.values.clone())),
            "items" => Ok(Value::from(
                self.names
                    .iter()
                    .zip(&self.values)
                    .map(|(n, v)| Value::from(vec![Value::from(n.clone()), v.clone()]))
                    .collect::<Vec<_>>(),
            )),
            "dict" => Ok(Value::from(
                self.names
                    .iter()
                    .cloned()
                    .zip(self.values.iter().cloned())
                    .collect::<BTreeMap<String, Value>>(),
            )),
            "get" => {
                let key = args.first().cloned().unwrap_or(Value::from(()));
                Ok(self
                    .get_value(&key)
                    .or_else(|| args.get(1).cloned())
                    .unwrap_or(Value::from(())))
            }
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// A column of `adapter.get_columns_in_relation`: `.name`/`.column`, `.data_type`/`.dtype`,
/// `.quoted`, `is_string()`, `is_number()`….
#[derive(Debug)]
struct AdapterColumn {
    name: String,
    dtype: String,
}

impl Object for AdapterColumn {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(match key.as_str()? {
            "name" | "column" => Value::from(self.name.clone()),
            "data_type" | "dtype" => Value::from(self.dtype.clone()),
            "quoted" => Value::from_safe_string(format!("\"{}\"", self.name.replace('"', "\"\""))),
            _ => return None,
        })
    }
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        let t = self.dtype.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
        let integer = has(&["int"]);
        let float = has(&["float", "double", "real"]);
        let numeric = has(&["decimal", "numeric"]);
        Ok(Value::from(match method {
            "is_string" => has(&["char", "text", "string", "utf8"]),
            "is_integer" => integer,
            "is_float" => float,
            "is_numeric" => numeric,
            "is_number" => integer || float || numeric,
            _ => return Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }))
    }
    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}
