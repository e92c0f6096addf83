//! `clone: true`: every table of a database source's schemas becomes a stream, so a whole
//! database is copied into the lake without listing its tables, and later runs keep the
//! copy current.
//!
//! ```yaml
//! # sources/shop.yml
//! type: postgres                 # or mysql (MySQL, MariaDB), sqlite
//! url: postgres://app:${env:SHOP_DB_PASSWORD}@db.internal:5432/shop
//! schemas: [public]              # default: public (PostgreSQL), the url's database
//!                                # (MySQL), main (SQLite)
//! clone: true
//! clone_exclude: [public.audit_*, "*.tmp_*"]   # `schema.table` or `table`, `*` and `?`
//! clone_include: []              # when given, only the tables matching one of these
//! streams:                       # optional: a table declared here replaces its clone
//!   - table: public.events
//!     mode: incremental
//!     cursor: id
//!     primary_key: [id]
//! ```
//!
//! [`expand_clone`] discovers the tables when the source is reached (every `strata ingest`
//! and `strata sources list`), so a table created at the source is picked up by the next
//! run. Only tables are cloned: views, materialized views, foreign tables and the partitions
//! of a partitioned table (whose rows are read through the parent) are left out; declare a
//! view as a stream to load it.
//!
//! **Names.** Table `orders` lands as stream `orders` in `raw.shop_orders` (the source's
//! `destination_namespace`, then `<source>_<table>`) when at most one schema is listed in
//! `schemas:`; with several, the schema is part of the name: stream `sales_orders` in
//! `raw.shop_sales_orders`. Names are lowercased and every character other than `a-z`,
//! `0-9` and `_` becomes `_` (`Order Lines` → `order_lines`). Two tables that would share a
//! name, a name that a declared stream already uses, or a name longer than 63 characters
//! stop the run with the tables named; exclude one, or declare it as a stream with a
//! `name:` of its own.
//!
//! **How each table is kept current.**
//! - A primary key and a change timestamp (a timestamp column named `updated_at`,
//!   `modified_at`, `last_modified`, `updated`, `last_update`, … see [`change_cursor`]):
//!   `incremental` on that cursor, merged on the key. Rows changed since the last run are
//!   read and upserted. Rows deleted at the source stay in the lake until a
//!   `--full-refresh`, and a row whose timestamp is NULL is only read by a full load.
//! - Anything else: `full_refresh`, the table replaced atomically by its current rows at
//!   each run. A key alone is not used as a cursor: reading only ids past the last one would
//!   miss every update to an older row. For an append-only table (an event log, where rows
//!   are never updated), declare the stream with `mode: incremental`, `cursor: id`.
//!
//! Columns keep their comments at the source (PostgreSQL and MySQL/MariaDB column comments)
//! as the `comment` metadata of the destination's fields, and a table's comment becomes the
//! description of the table it creates; both show in `strata describe`.

use std::collections::BTreeMap;

use arrow::datatypes::DataType;
use strata_project::{BadRowsPolicy, SchemaChangePolicy, SourceDef, StreamDef, SyncMode};
use strata_types::TableName;

use crate::{DiscoveredStream, Error, Result, Source, TableKind};

/// Column names taken as a row's last change, in order of preference, compared after
/// lowercasing and removing `_`.
pub const CHANGE_CURSOR_NAMES: &[&str] = &[
    "updated_at",
    "modified_at",
    "last_modified",
    "last_modified_at",
    "last_updated",
    "last_updated_at",
    "last_update",
    "updated_on",
    "modified_on",
    "update_time",
    "updated_time",
    "modify_time",
    "modification_time",
    "changed_at",
    "last_changed",
    "date_modified",
    "date_updated",
    "updated",
    "modified",
];

