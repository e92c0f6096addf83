//! `sources/*.yml`: one file per source system, with its connection and streams.
//!
//! ```yaml
//! type: postgres
//! url: postgres://app:${env:SHOP_DB_PASSWORD}@db.internal:5432/shop
//! streams:
//!   - table: public.orders          # or `name:` + `query:`
//!     mode: incremental             # full_refresh (default) | append | incremental
//!     primary_key: [id]             # incremental with a key merges (upserts) on it
//!     cursor: updated_at
//!     destination: raw.shop_orders  # default raw.<source>_<stream>
//! ```
//!
//! A database source (`postgres`, `mysql`, `sqlite`) with `clone: true` also loads every
//! table of its `schemas:` without listing them; `clone_include:` / `clone_exclude:` narrow
//! the tables by `schema.table` patterns (`*` and `?` wildcards; a pattern without a dot
//! matches the table name in any schema). The streams are made by
//! `strata_sources::clone::expand_clone` when the source is reached; a stream declared here
//! for one of the tables replaces the cloned one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;
use strata_types::{Redactor, TableName};

use crate::{Error, Result};

/// How a stream's rows replace or add to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Replace the table atomically with the source's current rows.
    FullRefresh,
    /// Add every row read; no state.
    Append,
    /// Read rows whose cursor is at or past the last one loaded; merged on the primary
    /// key when there is one, appended (ties de-duplicated) otherwise.
    Incremental,
}

/// What to do when the source's columns change incompatibly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SchemaChangePolicy {
    /// Add new columns, keep removed ones (NULL from now on), widen safe types.
    #[default]
    Evolve,
    /// Stop the stream before anything is written.
    Fail,
    /// Write the batch to `<destination>__quarantine` instead and report it.
    Quarantine,
}

/// What to do with rows a connector cannot read (a CSV line with too many fields, a
/// value that does not parse as its column's type, a JSON line that is not JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BadRowsPolicy {
    /// Load the good rows; keep each bad one, with its file, line and reason, in
    /// `<destination>__rejected`.
    #[default]
    Reject,
    /// Stop the stream before anything is committed.
    Fail,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default)]
    url: Option<Spanned<String>>,
    #[serde(default)]
    schemas: Vec<String>,
    #[serde(default)]
    clone: Option<Spanned<bool>>,
    #[serde(default)]
    clone_include: Vec<Spanned<String>>,
    #[serde(default)]
    clone_exclude: Vec<Spanned<String>>,
    #[serde(default)]
    destination_namespace: Option<Spanned<String>>,
    #[serde(default)]
    options: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    streams: Vec<StreamFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamFile {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    table: Option<Spanned<String>>,
    #[serde(default)]
    query: Option<Spanned<String>>,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    destination: Option<Spanned<String>>,
    #[serde(default)]
    mode: Option<Spanned<SyncMode>>,
    #[serde(default)]
    primary_key: Vec<String>,
    #[serde(default)]
    cursor: Option<Spanned<String>>,
    #[serde(default)]
    deleted_flag: Option<String>,
    #[serde(default)]
    partition_by: Vec<String>,
    #[serde(default)]
    on_schema_change: SchemaChangePolicy,
    #[serde(default)]
    on_bad_rows: BadRowsPolicy,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    options: BTreeMap<String, Spanned<String>>,
}

/// A validated source definition.
#[derive(Debug, Clone)]
pub struct SourceDef {
    /// The file's stem: `sources/shop.yml` → `shop`.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// `postgres`, `mysql`, `sqlite`, `files`, `rest`, `redis`.
    pub kind: String,
    /// Connection URL with secrets resolved.
    pub url: Option<String>,
    /// Schemas to discover or clone (databases with schemas).
    pub schemas: Vec<String>,
    /// Copy every table of `schemas`.
    pub clone: bool,
    /// With `clone`: only tables matching one of these `schema.table` patterns (empty: all).
    pub clone_include: Vec<String>,
    /// With `clone`: skip tables matching one of these `schema.table` patterns.
    pub clone_exclude: Vec<String>,
    /// Namespace streams land in (`raw` by default).
    pub namespace: String,
    /// Connector-specific options, secrets resolved.
    pub options: BTreeMap<String, String>,
    /// Declared streams.
    pub streams: Vec<StreamDef>,
}

