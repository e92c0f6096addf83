//! Checks of the modeling layer that run beside materialization: dbt unit tests (`unit_tests:`
//! with `given`/`expect` rows) and model contracts (`contract: {enforced: true}`).
//!
//! A unit test runs its model's compiled SQL with every `given` input replaced by a CTE of
//! the given rows (typed by the input relation's columns when it exists), and compares the
//! expected columns of the result with the `expect` rows, ignoring order. A contract plans
//! the model's query and compares its output columns with the declared ones before the
//! relation is replaced.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use serde_json::Value;
use strata_engine::datafusion::arrow::array::RecordBatch;
use strata_engine::datafusion::arrow::datatypes::{DataType, SchemaRef};
use strata_engine::datafusion::arrow::util::display::array_value_to_string;
use strata_engine::{Session, StatementResult};
use strata_models::{CompileOptions, Manifest, Node, ResourceType, UnitTest};

/// Whether a node stands for a unit test (see [`unit_test_nodes`]).
pub(crate) fn is_unit_test(n: &Node) -> bool {
    n.unique_id.starts_with("unit_test.")
}

/// The selected unit tests as test nodes: a unit test comes along when its model is among
/// `chosen`, or when the selection names `test_type:unit` or the unit test itself;
/// `--exclude test_type:unit` (or its name) leaves it out.
pub(crate) fn unit_test_nodes(
    manifest: &Manifest,
    chosen: &[String],
    select: &[String],
    exclude: &[String],
) -> Vec<Node> {
    let words = |list: &[String]| -> BTreeSet<String> {
        list.iter()
            .flat_map(|s| s.split([' ', ',']))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let (sel, exc) = (words(select), words(exclude));
    let names = |u: &UnitTest| {
        [
            u.name.clone(),
            format!("unit_test:{}", u.name),
            "test_type:unit".to_string(),
            "resource_type:unit_test".to_string(),
        ]
    };
    manifest
        .unit_tests
        .values()
        .filter(|u| {
            let by_name = names(u).iter().any(|w| sel.contains(w));
            let excluded = names(u).iter().any(|w| exc.contains(w));
            !excluded && (by_name || chosen.contains(&u.model))
        })
        .filter_map(|u| {
            let model = manifest.nodes.get(&u.model)?;
            let mut n = model.clone();
            n.unique_id = u.unique_id.clone();
            n.name = format!("{}::{}", model.name, u.name);
            n.resource_type = ResourceType::Test;
            n.original_file_path = u.original_file_path.clone();
            n.patch_path = None;
            n.test_metadata = None;
            n.attached_node = Some(u.model.clone());
            n.description = u.description.clone();
            Some(n)
        })
        .collect()
}

/// Every node upstream of `id`.
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

/// Orders unit tests in a run: each waits on its model's upstream nodes (its inputs exist
/// and are typed) and its model waits on it, so that a failing unit test skips the model.
pub(crate) fn gate_unit_tests<'a>(
    manifest: &Manifest,
    nodes: &[&'a Node],
    waits: &mut BTreeMap<&'a str, BTreeSet<String>>,
) {
    for n in nodes.iter().filter(|n| is_unit_test(n)) {
        let Some(model) = n.attached_node.as_deref() else {
            continue;
        };
        waits.insert(n.unique_id.as_str(), ancestors(manifest, model));
        if let Some(w) = waits.get_mut(model) {
            w.insert(n.unique_id.clone());
        }
    }
}

/// Runs one unit test: `None` when the model's rows match the expected ones, else the
/// number of differing rows and a diff of the rows.
pub(crate) async fn run_unit_test(
    manifest: &Manifest,
    session: &Session,
    n: &Node,
) -> Result<Option<(u64, String)>> {
    let u = manifest
        .unit_tests
        .get(&n.unique_id)
        .with_context(|| format!("unknown unit test `{}`", n.unique_id))?;
    let model = &manifest.nodes[&u.model];
    let at = &u.original_file_path;
    let is_incremental = u
        .overrides
        .as_ref()
        .and_then(|o| o.get("macros"))
        .and_then(|m| m.get("is_incremental"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let compiled = manifest.compile_node(
        &model.unique_id,
        &CompileOptions {
            is_incremental,
            ..Default::default()
        },
    )?;
    let mut body = compiled.trim().trim_end_matches(';').trim_end().to_string();

    let mut ctes = Vec::new();
    for (i, given) in u.given.iter().enumerate() {
        let input = given
            .get("input")
            .and_then(Value::as_str)
            .with_context(|| {
                format!(
                    "{at}: unit test `{}`: a `given` entry has no `input`",
                    u.name
                )
            })?;
        let relation = input_relation(manifest, model, input)
            .with_context(|| format!("{at}: unit test `{}`", u.name))?;
        let schema = relation_schema(session, &relation).await;
        let cte = format!("dbt_unit_given_{i}");
        let fixture = fixture_sql(given, schema.as_ref())
            .with_context(|| format!("{at}: unit test `{}`, given `{input}`", u.name))?;
        body = replace_relation(&body, &relation, &cte);
        ctes.push(format!("{cte} as (\n{fixture}\n)"));
    }
    let with = if ctes.is_empty() {
        String::new()
    } else {
        format!("with {}\n", ctes.join(",\n"))
    };
    let actual_sql = format!("{with}select * from (\n{body}\n) as dbt_internal_unit_test_actual");
    let (actual_schema, actual_batches) = query(session, &actual_sql).await.with_context(|| {
        format!(
            "{at}: unit test `{}`: running model `{}`",
            u.name, model.name
        )
    })?;

    let expect_rows =
        fixture_rows(&u.expect).with_context(|| format!("{at}: unit test `{}`, expect", u.name))?;
    let mut columns: Vec<String> = Vec::new();
    for row in &expect_rows {
        for k in row.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let mut types = Vec::new();
    for c in &columns {
        let field = actual_schema
            .fields()
            .iter()
            .find(|f| f.name() == c)
            .with_context(|| {
                format!(
                    "{at}: unit test `{}`: expected column `{c}` is not an output column of model `{}`",
                    u.name, model.name
                )
            })?;
        types.push(field.data_type().clone());
    }
    let actual = format_rows(&actual_batches, &columns)?;
    let expected = if expect_rows.is_empty() {
        Vec::new()
    } else {
        let typed: Vec<(String, Option<DataType>)> = columns
            .iter()
            .cloned()
            .zip(types.iter().cloned().map(Some))
            .collect();
        let sql = select_rows(&typed, &expect_rows)?;
        let (_, batches) = query(session, &sql)
            .await
            .with_context(|| format!("{at}: unit test `{}`: expected rows", u.name))?;
        format_rows(&batches, &columns)?
    };
    Ok(diff_rows(&columns, &expected, &actual))
}

/// Finds the relation an `input:` names: `ref('m')`, `ref('pkg', 'm')`, `source('s', 't')`
/// or `this`.
fn input_relation(manifest: &Manifest, model: &Node, input: &str) -> Result<String> {
    let input = input.trim();
    if input == "this" {
        return Ok(model.relation.render());
    }
    let (func, rest) = input
        .split_once('(')
        .with_context(|| format!("input `{input}` is not `ref(...)`, `source(...)` or `this`"))?;
    let args: Vec<String> = rest
        .trim_end()
        .trim_end_matches(')')
        .split(',')
        .map(|a| a.trim().trim_matches(['\'', '"']).to_string())
        .filter(|a| !a.is_empty())
        .collect();
    let found = match (func.trim(), args.as_slice()) {
        ("ref", [name]) | ("ref", [_, name]) => manifest.nodes.values().find(|n| {
            matches!(
                n.resource_type,
                ResourceType::Model | ResourceType::Seed | ResourceType::Snapshot
            ) && &n.name == name
                && (args.len() == 1 || n.package_name == args[0])
        }),
        ("source", [s, t]) => manifest.nodes.values().find(|n| {
            n.resource_type == ResourceType::Source
                && n.source_name.as_deref() == Some(s.as_str())
                && &n.name == t
        }),
        _ => anyhow::bail!("input `{input}` is not `ref(...)`, `source(...)` or `this`"),
    };
    found
        .map(|n| n.relation.render())
        .with_context(|| format!("input `{input}` names no model, seed, snapshot or source"))
}

/// The columns of an existing relation, or `None` when it does not exist yet.
async fn relation_schema(session: &Session, relation: &str) -> Option<SchemaRef> {
    query_schema(session, &format!("select * from {relation} limit 0"))
        .await
        .ok()
}

/// Plans a query and returns its output schema (no rows are read).
pub(crate) async fn query_schema(session: &Session, sql: &str) -> Result<SchemaRef> {
    let mut schema = None;
    for stmt in session.parse(sql)? {
        if let StatementResult::Rows { schema: s, .. } = session.execute(stmt).await? {
            schema = Some(s);
        }
    }
    schema.context("the query returned no rows")
}

/// Runs a query: its schema and rows.
async fn query(session: &Session, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut out = None;
    for stmt in session.parse(sql)? {
        if let StatementResult::Rows { schema, stream } = session.execute(stmt).await? {
            let batches = strata_engine::datafusion::physical_plan::common::collect(stream).await?;
            out = Some((schema, batches));
        }
    }
    out.context("the query returned no rows")
}

/// The rows of a `given`/`expect` entry as column → value maps, by `format` (`dict`, the
/// default, or `csv`).
fn fixture_rows(entry: &Value) -> Result<Vec<serde_json::Map<String, Value>>> {
    let format = entry
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or("dict");
    let rows = entry.get("rows").cloned().unwrap_or(Value::Array(vec![]));
    match (format, rows) {
        ("dict", Value::Array(items)) => items
            .into_iter()
            .map(|r| match r {
                Value::Object(m) => Ok(m),
                other => anyhow::bail!("a row must be a mapping of column to value, got {other}"),
            })
            .collect(),
        ("dict", Value::Null) => Ok(Vec::new()),
        ("csv", Value::String(text)) => {
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let Some(header) = lines.next() else {
                return Ok(Vec::new());
            };
            let names: Vec<String> = header.split(',').map(|s| s.trim().to_string()).collect();
            lines
                .map(|line| {
                    let cells: Vec<&str> = line.split(',').collect();
                    anyhow::ensure!(
                        cells.len() == names.len(),
                        "csv row `{line}` has {} values for {} columns",
                        cells.len(),
                        names.len()
                    );
                    Ok(names
                        .iter()
                        .zip(cells)
                        .map(|(k, v)| {
                            let v = v.trim();
                            let value = if v.is_empty() || v.eq_ignore_ascii_case("null") {
                                Value::Null
                            } else if let Ok(i) = v.parse::<i64>() {
                                Value::from(i)
                            } else if let Ok(f) = v.parse::<f64>() {
                                Value::from(f)
                            } else {
                                Value::String(v.to_string())
                            };
                            (k.clone(), value)
                        })
                        .collect())
                })
                .collect()
        }
        (f, _) if f != "dict" && f != "csv" => {
            anyhow::bail!("format `{f}` is not supported; use `dict`, `csv` or `sql`")
        }
        (f, other) => anyhow::bail!("`rows` in format `{f}` cannot be {other}"),
    }
}

/// The SQL of one `given` input: its rows, with every column of the relation (missing values
/// are null) cast to the relation's types when the relation exists.
fn fixture_sql(given: &Value, schema: Option<&SchemaRef>) -> Result<String> {
    if given.get("format").and_then(Value::as_str) == Some("sql") {
        return given
            .get("rows")
            .and_then(Value::as_str)
            .map(|s| s.trim().trim_end_matches(';').to_string())
            .context("`rows` in format `sql` must be a query");
    }
    let rows = fixture_rows(given)?;
    let columns: Vec<(String, Option<DataType>)> = match schema {
        Some(s) => {
            for row in &rows {
                for k in row.keys() {
                    anyhow::ensure!(
                        s.fields().iter().any(|f| f.name() == k),
                        "column `{k}` is not a column of the input relation"
                    );
                }
            }
            s.fields()
                .iter()
                .map(|f| (f.name().clone(), Some(f.data_type().clone())))
                .collect()
        }
        None => {
            let mut cols: Vec<(String, Option<DataType>)> = Vec::new();
            for row in &rows {
                for k in row.keys() {
                    if !cols.iter().any(|(c, _)| c == k) {
                        cols.push((k.clone(), None));
                    }
                }
            }
            anyhow::ensure!(
                !cols.is_empty(),
                "the input relation does not exist and the rows name no columns"
            );
            cols
        }
    };
    select_rows(&columns, &rows)
}

/// `select … union all select …` of `rows` over `columns`; no rows gives an empty query of
/// the same columns.
fn select_rows(
    columns: &[(String, Option<DataType>)],
    rows: &[serde_json::Map<String, Value>],
) -> Result<String> {
    let one = |row: Option<&serde_json::Map<String, Value>>| -> String {
        let items: Vec<String> = columns
            .iter()
            .map(|(name, ty)| {
                let value = row.and_then(|r| r.get(name)).unwrap_or(&Value::Null);
                let lit = literal(value);
                let expr = match ty {
                    Some(t) => format!("arrow_cast({lit}, '{t}')"),
                    None => lit,
                };
                format!("{expr} as {}", quote_ident(name))
            })
            .collect();
        format!("select {}", items.join(", "))
    };
    Ok(if rows.is_empty() {
        format!("{} where false", one(None))
    } else {
        rows.iter()
            .map(|r| one(Some(r)))
            .collect::<Vec<_>>()
            .join("\nunion all\n")
    })
}

fn literal(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => format!("'{}'", other.to_string().replace('\'', "''")),
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Replaces every whole occurrence of `relation` in `sql` by `with`.
fn replace_relation(sql: &str, relation: &str, with: &str) -> String {
    let ident = |c: char| c.is_alphanumeric() || c == '_' || c == '.' || c == '"';
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(pos) = rest.find(relation) {
        let before = rest[..pos].chars().last().or_else(|| out.chars().last());
        let after = rest[pos + relation.len()..].chars().next();
        out.push_str(&rest[..pos]);
        if before.is_some_and(ident) || after.is_some_and(ident) {
            out.push_str(relation);
        } else {
            out.push_str(with);
        }
        rest = &rest[pos + relation.len()..];
    }
    out.push_str(rest);
    out
}

/// The rows of `batches` as display strings of `columns`, in that order.
fn format_rows(batches: &[RecordBatch], columns: &[String]) -> Result<Vec<Vec<String>>> {
    let mut out = Vec::new();
    for b in batches {
        let idx: Vec<usize> = columns
            .iter()
            .map(|c| b.schema().index_of(c).map_err(anyhow::Error::from))
            .collect::<Result<_>>()?;
        for r in 0..b.num_rows() {
            let row = idx
                .iter()
                .map(|&i| {
                    let col = b.column(i);
                    if col.is_null(r) {
                        Ok("null".to_string())
                    } else {
                        array_value_to_string(col, r).map_err(anyhow::Error::from)
                    }
                })
                .collect::<Result<Vec<String>>>()?;
            out.push(row);
        }
    }
    Ok(out)
}

/// Compares the rows as multisets; on a difference, the count of unmatched rows and dbt's
/// diff table: `+++` rows the model returned but were not expected, `---` expected rows it
/// did not return.
fn diff_rows(
    columns: &[String],
    expected: &[Vec<String>],
    actual: &[Vec<String>],
) -> Option<(u64, String)> {
    let mut missing: Vec<Vec<String>> = expected.to_vec();
    let mut extra = Vec::new();
    let mut matched = Vec::new();
    for row in actual {
        if let Some(i) = missing.iter().position(|e| e == row) {
            matched.push(missing.remove(i));
        } else {
            extra.push(row.clone());
        }
    }
    if missing.is_empty() && extra.is_empty() {
        return None;
    }
    let mut table: Vec<(&str, &Vec<String>)> = Vec::new();
    let header = columns.to_vec();
    table.push(("@@", &header));
    matched.sort();
    missing.sort();
    extra.sort();
    table.extend(matched.iter().map(|r| ("", r)));
    table.extend(extra.iter().map(|r| ("+++", r)));
    table.extend(missing.iter().map(|r| ("---", r)));
    let mut widths = vec![3usize; columns.len() + 1];
    for (mark, row) in &table {
        widths[0] = widths[0].max(mark.chars().count());
        for (i, v) in row.iter().enumerate() {
            widths[i + 1] = widths[i + 1].max(v.chars().count());
        }
    }
    let mut text = String::from("actual differs from expected:\n\n");
    for (mark, row) in &table {
        let mut cells = vec![format!("{mark:<w$}", w = widths[0])];
        for (i, v) in row.iter().enumerate() {
            cells.push(format!("{v:<w$}", w = widths[i + 1]));
        }
        text.push_str(cells.join(" | ").trim_end());
        text.push('\n');
    }
    Some((
        (missing.len() + extra.len()) as u64,
        text.trim_end().to_string(),
    ))
}

/// Enforces a model's contract (`contract: {enforced: true}`): the query's output columns
/// must have the declared names and types, else the model fails before its relation is
/// touched, with dbt's table of differences.
pub(crate) async fn check_contract(session: &Session, n: &Node, body: &str) -> Result<()> {
    let enforced = n
        .config
        .get("contract")
        .and_then(|c| c.get("enforced"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !enforced {
        return Ok(());
    }
    let declared: Vec<(&str, &str)> = n
        .columns
        .values()
        .map(|c| (c.name.as_str(), c.data_type.as_deref().unwrap_or("")))
        .collect();
    if let Some((name, _)) = declared.iter().find(|(_, t)| t.is_empty()) {
        anyhow::bail!(
            "{}: contract enforced, but column `{name}` has no `data_type`; declare one for every column",
            n.original_file_path
        );
    }
    anyhow::ensure!(
        !declared.is_empty(),
        "{}: contract enforced, but the model declares no `columns`",
        n.original_file_path
    );
    let actual = query_schema(
        session,
        &format!("select * from (\n{body}\n) as dbt_contract_check limit 0"),
    )
    .await
    .with_context(|| format!("{}: planning the model's query", n.original_file_path))?;
    let casts: Vec<String> = declared
        .iter()
        .map(|(name, ty)| format!("cast(null as {ty}) as {}", quote_ident(name)))
        .collect();
    let contract = query_schema(session, &format!("select {} limit 0", casts.join(", ")))
        .await
        .with_context(|| {
            format!(
                "{}: a declared `data_type` is not a type",
                n.original_file_path
            )
        })?;
    let mut rows: Vec<[String; 4]> = Vec::new();
    for ((name, ty), field) in declared.iter().zip(contract.fields()) {
        match actual.fields().iter().find(|f| f.name() == name) {
            None => rows.push([
                name.to_string(),
                String::new(),
                ty.to_uppercase(),
                "missing in definition".into(),
            ]),
            Some(a) if !same_type(a.data_type(), field.data_type()) => rows.push([
                name.to_string(),
                sql_type(a.data_type()),
                ty.to_uppercase(),
                "data type mismatch".into(),
            ]),
            Some(_) => {}
        }
    }
    for f in actual.fields() {
        if !declared.iter().any(|(name, _)| name == f.name()) {
            rows.push([
                f.name().clone(),
                sql_type(f.data_type()),
                String::new(),
                "missing in contract".into(),
            ]);
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let head = [
        "column_name".to_string(),
        "definition_type".into(),
        "contract_type".into(),
        "mismatch_reason".into(),
    ];
    let mut widths = [0usize; 4];
    for r in std::iter::once(&head).chain(&rows) {
        for (i, v) in r.iter().enumerate() {
            widths[i] = widths[i].max(v.chars().count());
        }
    }
    let line = |r: &[String; 4]| {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{v:<w$}", w = widths[i]))
            .collect();
        format!("| {} |", cells.join(" | "))
    };
    let rule = format!(
        "| {} |",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let mut table = vec![line(&head), rule];
    table.extend(rows.iter().map(line));
    anyhow::bail!(
        "{}: this model has an enforced contract that failed.\n\
         Please ensure the name, data_type, and number of columns in your contract match the columns in your model's definition.\n\n{}",
        n.original_file_path,
        table.join("\n")
    )
}

/// Types equal for a contract: string encodings are one type.
pub(crate) fn same_type(a: &DataType, b: &DataType) -> bool {
    let text =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    a == b || (text(a) && text(b))
}

/// A type as SQL spells it, for messages.
pub(crate) fn sql_type(t: &DataType) -> String {
    match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        other => other.to_string(),
    }
}

/// `strata source …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SourceCommand {
    /// Check how recent each source table's data is: `max(loaded_at_field)` against the
    /// source's `freshness` (`warn_after`, `error_after`); writes target/sources.json.
    #[command(
        after_help = "Examples:\n  strata source freshness\n  strata source freshness --select source:shop\n\nExit code 1 when any source is stale past `error_after` or cannot be queried."
    )]
    Freshness {
        #[command(flatten)]
        args: crate::models_cmd::ModelArgs,
    },
}

/// A freshness threshold: `{count: 12, period: hour}` in seconds.
fn threshold(v: Option<&Value>) -> Result<Option<i64>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let count = v.get("count").and_then(Value::as_i64);
    let period = v.get("period").and_then(Value::as_str);
    let (Some(count), Some(period)) = (count, period) else {
        return Ok(None);
    };
    let unit = match period {
        "minute" => 60,
        "hour" => 3_600,
        "day" => 86_400,
        other => anyhow::bail!("freshness period `{other}` is not one of minute, hour, day"),
    };
    Ok(Some(count * unit))
}

/// The most recent `loaded_at_field` of a source table and when it was read.
async fn max_loaded_at(
    session: &Session,
    n: &Node,
    field: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let filter = n
        .freshness
        .as_ref()
        .and_then(|f| f.get("filter"))
        .and_then(Value::as_str)
        .map(|f| format!(" where {f}"))
        .unwrap_or_default();
    let sql = format!(
        "select cast(cast(max({field}) as timestamp) as varchar) as max_loaded_at from {}{filter}",
        n.relation.render()
    );
    let (_, batches) = query(session, &sql).await?;
    let Some(text) = format_rows(&batches, &["max_loaded_at".to_string()])?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .filter(|t| t != "null")
    else {
        return Ok(None);
    };
    let parsed = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(&text, f).ok())
        .with_context(|| format!("`{field}` gave `{text}`, not a timestamp"))?;
    Ok(Some(parsed.and_utc()))
}

/// `strata source freshness`: PASS, WARN or ERROR STALE per source table with a
/// `loaded_at_field` and a `freshness`, in dbt's style; target/sources.json as dbt writes it.
pub(crate) async fn source_freshness(
    ctx: &crate::Ctx,
    project: Option<&std::path::Path>,
    args: &crate::models_cmd::ModelArgs,
) -> Result<()> {
    let (manifest, order) = crate::models_cmd::load(project, args)?;
    let chosen: BTreeSet<&str> = order.iter().map(String::as_str).collect();
    let sources: Vec<&Node> = manifest
        .nodes
        .values()
        .filter(|n| n.resource_type == ResourceType::Source)
        .filter(|n| !args.selects() || chosen.contains(n.unique_id.as_str()))
        .filter(|n| {
            n.loaded_at_field.is_some() && n.freshness.as_ref().is_some_and(|f| !f.is_null())
        })
        .collect();
    ctx.recorded("source freshness", "", || async {
        let quiet = ctx.quiet;
        if !quiet {
            println!("Found {} source(s)\n", sources.len());
        }
        let session = ctx.engine.session().await?;
        let started = std::time::Instant::now();
        let (mut pass, mut warn, mut errors) = (0usize, 0usize, Vec::new());
        let mut results = Vec::new();
        let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        for (i, n) in sources.iter().enumerate() {
            let start = std::time::Instant::now();
            let field = n.loaded_at_field.as_deref().unwrap_or_default();
            let freshness = n.freshness.clone().unwrap_or(Value::Null);
            let checked = async {
                let warn_after = threshold(freshness.get("warn_after"))?;
                let error_after = threshold(freshness.get("error_after"))?;
                let max = max_loaded_at(&session, n, field).await?;
                Ok::<_, anyhow::Error>((warn_after, error_after, max))
            }
            .await;
            let now = chrono::Utc::now();
            let name = format!(
                "{}.{}",
                n.source_name.as_deref().unwrap_or_default(),
                n.name
            );
            let secs = start.elapsed().as_secs_f64();
            let (word, entry) = match checked {
                Ok((warn_after, error_after, max)) => {
                    let age = max.map(|m| (now - m).num_milliseconds() as f64 / 1000.0);
                    let over = |limit: Option<i64>| {
                        limit.is_some_and(|l| age.is_none_or(|a| a > l as f64))
                    };
                    let status = if over(error_after) {
                        "error"
                    } else if over(warn_after) {
                        "warn"
                    } else {
                        "pass"
                    };
                    let entry = serde_json::json!({
                        "unique_id": n.unique_id,
                        "max_loaded_at": max.map(fmt),
                        "snapshotted_at": fmt(now),
                        "max_loaded_at_time_ago_in_s": age,
                        "status": status,
                        "criteria": {
                            "warn_after": freshness.get("warn_after"),
                            "error_after": freshness.get("error_after"),
                            "filter": freshness.get("filter"),
                        },
                        "adapter_response": {},
                        "timing": [],
                        "thread_id": "Thread-1",
                        "execution_time": secs,
                    });
                    match status {
                        "error" => {
                            let ago = age.map_or("never loaded".to_string(), |a| {
                                format!("last loaded {a:.0}s ago")
                            });
                            errors.push((name.clone(), format!("Source {name} is stale: {ago}")));
                            ("ERROR STALE", entry)
                        }
                        "warn" => {
                            warn += 1;
                            ("WARN", entry)
                        }
                        _ => {
                            pass += 1;
                            ("PASS", entry)
                        }
                    }
                }
                Err(e) => {
                    let message = crate::render_error(&e);
                    errors.push((name.clone(), message.clone()));
                    let entry = serde_json::json!({
                        "unique_id": n.unique_id,
                        "status": "runtime error",
                        "error": message,
                        "adapter_response": {},
                        "timing": [],
                        "thread_id": "Thread-1",
                        "execution_time": secs,
                    });
                    ("ERROR", entry)
                }
            };
            results.push(entry);
            if !quiet {
                let head = format!("{} of {} {word} freshness of {name} ", i + 1, sources.len());
                let dots = ".".repeat(72usize.saturating_sub(head.chars().count()).max(3));
                println!("{head}{dots} [{word} in {secs:.2}s]");
            }
        }
        let doc = serde_json::json!({
            "metadata": {
                "dbt_schema_version": "https://schemas.getdbt.com/dbt/sources/v3.json",
                "dbt_version": "1.9.0",
                "generated_at": fmt(manifest.generated_at),
                "invocation_id": manifest.invocation_id,
                "env": {},
            },
            "results": results,
            "elapsed_time": started.elapsed().as_secs_f64(),
        });
        let path = manifest.project.root.join("target").join("sources.json");
        std::fs::create_dir_all(path.parent().expect("target/ has a parent"))?;
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        if !quiet {
            println!(
                "\nFinished running {} source(s) in {:.2}s.",
                sources.len(),
                started.elapsed().as_secs_f64()
            );
            for (name, message) in &errors {
                println!("\nFailure in source {name}\n  {message}");
            }
        }
        println!(
            "\nDone. PASS={pass} WARN={warn} ERROR={} SKIP=0 TOTAL={}",
            errors.len(),
            sources.len()
        );
        anyhow::ensure!(
            errors.is_empty(),
            "{} of {} source(s) failed the freshness check",
            errors.len(),
            sources.len()
        );
        Ok(None)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_are_replaced_only_as_whole_names() {
        let sql = "select * from analytics.orders o join analytics.orders_2 p on true";
        assert_eq!(
            replace_relation(sql, "analytics.orders", "given_0"),
            "select * from given_0 o join analytics.orders_2 p on true"
        );
    }

    #[test]
    fn rows_differ_as_multisets() {
        let cols = vec!["id".to_string()];
        let a = vec![vec!["1".to_string()], vec!["2".to_string()]];
        let b = vec![vec!["2".to_string()], vec!["1".to_string()]];
        assert_eq!(diff_rows(&cols, &a, &b), None);
        let c = vec![vec!["1".to_string()], vec!["3".to_string()]];
        let (n, text) = diff_rows(&cols, &a, &c).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            text,
            "actual differs from expected:\n\n@@  | id\n    | 1\n+++ | 3\n--- | 2"
        );
    }
}