/// The column of `table` that records each row's last change: a timestamp column named
/// like one of [`CHANGE_CURSOR_NAMES`] (`updatedAt` and `UPDATED_AT` count too).
pub fn change_cursor(table: &DiscoveredStream) -> Option<String> {
    let squash = |s: &str| s.to_ascii_lowercase().replace('_', "");
    CHANGE_CURSOR_NAMES.iter().find_map(|want| {
        let want = squash(want);
        table
            .schema
            .fields()
            .iter()
            .find(|f| {
                squash(f.name()) == want && matches!(f.data_type(), DataType::Timestamp(_, _))
            })
            .map(|f| f.name().clone())
    })
}

/// With `clone: true`, a copy of `def` whose streams are its declared ones followed by one
/// stream per table the source offers (see the module docs for names and modes); without,
/// `def` unchanged. Connects to the source to discover its tables.
pub async fn expand_clone(def: &SourceDef, source: &dyn Source) -> Result<SourceDef> {
    if !def.clone {
        return Ok(def.clone());
    }
    let found = source.discover().await?;
    let mut out = def.clone();
    out.streams.extend(clone_streams(def, &found)?);
    Ok(out)
}

/// The streams `clone: true` adds for the `found` tables: every table not excluded by
/// `clone_include` / `clone_exclude` and not already declared as a stream.
pub fn clone_streams(def: &SourceDef, found: &[DiscoveredStream]) -> Result<Vec<StreamDef>> {
    let fail = |message: String| Error::config(&def.name, &message);
    // Where an unqualified `table:` of a declared stream is read from.
    let default_schema: Option<&str> = match def.kind.as_str() {
        "postgres" => Some("public"),
        "sqlite" => Some("main"),
        _ => def.schemas.first().map(String::as_str),
    };
    let declared = |schema: &str, table: &str| {
        def.streams.iter().any(|s| match s.table.as_deref() {
            Some(t) => match t.split_once('.') {
                Some((s, t)) => s == schema && t == table,
                None => t == table && default_schema.is_none_or(|d| d == schema),
            },
            None => false,
        })
    };
    let with_schema = def.schemas.len() > 1;
    let mut tables: Vec<&DiscoveredStream> = found
        .iter()
        .filter(|d| d.kind == TableKind::Table)
        .collect();
    tables.sort_by(|a, b| a.table.cmp(&b.table));
    let mut taken: BTreeMap<String, String> = def
        .streams
        .iter()
        .map(|s| {
            let what = match (&s.table, &s.query) {
                (Some(t), _) => format!("the declared stream for table `{t}`"),
                _ => format!("the declared stream `{}`", s.name),
            };
            (s.name.clone(), what)
        })
        .collect();
    let mut out = Vec::new();
    for d in tables {
        let (schema, table) = d.table.split_once('.').unwrap_or(("", d.table.as_str()));
        let selected = (def.clone_include.is_empty()
            || def.clone_include.iter().any(|p| matches(p, schema, table)))
            && !def.clone_exclude.iter().any(|p| matches(p, schema, table));
        if !selected || declared(schema, table) {
            continue;
        }
        let name = if with_schema {
            format!("{}_{}", normalize(schema), normalize(table))
        } else {
            normalize(table)
        };
        let fix = format!(
            "exclude it with `clone_exclude: [{}]`, or declare it as a stream with a name of its own (`- name: …` and `table: {}`)",
            d.table, d.table
        );
        if let Some(other) = taken.get(&name) {
            return Err(fail(format!(
                "table `{}` would be cloned as stream `{name}`, a name {other} already has; {fix}",
                d.table
            )));
        }
        let destination = strata_types::validate_identifier(&name)
            .and_then(|()| TableName::new(&def.namespace, &format!("{}_{name}", def.name)))
            .map_err(|_| {
                fail(format!(
                    "table `{}` would be cloned as `{}.{}_{name}`, longer than the 63 characters a table name may have; {fix}",
                    d.table, def.namespace, def.name
                ))
            })?;
        if let Some(s) = def.streams.iter().find(|s| s.destination == destination) {
            return Err(fail(format!(
                "table `{}` would be cloned into `{destination}`, where the declared stream `{}` already loads; {fix}",
                d.table, s.name
            )));
        }
        taken.insert(name.clone(), format!("table `{}`", d.table));
        let cursor = change_cursor(d).filter(|_| !d.primary_key.is_empty());
        out.push(StreamDef {
            name,
            table: Some(d.table.clone()),
            query: None,
            columns: Vec::new(),
            exclude: Vec::new(),
            filter: None,
            destination,
            mode: if cursor.is_some() {
                SyncMode::Incremental
            } else {
                SyncMode::FullRefresh
            },
            primary_key: d.primary_key.clone(),
            cursor,
            deleted_flag: None,
            partition_by: Vec::new(),
            on_schema_change: SchemaChangePolicy::Evolve,
            on_bad_rows: BadRowsPolicy::Reject,
            description: d.description.clone(),
            cloned: true,
            options: BTreeMap::new(),
        });
    }
    for p in def.clone_include.iter() {
        let hit = found.iter().any(|d| {
            let (s, t) = d.table.split_once('.').unwrap_or(("", d.table.as_str()));
            d.kind == TableKind::Table && matches(p, s, t)
        });
        if !hit {
            tracing::warn!(source = %def.name, pattern = %p, "`clone_include` pattern matches no table.");
        }
    }
    Ok(out)
}