/// A validated stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDef {
    /// The stream's name (unique within its source).
    pub name: String,
    /// Source table (`schema.table` or `table`), when not a query.
    pub table: Option<String>,
    /// Source query, when not a table.
    pub query: Option<String>,
    /// Only these columns (empty: all).
    pub columns: Vec<String>,
    /// All but these columns.
    pub exclude: Vec<String>,
    /// Row filter (SQL of the source's dialect).
    pub filter: Option<String>,
    /// Where it lands.
    pub destination: TableName,
    /// Sync mode.
    pub mode: SyncMode,
    /// Primary key columns.
    pub primary_key: Vec<String>,
    /// Cursor column for incremental reads.
    pub cursor: Option<String>,
    /// Column that marks a row as deleted at the source (soft deletes).
    pub deleted_flag: Option<String>,
    /// Partition columns of the destination.
    pub partition_by: Vec<String>,
    /// Incompatible schema changes.
    pub on_schema_change: SchemaChangePolicy,
    /// Rows the connector cannot read.
    pub on_bad_rows: BadRowsPolicy,
    /// Description of the destination table when the stream creates it (a cloned table's
    /// comment at the source, or `description:` in the file).
    pub description: Option<String>,
    /// Made by `clone: true` rather than declared in the file.
    pub cloned: bool,
    /// Connector-specific options of this stream (a file glob, a REST path, …), secrets
    /// resolved.
    pub options: BTreeMap<String, String>,
}

/// Connector kinds this build knows.
pub const SOURCE_KINDS: &[&str] = &["postgres", "mysql", "sqlite", "files", "rest", "redis"];

/// Loads every `sources/*.yml` of the project, sorted by name.
pub fn load_sources(root: &Path, redactor: &Redactor) -> Result<Vec<SourceDef>> {
    let dir = root.join("sources");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
        .collect();
    files.sort();
    files.iter().map(|f| load_source(f, redactor)).collect()
}

fn invalid(path: &Path, at: Option<&serde_saphyr::Location>, message: impl Into<String>) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        line: at.map(|l| l.line()).unwrap_or(0),
        column: at.map(|l| l.column()).unwrap_or(0),
        message: message.into(),
    }
}