/// A lowercase identifier: characters other than `a-z`, `0-9`, `_` become `_`, and a
/// leading digit gets a `_` before it.
fn normalize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// Whether `pattern` (`schema.table` or `table`, `*` and `?` wildcards, case-insensitive)
/// matches the table.
fn matches(pattern: &str, schema: &str, table: &str) -> bool {
    match pattern.split_once('.') {
        Some((ps, pt)) => glob(ps, schema) && glob(pt, table),
        None => glob(pattern, table),
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative matcher with backtracking to the last `*`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn table(name: &str, cols: &[(&str, DataType)], pk: &[&str]) -> DiscoveredStream {
        DiscoveredStream {
            table: name.to_string(),
            schema: Arc::new(Schema::new(
                cols.iter()
                    .map(|(n, t)| Field::new(*n, t.clone(), true))
                    .collect::<Vec<_>>(),
            )),
            source_types: vec![String::new(); cols.len()],
            primary_key: pk.iter().map(|s| s.to_string()).collect(),
            kind: TableKind::Table,
            description: None,
        }
    }

    fn source(yml: &str) -> SourceDef {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("shop.yml");
        std::fs::write(&p, yml).unwrap();
        strata_project::load_source(&p, &strata_project::Redactor::new()).unwrap()
    }

    fn ts() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    }

    #[test]
    fn modes_follow_keys_and_change_timestamps() {
        let def = source("type: postgres\nclone: true\n");
        let found = vec![
            table(
                "public.Orders",
                &[("id", DataType::Int64), ("UpdatedAt", ts())],
                &["id"],
            ),
            table(
                "public.customers",
                &[("id", DataType::Int64), ("updated_at", DataType::Utf8)],
                &["id"],
            ),
            table("public.log", &[("at", ts()), ("updated_at", ts())], &[]),
            DiscoveredStream {
                kind: TableKind::View,
                ..table("public.v_orders", &[("id", DataType::Int64)], &[])
            },
            DiscoveredStream {
                kind: TableKind::Partition,
                ..table("public.orders_2024", &[("id", DataType::Int64)], &[])
            },
        ];
        let streams = clone_streams(&def, &found).unwrap();
        let got: Vec<_> = streams
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.destination.to_string(),
                    s.mode,
                    s.cursor.as_deref(),
                    s.primary_key.join(","),
                    s.cloned,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "orders",
                    "raw.shop_orders".to_string(),
                    SyncMode::Incremental,
                    Some("UpdatedAt"),
                    "id".to_string(),
                    true
                ),
                (
                    "customers",
                    "raw.shop_customers".to_string(),
                    SyncMode::FullRefresh,
                    None,
                    "id".to_string(),
                    true
                ),
                (
                    "log",
                    "raw.shop_log".to_string(),
                    SyncMode::FullRefresh,
                    None,
                    String::new(),
                    true
                ),
            ]
        );
        assert_eq!(streams[0].table.as_deref(), Some("public.Orders"));
    }

    #[test]
    fn names_schemas_patterns_and_declared_streams() {
        let found = vec![
            table("sales.orders", &[("id", DataType::Int64)], &["id"]),
            table("sales.audit_log", &[("id", DataType::Int64)], &[]),
            table("hr.Order Lines", &[("id", DataType::Int64)], &[]),
            table("hr.2024", &[("id", DataType::Int64)], &[]),
            table("hr.people", &[("id", DataType::Int64)], &[]),
        ];
        let def = source(
            "type: postgres\nschemas: [sales, hr]\nclone: true\nclone_exclude: [\"*.audit_*\", HR.peo?le]\ndestination_namespace: lake\nstreams:\n  - table: sales.orders\n    mode: append\n",
        );
        let streams = clone_streams(&def, &found).unwrap();
        let names: Vec<_> = streams
            .iter()
            .map(|s| (s.name.as_str(), s.destination.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("hr__2024", "lake.shop_hr__2024".to_string()),
                ("hr_order_lines", "lake.shop_hr_order_lines".to_string())
            ]
        );
        let def = source(
            "type: postgres\nschemas: [sales, hr]\nclone: true\nclone_include: [hr.*, orders]\n",
        );
        let names: Vec<_> = clone_streams(&def, &found)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            ["hr__2024", "hr_order_lines", "hr_people", "sales_orders"]
        );
    }

    #[test]
    fn name_clashes_are_explained() {
        let def = source("type: mysql\nclone: true\n");
        let found = vec![
            table("app.Orders", &[("id", DataType::Int64)], &[]),
            table("app.orders", &[("id", DataType::Int64)], &[]),
        ];
        let e = clone_streams(&def, &found).unwrap_err().to_string();
        assert!(
            e.contains("source `shop`: table `app.orders` would be cloned as stream `orders`, a name table `app.Orders` already has")
                && e.contains("clone_exclude: [app.orders]"),
            "{e}"
        );
        let def = source(
            "type: mysql\nclone: true\nstreams:\n  - name: orders\n    query: select 1 as id\n",
        );
        let e = clone_streams(&def, &found[..1]).unwrap_err().to_string();
        assert!(e.contains("the declared stream `orders`"), "{e}");
        let long = format!("app.{}", "x".repeat(60));
        let e = clone_streams(&def, &[table(&long, &[("id", DataType::Int64)], &[])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than the 63 characters"), "{e}");
        // An unqualified declared table stands for the default schema's one.
        let def =
            source("type: sqlite\nurl: sqlite:///x.db\nclone: true\nstreams:\n  - table: orders\n");
        assert!(
            clone_streams(
                &def,
                &[table("main.orders", &[("id", DataType::Int64)], &[])]
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn globs() {
        assert!(glob("audit_*", "AUDIT_2024"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("t?p", "tmp"));
        assert!(!glob("tmp", "tmp2"));
        assert!(matches("public.*", "public", "x"));
        assert!(!matches("public.*", "sales", "x"));
        assert!(matches("x", "sales", "x"));
    }

    #[test]
    fn timestamps_only_make_change_cursors() {
        let t = table(
            "s.t",
            &[
                ("modified", ts()),
                ("updated_at", DataType::Date32),
                ("last_update", ts()),
            ],
            &["id"],
        );
        assert_eq!(change_cursor(&t).as_deref(), Some("last_update"));
    }
}