/// Loads one source file.
pub fn load_source(path: &Path, redactor: &Redactor) -> Result<SourceDef> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: SourceFile =
        serde_saphyr::from_str(&text).map_err(|e| crate::config::syntax_error(path, e))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    strata_types::validate_identifier(&name).map_err(|e| {
        invalid(
            path,
            None,
            format!("the file name makes the source's name: {e}"),
        )
    })?;
    if !SOURCE_KINDS.contains(&file.kind.value.as_str()) {
        return Err(invalid(
            path,
            Some(&file.kind.referenced),
            format!(
                "unknown source type `{}`; expected one of: {}",
                file.kind.value,
                SOURCE_KINDS.join(", ")
            ),
        ));
    }
    let interpolate = |s: &Spanned<String>| crate::config::interpolate_value(path, s, redactor);
    let url = file.url.as_ref().map(interpolate).transpose()?;
    let namespace = match &file.destination_namespace {
        Some(ns) => {
            strata_types::validate_identifier(&ns.value)
                .map_err(|e| invalid(path, Some(&ns.referenced), e.to_string()))?;
            ns.value.clone()
        }
        None => "raw".to_string(),
    };
    let options = file
        .options
        .iter()
        .map(|(k, v)| Ok((k.clone(), interpolate(v)?)))
        .collect::<Result<_>>()?;
    let mut streams: Vec<StreamDef> = Vec::new();
    for s in file.streams {
        let at = s
            .name
            .as_ref()
            .or(s.table.as_ref())
            .or(s.query.as_ref())
            .map(|x| x.referenced);
        let stream_name = match (&s.name, &s.table) {
            (Some(n), _) => n.value.clone(),
            (None, Some(t)) => t
                .value
                .rsplit('.')
                .next()
                .unwrap_or(&t.value)
                .to_ascii_lowercase(),
            (None, None) => {
                return Err(invalid(
                    path,
                    at.as_ref(),
                    "a stream needs `table:` or `name:` with `query:`",
                ));
            }
        };
        strata_types::validate_identifier(&stream_name)
            .map_err(|e| invalid(path, at.as_ref(), format!("stream name: {e}")))?;
        if streams.iter().any(|o| o.name == stream_name) {
            return Err(invalid(
                path,
                at.as_ref(),
                format!("stream `{stream_name}` is declared twice"),
            ));
        }
        // Files and Redis streams track their own position (files loaded, last entry id);
        // databases and APIs need a cursor column, and a key to merge rows tied at it.
        let own_state = matches!(file.kind.value.as_str(), "files" | "redis");
        let needs_table_or_query =
            matches!(file.kind.value.as_str(), "postgres" | "mysql" | "sqlite");
        if needs_table_or_query && s.table.is_some() == s.query.is_some() {
            return Err(invalid(
                path,
                at.as_ref(),
                format!("stream `{stream_name}`: give exactly one of `table:` and `query:`"),
            ));
        }
        let destination = match &s.destination {
            Some(d) => d
                .value
                .parse::<TableName>()
                .map_err(|e| invalid(path, Some(&d.referenced), format!("destination: {e}")))?,
            None => TableName::new(&namespace, &format!("{name}_{stream_name}"))
                .map_err(|e| invalid(path, at.as_ref(), format!("destination: {e}")))?,
        };
        let mode = s
            .mode
            .as_ref()
            .map(|m| m.value)
            .unwrap_or(SyncMode::FullRefresh);
        if mode == SyncMode::Incremental && s.cursor.is_none() && !own_state {
            let loc = s.mode.as_ref().map(|m| m.referenced).or(at);
            return Err(invalid(
                path,
                loc.as_ref(),
                format!(
                    "stream `{stream_name}`: incremental mode needs `cursor:` (a column that grows with every change, like `updated_at` or an id)"
                ),
            ));
        }
        if !s.columns.is_empty() && !s.exclude.is_empty() {
            return Err(invalid(
                path,
                at.as_ref(),
                format!("stream `{stream_name}`: use `columns:` or `exclude:`, not both"),
            ));
        }
        let stream_options = s
            .options
            .iter()
            .map(|(k, v)| Ok((k.clone(), interpolate(v)?)))
            .collect::<Result<_>>()?;
        streams.push(StreamDef {
            name: stream_name,
            table: s.table.map(|t| t.value),
            query: s.query.map(|q| q.value),
            columns: s.columns,
            exclude: s.exclude,
            filter: s.filter,
            destination,
            mode,
            primary_key: s.primary_key,
            cursor: s.cursor.map(|c| c.value),
            deleted_flag: s.deleted_flag,
            partition_by: s.partition_by,
            on_schema_change: s.on_schema_change,
            on_bad_rows: s.on_bad_rows,
            description: s.description,
            cloned: false,
            options: stream_options,
        });
    }
    let clone = file.clone.as_ref().is_some_and(|c| c.value);
    if let Some(c) = file.clone.as_ref().filter(|c| c.value)
        && !matches!(file.kind.value.as_str(), "postgres" | "mysql" | "sqlite")
    {
        return Err(invalid(
            path,
            Some(&c.referenced),
            format!(
                "`clone: true` copies the tables of a database (postgres, mysql, sqlite); a `{}` source lists its streams instead",
                file.kind.value
            ),
        ));
    }
    let patterns = |list: &[Spanned<String>], key: &str| -> Result<Vec<String>> {
        let mut out = Vec::new();
        for p in list {
            if !clone {
                return Err(invalid(
                    path,
                    Some(&p.referenced),
                    format!("`{key}:` only applies with `clone: true`"),
                ));
            }
            let v = p.value.trim();
            if v.is_empty() || v.split('.').count() > 2 || v.split('.').any(str::is_empty) {
                return Err(invalid(
                    path,
                    Some(&p.referenced),
                    format!(
                        "`{key}:` pattern `{}` should be `schema.table` or `table`, with `*` and `?` as wildcards (like `public.audit_*`)",
                        p.value
                    ),
                ));
            }
            out.push(v.to_string());
        }
        Ok(out)
    };
    let clone_include = patterns(&file.clone_include, "clone_include")?;
    let clone_exclude = patterns(&file.clone_exclude, "clone_exclude")?;
    Ok(SourceDef {
        name,
        file: path.to_path_buf(),
        kind: file.kind.value,
        url,
        schemas: file.schemas,
        clone,
        clone_include,
        clone_exclude,
        namespace,
        options,
        streams,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<SourceDef> {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("shop.yml");
        std::fs::write(&p, text).unwrap();
        load_source(&p, &Redactor::new())
    }

    #[test]
    fn streams_get_defaults() {
        let s = load(
            "type: postgres\nurl: postgres://u@h/db\nstreams:\n  - table: public.Orders\n  - name: big\n    query: select 1\n    mode: incremental\n    cursor: id\n    primary_key: [id]\n    destination: staging.big\n",
        )
        .unwrap();
        assert_eq!(s.name, "shop");
        assert_eq!(s.streams[0].name, "orders");
        assert_eq!(s.streams[0].destination.to_string(), "raw.shop_orders");
        assert_eq!(s.streams[0].mode, SyncMode::FullRefresh);
        assert_eq!(s.streams[1].destination.to_string(), "staging.big");
        assert_eq!(s.streams[1].mode, SyncMode::Incremental);
    }

    #[test]
    fn errors_point_into_the_file() {
        let e = load("type: postgress\n").unwrap_err().to_string();
        assert!(
            e.contains("shop.yml:1:7") && e.contains("unknown source type `postgress`"),
            "{e}"
        );
        let e = load("type: postgres\nstreams:\n  - table: t\n    mode: incremental\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shop.yml:4:11") && e.contains("needs `cursor:`"),
            "{e}"
        );
        let e = load("type: postgres\nstreams:\n  - table: t\n    mode: sometimes\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shop.yml:4:"), "{e}");
        let e = load("type: postgres\nstreams:\n  - table: t\n    primary_keys: [id]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shop.yml:4:5") && e.contains("primary_keys"),
            "{e}"
        );
        let e = load("type: postgres\nstreams:\n  - table: t\n  - table: other.t\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("declared twice"), "{e}");
    }

    #[test]
    fn clone_settings_are_checked() {
        let s = load(
            "type: postgres\nurl: postgres://u@h/db\nschemas: [public]\nclone: true\nclone_include: [\"public.*\"]\nclone_exclude: [audit_*, \" public.tmp \"]\nstreams:\n  - table: public.orders\n    description: Every order\n",
        )
        .unwrap();
        assert!(s.clone);
        assert_eq!(s.clone_include, ["public.*"]);
        assert_eq!(s.clone_exclude, ["audit_*", "public.tmp"]);
        assert_eq!(s.streams[0].description.as_deref(), Some("Every order"));
        assert!(!s.streams[0].cloned);
        let s = load("type: postgres\nclone: false\n").unwrap();
        assert!(!s.clone);

        let e = load("type: files\nurl: landing\nclone: true\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shop.yml:3:8") && e.contains("a `files` source lists its streams"),
            "{e}"
        );
        let e = load("type: postgres\nclone_exclude: [public.tmp]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shop.yml:2:17") && e.contains("only applies with `clone: true`"),
            "{e}"
        );
        let e = load("type: postgres\nclone: true\nclone_include: [a.b.c]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shop.yml:3:17") && e.contains("`schema.table` or `table`"),
            "{e}"
        );
        let e = load("type: postgres\nclone: yes please\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shop.yml:2:"), "{e}");
    }
}
