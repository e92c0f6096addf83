//! SQLite files, opened read-only: rows streamed by a task that owns the connection and
//! hands 64 Ki-row batches over a bounded channel, so memory stays bounded whatever the
//! table's size.
//!
//! `url: sqlite:///abs/path/shop.db` (an absolute path) or `url: sqlite://data/shop.db` (a
//! path relative to the project's folder, wherever Strata runs from). A `?…` suffix is
//! ignored; the file is never created or written.
//!
//! SQLite stores each *value* with its own storage class (integer, real, text, blob), and a
//! column's declared type is only an affinity: an `INTEGER` column may hold `'abc'`. The
//! Arrow type comes from the declared type; each value is then checked against it.
//!
//! | declared type | Arrow | values read |
//! |---|---|---|
//! | `BOOLEAN`, `BOOL` | Boolean | integers 0 / 1, text `true` / `false` |
//! | `DATE` | Date32 | text `YYYY-MM-DD`; numbers as unix seconds (UTC date) |
//! | `DATETIME`, `TIMESTAMP…` | Timestamp(µs) | ISO-8601 text (`T` or space, fractions, `Z` or an offset, converted to UTC); numbers as unix seconds |
//! | `JSON` | Utf8 | text |
//! | name containing `INT` (`INTEGER`, `BIGINT`, …) | Int64 | integers; reals without a fraction |
//! | name containing `CHAR`, `CLOB`, `TEXT` | Utf8 | text; numbers as their text; UTF-8 blobs |
//! | name containing `BLOB` | Binary | blobs; text and numbers as their text's bytes |
//! | name containing `REAL`, `FLOA`, `DOUB` | Float64 | reals, integers |
//! | `NUMERIC(p, s)` / `DECIMAL(p, s)` (or `(p)`), p ≤ 38 | Decimal128(p, s) | integers, reals, numeric text; never rounded |
//! | `NUMERIC` / `DECIMAL` without precision | Utf8 | numbers as their exact text |
//! | no declared type, or another name | from the values: Int64 (only integers), Float64 (integers and reals), Binary (any blob), else Utf8 | |
//!
//! **A value that does not fit its column's type** (`'abc'` in an `INTEGER` column, `2.5`
//! in a `BOOLEAN` one, an unparseable date) is never turned into NULL: the whole row is
//! rejected through the read report, with the table, the rowid (or the record number, for
//! queries and views), the column and the value, and lands in `<destination>__rejected`
//! (or stops the stream, with `on_bad_rows: fail`).
//!
//! Streams are tables (`table: orders` or `table: main.orders`) or queries. Incremental
//! reads select `cursor >= last value` ordered by cursor and key, so rows tied at the last
//! value are re-read and merged on the key; date and timestamp cursors are compared as
//! instants (`julianday`), so text written with a `T` or a space, and unix numbers, compare
//! correctly. Types of untyped columns are inferred over the whole stream (after `filter:`),
//! not only the increment, so they stay the same from run to run.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use futures::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{
    AssertSqlSafe, Column, ConnectOptions, Connection, Executor, Row, SqlSafeStr, Statement,
    TypeInfo, ValueRef,
};
use strata_project::{SourceDef, StreamDef, SyncMode};

use crate::{BatchStream, DiscoveredStream, Error, ReadContext, RejectedRow, Result, Source};

/// Rows per Arrow batch.
const BATCH_ROWS: usize = 65_536;

/// The Arrow-side type of a SQLite column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiteType {
    Int,
    Float,
    Decimal(u8, i8),
    /// `NUMERIC` / `DECIMAL` without a precision: the exact text of each number.
    NumericText,
    Bool,
    Date,
    Timestamp,
    Text,
    Binary,
}

impl LiteType {
    fn arrow(self) -> DataType {
        match self {
            LiteType::Int => DataType::Int64,
            LiteType::Float => DataType::Float64,
            LiteType::Decimal(p, s) => DataType::Decimal128(p, s),
            LiteType::NumericText | LiteType::Text => DataType::Utf8,
            LiteType::Bool => DataType::Boolean,
            LiteType::Date => DataType::Date32,
            LiteType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            LiteType::Binary => DataType::Binary,
        }
    }

    /// From a declared type; `None` when the values decide.
    fn from_declared(decl: &str) -> Option<Self> {
        let d = decl.trim().to_ascii_uppercase();
        if d.is_empty() {
            return None;
        }
        let base = d.split('(').next().unwrap_or(&d).trim();
        Some(match base {
            "BOOLEAN" | "BOOL" => LiteType::Bool,
            "DATE" => LiteType::Date,
            "DATETIME" => LiteType::Timestamp,
            _ if base.starts_with("TIMESTAMP") => LiteType::Timestamp,
            "JSON" => LiteType::Text,
            _ if base.contains("INT") => LiteType::Int,
            _ if base.contains("CHAR") || base.contains("CLOB") || base.contains("TEXT") => {
                LiteType::Text
            }
            _ if base.contains("BLOB") => LiteType::Binary,
            _ if base.contains("REAL") || base.contains("FLOA") || base.contains("DOUB") => {
                LiteType::Float
            }
            _ if base.contains("DEC") || base.contains("NUMERIC") => match precision_scale(&d) {
                Some((p, s)) if (1..=38).contains(&p) && s <= p => {
                    LiteType::Decimal(p as u8, s as i8)
                }
                _ => LiteType::NumericText,
            },
            _ => return None,
        })
    }

    /// From the storage classes found in an untyped column.
    fn from_classes(c: Classes) -> Self {
        if c.blob {
            LiteType::Binary
        } else if c.text {
            LiteType::Text
        } else if c.real {
            LiteType::Float
        } else if c.int {
            LiteType::Int
        } else {
            LiteType::Text
        }
    }
}

/// `DECIMAL(10, 2)` → (10, 2); `DECIMAL(10)` → (10, 0).
fn precision_scale(decl: &str) -> Option<(u32, u32)> {
    let inner = decl.split_once('(')?.1.split_once(')')?.0;
    let mut parts = inner.split(',').map(|p| p.trim().parse::<u32>());
    let p = parts.next()?.ok()?;
    let s = match parts.next() {
        Some(s) => s.ok()?,
        None => 0,
    };
    parts.next().is_none().then_some((p, s))
}

/// Storage classes seen in a column.
#[derive(Debug, Clone, Copy, Default)]
struct Classes {
    int: bool,
    real: bool,
    text: bool,
    blob: bool,
}

/// A column as read: name, declared type (as written), Arrow-side type, nullability.
#[derive(Debug, Clone)]
struct LiteColumn {
    name: String,
    declared: String,
    ty: Option<LiteType>,
    nullable: bool,
    /// Position in the primary key (1-based), 0 when not part of it.
    pk: i64,
}

impl LiteColumn {
    fn field(&self) -> Field {
        Field::new(
            &self.name,
            self.ty.unwrap_or(LiteType::Text).arrow(),
            self.nullable,
        )
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A SQLite database file.
pub struct SqliteSource {
    name: String,
    path: PathBuf,
}

impl SqliteSource {
    /// From a validated definition (`url: sqlite:///abs/path.db` or `sqlite://relative.db`).
    pub fn new(def: &SourceDef) -> Result<Self> {
        let url = def.url.as_deref().ok_or_else(|| {
            Error::config(
                &def.name,
                "a sqlite source needs `url: sqlite:///absolute/path/file.db` (or `sqlite://path/relative/to/the/project.db`)",
            )
        })?;
        let mut path = parse_url(url).map_err(|m| Error::config(&def.name, &m))?;
        if path.is_relative() {
            // sources/<name>.yml → the project folder.
            if let Some(root) = def.file.parent().and_then(|p| p.parent()) {
                path = root.join(path);
            }
        }
        Ok(Self {
            name: def.name.clone(),
            path,
        })
    }

    fn connect_error(&self, message: String, retryable: bool) -> Error {
        Error::Connect {
            source_name: self.name.clone(),
            message,
            retryable,
        }
    }

    fn read_error(&self, stream: Option<&str>, message: String) -> Error {
        Error::Read {
            source_name: self.name.clone(),
            stream: stream.map(str::to_string),
            message,
        }
    }

    /// Opens the file read-only and makes sure it is a SQLite database.
    async fn connect(&self) -> Result<SqliteConnection> {
        let shown = self.path.display();
        match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.connect_error(
                    format!(
                        "the file {shown} does not exist (a relative `url:` is read from the project's folder)"
                    ),
                    false,
                ));
            }
            Err(e) => {
                return Err(self.connect_error(format!("cannot open {shown}: {e}"), false));
            }
            Ok(m) if m.is_dir() => {
                return Err(self.connect_error(
                    format!("{shown} is a directory, not a SQLite database file"),
                    false,
                ));
            }
            Ok(_) => {}
        }
        let opts = SqliteConnectOptions::new()
            .filename(&self.path)
            .read_only(true)
            .create_if_missing(false)
            .foreign_keys(false)
            .disable_statement_logging();
        let mut conn = opts
            .connect()
            .await
            .map_err(|e| self.connect_error(self.describe(&e), !is_permanent(&e)))?;
        conn.execute("SELECT count(*) FROM sqlite_schema")
            .await
            .map_err(|e| self.connect_error(self.describe(&e), !is_permanent(&e)))?;
        Ok(conn)
    }

    /// A SQLite error in plain words.
    fn describe(&self, e: &sqlx::Error) -> String {
        let shown = self.path.display();
        let text = e.to_string();
        if text.contains("not a database") {
            format!(
                "{shown} is not a SQLite database (the file exists but its header is not SQLite's)"
            )
        } else if text.contains("unable to open") {
            format!("cannot open {shown}: check that the file and its folder are readable ({text})")
        } else if text.contains("locked") || text.contains("busy") {
            format!("{shown} is locked by another process; try again ({text})")
        } else {
            format!("{shown}: {text}")
        }
    }

    /// Columns of a table or view (`None` when it does not exist).
    async fn table_columns(
        &self,
        conn: &mut SqliteConnection,
        schema: &str,
        table: &str,
    ) -> Result<Vec<LiteColumn>> {
        let rows = sqlx::query(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_xinfo(?1, ?2) WHERE hidden <> 1 ORDER BY cid",
        )
        .bind(table)
        .bind(schema)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.read_error(None, format!("reading the columns of `{table}`: {e}")))?;
        Ok(rows
            .iter()
            .map(|r| {
                let declared: String = r
                    .try_get::<Option<String>, _>(1)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                LiteColumn {
                    name: r.try_get(0).unwrap_or_default(),
                    ty: LiteType::from_declared(&declared),
                    declared,
                    nullable: r.try_get::<i64, _>(2).unwrap_or(0) == 0,
                    pk: r.try_get(3).unwrap_or(0),
                }
            })
            .collect())
    }

    /// Resolves `table`, `main.table` or `schema.table` to (schema, table, columns).
    async fn resolve_table(
        &self,
        conn: &mut SqliteConnection,
        stream: Option<&str>,
        table: &str,
    ) -> Result<(String, String, Vec<LiteColumn>)> {
        let cols = self.table_columns(conn, "main", table).await?;
        if !cols.is_empty() {
            return Ok(("main".into(), table.to_string(), cols));
        }
        if let Some((schema, name)) = table.split_once('.') {
            let cols = self.table_columns(conn, schema, name).await?;
            if !cols.is_empty() {
                return Ok((schema.to_string(), name.to_string(), cols));
            }
        }
        Err(self.read_error(
            stream,
            format!(
                "table `{table}` does not exist in {} (`strata sources discover` lists the tables)",
                self.path.display()
            ),
        ))
    }

    /// Fills in the types of untyped columns from the storage classes of their values.
    async fn infer_untyped(
        &self,
        conn: &mut SqliteConnection,
        stream: Option<&str>,
        from: &str,
        filter: Option<&str>,
        cols: &mut [LiteColumn],
    ) -> Result<()> {
        let untyped: Vec<usize> = (0..cols.len()).filter(|&i| cols[i].ty.is_none()).collect();
        if untyped.is_empty() {
            return Ok(());
        }
        let mut parts = Vec::new();
        for &i in &untyped {
            let c = quote_ident(&cols[i].name);
            for class in ["integer", "real", "text", "blob"] {
                parts.push(format!("coalesce(max(typeof({c}) = '{class}'), 0)"));
            }
        }
        let mut sql = format!("SELECT {} FROM {from}", parts.join(", "));
        if let Some(f) = filter {
            sql.push_str(&format!(" WHERE ({f})"));
        }
        let row = sqlx::query(AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                self.read_error(
                    stream,
                    format!("inferring the types of untyped columns: {e}"),
                )
            })?;
        for (n, &i) in untyped.iter().enumerate() {
            let flag = |k: usize| row.try_get::<i64, _>(n * 4 + k).unwrap_or(0) != 0;
            cols[i].ty = Some(LiteType::from_classes(Classes {
                int: flag(0),
                real: flag(1),
                text: flag(2),
                blob: flag(3),
            }));
        }
        Ok(())
    }

    /// Columns of a query: declared types of the table columns it returns, the values'
    /// storage classes for expressions.
    async fn query_columns(
        &self,
        conn: &mut SqliteConnection,
        stream: &str,
        query: &str,
    ) -> Result<Vec<LiteColumn>> {
        let stmt = conn
            .prepare(AssertSqlSafe(query.to_string()).into_sql_str())
            .await
            .map_err(|e| {
                self.read_error(Some(stream), format!("preparing the stream's query: {e}"))
            })?;
        let origins: Vec<(String, Option<(String, String)>)> = stmt
            .columns()
            .iter()
            .map(|c| {
                let origin = c
                    .origin()
                    .table_column()
                    .map(|tc| (tc.table.to_string(), tc.name.to_string()));
                (c.name().to_string(), origin)
            })
            .collect();
        drop(stmt);
        let mut cols = Vec::new();
        for (name, origin) in origins {
            if cols.iter().any(|c: &LiteColumn| c.name == name) {
                return Err(self.read_error(
                    Some(stream),
                    format!(
                        "the query returns two columns named `{name}`: give them distinct aliases"
                    ),
                ));
            }
            let mut declared = String::new();
            if let Some((table, column)) = origin {
                let (schema, table) = match table.split_once('.') {
                    Some((s, t)) => (s.to_string(), t.to_string()),
                    None => ("main".to_string(), table),
                };
                if let Some(c) = self
                    .table_columns(conn, &schema, &table)
                    .await?
                    .into_iter()
                    .find(|c| c.name == column)
                {
                    declared = c.declared;
                }
            }
            cols.push(LiteColumn {
                name,
                ty: LiteType::from_declared(&declared),
                declared,
                nullable: true,
                pk: 0,
            });
        }
        Ok(cols)
    }
}

/// `sqlite:///abs/x.db` → `/abs/x.db`; `sqlite://rel.db` and `sqlite:rel.db` → `rel.db`.
fn parse_url(url: &str) -> std::result::Result<PathBuf, String> {
    let rest = url
        .strip_prefix("sqlite:")
        .or_else(|| url.strip_prefix("sqlite3:"))
        .ok_or_else(|| {
            format!("`{url}` is not a sqlite url: write sqlite:///absolute/path/file.db")
        })?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let rest = rest.split('?').next().unwrap_or(rest);
    if rest.is_empty() || rest == ":memory:" {
        return Err(format!(
            "`{url}` names no file: write sqlite:///absolute/path/file.db"
        ));
    }
    Ok(PathBuf::from(rest))
}

fn is_permanent(e: &sqlx::Error) -> bool {
    let t = e.to_string();
    !(t.contains("locked") || t.contains("busy"))
}

#[async_trait]
impl Source for SqliteSource {
    async fn check(&self) -> Result<()> {
        let conn = self.connect().await?;
        let _ = conn.close().await;
        Ok(())
    }

    async fn discover(&self) -> Result<Vec<DiscoveredStream>> {
        let mut conn = self.connect().await?;
        let tables: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(|e| self.read_error(None, format!("listing the tables: {e}")))?;
        let mut out = Vec::new();
        for (t, kind) in tables {
            let mut cols = self.table_columns(&mut conn, "main", &t).await?;
            let from = format!("main.{}", quote_ident(&t));
            self.infer_untyped(&mut conn, None, &from, None, &mut cols)
                .await?;
            let mut pk: Vec<&LiteColumn> = cols.iter().filter(|c| c.pk > 0).collect();
            pk.sort_by_key(|c| c.pk);
            out.push(DiscoveredStream {
                table: format!("main.{t}"),
                schema: Arc::new(Schema::new(
                    cols.iter().map(LiteColumn::field).collect::<Vec<_>>(),
                )),
                source_types: cols
                    .iter()
                    .map(|c| {
                        if c.declared.is_empty() {
                            "(none)".to_string()
                        } else {
                            c.declared.clone()
                        }
                    })
                    .collect(),
                primary_key: pk.iter().map(|c| c.name.clone()).collect(),
                kind: if kind == "view" {
                    crate::TableKind::View
                } else {
                    crate::TableKind::Table
                },
                description: None,
            });
        }
        let _ = conn.close().await;
        Ok(out)
    }

    async fn read(
        &self,
        stream: &StreamDef,
        ctx: &ReadContext,
    ) -> Result<(SchemaRef, BatchStream)> {
        let mut conn = self.connect().await?;
        let read_err = |m: String| self.read_error(Some(&stream.name), m);
        // (FROM clause, columns, whether rows have a rowid, location for rejected rows)
        let (from, mut cols, has_rowid, location) = match (&stream.table, &stream.query) {
            (Some(t), _) => {
                let (schema, table, cols) =
                    self.resolve_table(&mut conn, Some(&stream.name), t).await?;
                let from = format!("{}.{}", quote_ident(&schema), quote_ident(&table));
                // Views and WITHOUT ROWID tables have no rowid.
                let has_rowid = conn
                    .prepare(
                        AssertSqlSafe(format!("SELECT rowid FROM {from} LIMIT 0")).into_sql_str(),
                    )
                    .await
                    .is_ok();
                let location = if has_rowid {
                    format!("{}: table `{table}`, rowid", self.path.display())
                } else {
                    format!("{}: table `{table}`, record", self.path.display())
                };
                (from, cols, has_rowid, location)
            }
            (None, Some(q)) => {
                let cols = self.query_columns(&mut conn, &stream.name, q).await?;
                let location = format!(
                    "{}: query of stream `{}`, record",
                    self.path.display(),
                    stream.name
                );
                (format!("({q}) AS q"), cols, false, location)
            }
            (None, None) => {
                return Err(read_err(
                    "the stream has neither `table:` nor `query:`".into(),
                ));
            }
        };
        if !stream.columns.is_empty() {
            for c in &stream.columns {
                if !cols.iter().any(|x| &x.name == c) {
                    return Err(read_err(format!(
                        "column `{c}` listed in `columns:` does not exist"
                    )));
                }
            }
            cols.retain(|c| stream.columns.contains(&c.name));
        }
        for c in &stream.exclude {
            if !cols.iter().any(|x| &x.name == c) {
                return Err(read_err(format!(
                    "column `{c}` listed in `exclude:` does not exist"
                )));
            }
        }
        cols.retain(|c| !stream.exclude.contains(&c.name));
        for needed in stream.cursor.iter().chain(&stream.primary_key) {
            if !cols.iter().any(|c| &c.name == needed) {
                return Err(read_err(format!(
                    "column `{needed}` (cursor or key) is not among the stream's columns"
                )));
            }
        }
        if cols.is_empty() {
            return Err(read_err("the stream selects no column".into()));
        }
        self.infer_untyped(
            &mut conn,
            Some(&stream.name),
            &from,
            stream.filter.as_deref(),
            &mut cols,
        )
        .await?;
        let types: Vec<LiteType> = cols
            .iter()
            .map(|c| c.ty.unwrap_or(LiteType::Text))
            .collect();
        let schema = Arc::new(Schema::new(
            cols.iter().map(LiteColumn::field).collect::<Vec<_>>(),
        ));

        // The statement.
        let mut select: Vec<String> = Vec::new();
        if has_rowid {
            select.push("rowid".into());
        }
        select.extend(cols.iter().map(|c| quote_ident(&c.name)));
        let mut sql = format!("SELECT {} FROM {from}", select.join(", "));
        let mut conditions = Vec::new();
        if let Some(f) = &stream.filter {
            conditions.push(format!("({f})"));
        }
        let mut bind: Option<Bind> = None;
        let since = match stream.mode {
            SyncMode::Incremental => ctx.since.as_deref(),
            _ => None,
        };
        if let (Some(cursor), Some(v)) = (&stream.cursor, since) {
            let ty = cols
                .iter()
                .find(|c| &c.name == cursor)
                .and_then(|c| c.ty)
                .unwrap_or(LiteType::Text);
            let (condition, b) = cursor_condition(cursor, ty, v).map_err(read_err)?;
            conditions.push(condition);
            bind = Some(b);
        }
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        if let Some(cursor) = &stream.cursor {
            let mut order = vec![quote_ident(cursor)];
            order.extend(stream.primary_key.iter().map(|k| quote_ident(k)));
            sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }

        let names: Vec<String> = cols.iter().map(|c| c.name.clone()).collect();
        let declared: Vec<String> = cols
            .iter()
            .map(|c| {
                if c.declared.is_empty() {
                    format!("{:?}", c.ty.unwrap_or(LiteType::Text)).to_ascii_uppercase()
                } else {
                    c.declared.clone()
                }
            })
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let schema_task = Arc::clone(&schema);
        let report = Arc::clone(&ctx.report);
        let source_name = self.name.clone();
        let stream_name = stream.name.clone();
        tokio::spawn(async move {
            let fail = |m: String| Error::Read {
                source_name: source_name.clone(),
                stream: Some(stream_name.clone()),
                message: m,
            };
            let mut q = sqlx::query(AssertSqlSafe(sql));
            q = match bind {
                Some(Bind::Int(i)) => q.bind(i),
                Some(Bind::Float(f)) => q.bind(f),
                Some(Bind::Text(s)) => q.bind(s),
                None => q,
            };
            let mut rows = q.fetch(&mut conn);
            let mut builders: Vec<Builder> = types.iter().map(|t| Builder::new(*t)).collect();
            let offset = usize::from(has_rowid);
            let mut in_batch = 0usize;
            let mut record = 0u64;
            let mut cells: Vec<Cell> = Vec::with_capacity(types.len());
            while let Some(row) = rows.next().await {
                let row = match row {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(fail(format!("the read failed: {e}")))).await;
                        return;
                    }
                };
                record += 1;
                cells.clear();
                let mut bad: Option<String> = None;
                for (i, ty) in types.iter().enumerate() {
                    match read_cell(&row, i + offset, *ty) {
                        Ok(c) => cells.push(c),
                        Err(m) => {
                            bad = Some(format!("column `{}` ({}): {m}", names[i], declared[i]));
                            break;
                        }
                    }
                }
                if let Some(reason) = bad {
                    let line = if has_rowid {
                        row.try_get::<i64, _>(0).ok().map(|r| r as u64)
                    } else {
                        Some(record)
                    };
                    let rejected = RejectedRow {
                        location: location.clone(),
                        line,
                        reason,
                        raw: raw_row(&row, &names, offset),
                    };
                    if let Err(m) = report.reject(rejected) {
                        let _ = tx.send(Err(fail(m))).await;
                        return;
                    }
                    continue;
                }
                for (b, c) in builders.iter_mut().zip(cells.drain(..)) {
                    b.append(c);
                }
                in_batch += 1;
                if in_batch == BATCH_ROWS {
                    in_batch = 0;
                    let b = finish(&schema_task, &mut builders).map_err(&fail);
                    if tx.send(b).await.is_err() {
                        return; // the reader went away: stop reading
                    }
                }
            }
            drop(rows);
            if in_batch > 0 {
                let _ = tx
                    .send(finish(&schema_task, &mut builders).map_err(&fail))
                    .await;
            }
            let _ = conn.close().await;
        });
        let batches =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Ok((schema, Box::pin(batches)))
    }
}

/// A value bound to the cursor condition.
enum Bind {
    Int(i64),
    Float(f64),
    Text(String),
}

/// `cursor >= ?` for the cursor's type. Dates and timestamps compare as instants, whatever
/// the text form or unix number they are stored as (a millisecond of slack: ties are
/// re-read and merged anyway).
fn cursor_condition(
    cursor: &str,
    ty: LiteType,
    since: &str,
) -> std::result::Result<(String, Bind), String> {
    let c = quote_ident(cursor);
    let bad = |what: &str| {
        format!(
            "the saved cursor `{since}` is not {what} as column `{cursor}` now is; reload with --full-refresh"
        )
    };
    Ok(match ty {
        LiteType::Int => (
            format!("{c} >= ?1"),
            Bind::Int(since.parse().map_err(|_| bad("an integer"))?),
        ),
        LiteType::Float | LiteType::Decimal(..) | LiteType::NumericText => (
            format!("{c} >= ?1"),
            Bind::Float(since.parse().map_err(|_| bad("a number"))?),
        ),
        LiteType::Text => (format!("{c} >= ?1"), Bind::Text(since.to_string())),
        LiteType::Date | LiteType::Timestamp => {
            let instant = format!(
                "(CASE WHEN typeof({c}) IN ('integer', 'real') THEN julianday({c}, 'unixepoch') ELSE julianday({c}) END)"
            );
            (
                // Values that are no date at all are read too, so that they are rejected
                // rather than silently skipped.
                format!(
                    "({instant} >= julianday(?1) - 0.00000002 OR ({c} IS NOT NULL AND {instant} IS NULL))"
                ),
                Bind::Text(since.to_string()),
            )
        }
        LiteType::Bool | LiteType::Binary => {
            return Err(format!(
                "column `{cursor}` is a {} column and cannot be a cursor: choose a number, text, date or timestamp column",
                if ty == LiteType::Bool {
                    "boolean"
                } else {
                    "blob"
                }
            ));
        }
    })
}

/// A value converted to its column's type.
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Dec(i128),
    Bool(bool),
    Date(i32),
    Ts(i64),
    Text(String),
    Bin(Vec<u8>),
}

/// A value as SQLite stored it.
enum Stored {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

fn stored(row: &SqliteRow, i: usize) -> std::result::Result<Stored, String> {
    let v = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if v.is_null() {
        return Ok(Stored::Null);
    }
    let class = v.type_info().name().to_string();
    let err = |e: sqlx::Error| e.to_string();
    Ok(match class.as_str() {
        "INTEGER" => Stored::Int(row.try_get_unchecked::<i64, _>(i).map_err(err)?),
        "REAL" => Stored::Real(row.try_get_unchecked::<f64, _>(i).map_err(err)?),
        "TEXT" => {
            let bytes = row.try_get_unchecked::<Vec<u8>, _>(i).map_err(err)?;
            match String::from_utf8(bytes) {
                Ok(s) => Stored::Text(s),
                Err(e) => Stored::Blob(e.into_bytes()),
            }
        }
        _ => Stored::Blob(row.try_get_unchecked::<Vec<u8>, _>(i).map_err(err)?),
    })
}

fn show(s: &Stored) -> String {
    match s {
        Stored::Null => "NULL".into(),
        Stored::Int(i) => format!("integer {i}"),
        Stored::Real(f) => format!("real {f:?}"),
        Stored::Text(t) => {
            let t: String = t.chars().take(60).collect();
            format!("text '{t}'")
        }
        Stored::Blob(b) => format!("a blob of {} bytes", b.len()),
    }
}

fn real_text(f: f64) -> String {
    format!("{f:?}")
}

/// Converts the value at `i` to `ty`, or says why it does not fit.
fn read_cell(row: &SqliteRow, i: usize, ty: LiteType) -> std::result::Result<Cell, String> {
    let v = stored(row, i)?;
    let misfit = |what: &str| format!("{} is not {what}", show(&v));
    Ok(match (ty, &v) {
        (_, Stored::Null) => Cell::Null,
        (LiteType::Int, Stored::Int(i)) => Cell::Int(*i),
        (LiteType::Int, Stored::Real(f))
            if f.fract() == 0.0
                && *f >= -9.223_372_036_854_776e18
                && *f < 9.223_372_036_854_776e18 =>
        {
            Cell::Int(*f as i64)
        }
        (LiteType::Int, _) => return Err(misfit("an integer")),
        (LiteType::Float, Stored::Int(i)) => Cell::Float(*i as f64),
        (LiteType::Float, Stored::Real(f)) => Cell::Float(*f),
        (LiteType::Float, _) => return Err(misfit("a number")),
        (LiteType::Decimal(p, s), Stored::Int(i)) => Cell::Dec(decimal(&i.to_string(), p, s)?),
        (LiteType::Decimal(p, s), Stored::Real(f)) => Cell::Dec(decimal(&plain_real(*f), p, s)?),
        (LiteType::Decimal(p, s), Stored::Text(t)) => {
            Cell::Dec(decimal(t.trim(), p, s).map_err(|m| format!("{}: {m}", misfit("a decimal")))?)
        }
        (LiteType::Decimal(..), _) => return Err(misfit("a decimal")),
        (LiteType::NumericText, Stored::Int(i)) => Cell::Text(i.to_string()),
        (LiteType::NumericText, Stored::Real(f)) => Cell::Text(real_text(*f)),
        (LiteType::NumericText, Stored::Text(t)) => Cell::Text(t.clone()),
        (LiteType::NumericText, _) => return Err(misfit("a number")),
        (LiteType::Bool, Stored::Int(0)) => Cell::Bool(false),
        (LiteType::Bool, Stored::Int(1)) => Cell::Bool(true),
        (LiteType::Bool, Stored::Text(t)) if t.eq_ignore_ascii_case("true") => Cell::Bool(true),
        (LiteType::Bool, Stored::Text(t)) if t.eq_ignore_ascii_case("false") => Cell::Bool(false),
        (LiteType::Bool, _) => return Err(misfit("a boolean (0, 1, true or false)")),
        (LiteType::Date, Stored::Text(t)) => Cell::Date(
            chrono::NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d")
                .map(days_since_epoch)
                .map_err(|_| misfit("a date (YYYY-MM-DD)"))?,
        ),
        (LiteType::Date, Stored::Int(_) | Stored::Real(_)) => {
            let micros = unix_micros(&v).ok_or_else(|| misfit("a date"))?;
            Cell::Date(micros.div_euclid(86_400_000_000) as i32)
        }
        (LiteType::Date, _) => return Err(misfit("a date")),
        (LiteType::Timestamp, Stored::Text(t)) => {
            Cell::Ts(parse_timestamp(t.trim()).ok_or_else(|| misfit("a date and time (ISO 8601)"))?)
        }
        (LiteType::Timestamp, Stored::Int(_) | Stored::Real(_)) => {
            Cell::Ts(unix_micros(&v).ok_or_else(|| misfit("a date and time"))?)
        }
        (LiteType::Timestamp, _) => return Err(misfit("a date and time")),
        (LiteType::Text, Stored::Text(t)) => Cell::Text(t.clone()),
        (LiteType::Text, Stored::Int(i)) => Cell::Text(i.to_string()),
        (LiteType::Text, Stored::Real(f)) => Cell::Text(real_text(*f)),
        (LiteType::Text, Stored::Blob(_)) => return Err(misfit("UTF-8 text")),
        (LiteType::Binary, Stored::Blob(b)) => Cell::Bin(b.clone()),
        (LiteType::Binary, Stored::Text(t)) => Cell::Bin(t.as_bytes().to_vec()),
        (LiteType::Binary, Stored::Int(i)) => Cell::Bin(i.to_string().into_bytes()),
        (LiteType::Binary, Stored::Real(f)) => Cell::Bin(real_text(*f).into_bytes()),
    })
}

/// A real written without an exponent, digits as Rust's shortest round-trip form.
fn plain_real(f: f64) -> String {
    let s = format!("{f}");
    if s.contains('e') || s.contains('E') {
        format!("{f:.0}")
    } else {
        s
    }
}

fn days_since_epoch(d: chrono::NaiveDate) -> i32 {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    (d - epoch).num_days() as i32
}

fn unix_micros(v: &Stored) -> Option<i64> {
    match v {
        Stored::Int(s) => s.checked_mul(1_000_000),
        Stored::Real(f) => {
            let m = (f * 1e6).round();
            (m.is_finite() && m.abs() < 9.2e18).then_some(m as i64)
        }
        _ => None,
    }
}

/// ISO 8601 as SQLite's date functions accept it: `YYYY-MM-DD[( |T)HH:MM[:SS[.fff…]]][Z|±HH:MM]`.
fn parse_timestamp(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    let s = s.replacen('T', " ", 1);
    // An explicit offset or Z after a time without seconds, or a naive value.
    let (body, offset_secs) = split_offset(&s);
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(body, f) {
            return Some(t.and_utc().timestamp_micros() - offset_secs * 1_000_000);
        }
    }
    chrono::NaiveDate::parse_from_str(body, "%Y-%m-%d")
        .ok()
        .map(|d| i64::from(days_since_epoch(d)) * 86_400_000_000 - offset_secs * 1_000_000)
}

/// Splits a trailing `Z` or `±HH:MM` off a date-time; returns the offset in seconds.
fn split_offset(s: &str) -> (&str, i64) {
    if let Some(b) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        return (b, 0);
    }
    if s.len() > 16 && s.is_char_boundary(s.len() - 6) {
        let (body, tail) = s.split_at(s.len() - 6);
        let bytes = tail.as_bytes();
        if (bytes[0] == b'+' || bytes[0] == b'-')
            && bytes[3] == b':'
            && let (Ok(h), Ok(m)) = (
                tail.get(1..3).unwrap_or("").parse::<i64>(),
                tail.get(4..6).unwrap_or("").parse::<i64>(),
            )
        {
            let sign = if bytes[0] == b'-' { -1 } else { 1 };
            return (body, sign * (h * 3600 + m * 60));
        }
    }
    (s, 0)
}

/// `-123.45` at scale 2 → -12345; more fraction digits than the scale, or more digits than
/// the precision, is an error, never a rounding.
fn decimal(s: &str, precision: u8, scale: i8) -> std::result::Result<i128, String> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("`{s}` is not a decimal number"));
    }
    let frac = frac.trim_end_matches('0');
    let scale_digits = scale.max(0) as usize;
    if frac.len() > scale_digits {
        return Err(format!("`{s}` has more than {scale} decimal digits"));
    }
    let int = int.trim_start_matches('0');
    if int.len() + scale_digits > precision as usize {
        return Err(format!(
            "`{s}` has more than {} digits before the point",
            precision as usize - scale_digits
        ));
    }
    let mut all = String::from(int);
    all.push_str(frac);
    all.push_str(&"0".repeat(scale_digits - frac.len()));
    let v: i128 = if all.is_empty() {
        0
    } else {
        all.parse()
            .map_err(|_| format!("`{s}` is not a decimal number"))?
    };
    Ok(if neg { -v } else { v })
}

/// The row as JSON text, for the rejected-rows table.
fn raw_row(row: &SqliteRow, names: &[String], offset: usize) -> String {
    let mut m = serde_json::Map::new();
    for (i, n) in names.iter().enumerate() {
        let v = match stored(row, i + offset) {
            Ok(Stored::Null) | Err(_) => serde_json::Value::Null,
            Ok(Stored::Int(i)) => i.into(),
            Ok(Stored::Real(f)) => serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| real_text(f).into()),
            Ok(Stored::Text(t)) => t.into(),
            Ok(Stored::Blob(b)) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                format!("x'{hex}'").into()
            }
        };
        m.insert(n.clone(), v);
    }
    serde_json::Value::Object(m).to_string()
}

fn finish(
    schema: &SchemaRef,
    builders: &mut [Builder],
) -> std::result::Result<RecordBatch, String> {
    let arrays: Vec<ArrayRef> = builders.iter_mut().map(Builder::finish).collect();
    RecordBatch::try_new(Arc::clone(schema), arrays).map_err(|e| e.to_string())
}

enum Builder {
    Int(Int64Builder),
    Float(Float64Builder),
    Dec(Decimal128Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Text(StringBuilder),
    Bin(BinaryBuilder),
}

impl Builder {
    fn new(t: LiteType) -> Self {
        match t {
            LiteType::Int => Builder::Int(Int64Builder::new()),
            LiteType::Float => Builder::Float(Float64Builder::new()),
            LiteType::Decimal(p, s) => {
                Builder::Dec(Decimal128Builder::new().with_data_type(DataType::Decimal128(p, s)))
            }
            LiteType::NumericText | LiteType::Text => Builder::Text(StringBuilder::new()),
            LiteType::Bool => Builder::Bool(BooleanBuilder::new()),
            LiteType::Date => Builder::Date(Date32Builder::new()),
            LiteType::Timestamp => Builder::Ts(TimestampMicrosecondBuilder::new()),
            LiteType::Binary => Builder::Bin(BinaryBuilder::new()),
        }
    }

    /// Appends a cell converted for this builder's type (see [`read_cell`]).
    fn append(&mut self, c: Cell) {
        match (self, c) {
            (Builder::Int(b), Cell::Int(v)) => b.append_value(v),
            (Builder::Float(b), Cell::Float(v)) => b.append_value(v),
            (Builder::Dec(b), Cell::Dec(v)) => b.append_value(v),
            (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Builder::Date(b), Cell::Date(v)) => b.append_value(v),
            (Builder::Ts(b), Cell::Ts(v)) => b.append_value(v),
            (Builder::Text(b), Cell::Text(v)) => b.append_value(v),
            (Builder::Bin(b), Cell::Bin(v)) => b.append_value(v),
            (b, _) => b.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Int(b) => b.append_null(),
            Builder::Float(b) => b.append_null(),
            Builder::Dec(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Ts(b) => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Bin(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Dec(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Bin(b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types() {
        use LiteType::*;
        for (decl, want) in [
            ("INTEGER", Some(Int)),
            ("bigint", Some(Int)),
            ("UNSIGNED BIG INT", Some(Int)),
            ("REAL", Some(Float)),
            ("double precision", Some(Float)),
            ("FLOAT", Some(Float)),
            ("NUMERIC(12, 2)", Some(Decimal(12, 2))),
            ("DECIMAL(10)", Some(Decimal(10, 0))),
            ("DECIMAL(50, 2)", Some(NumericText)),
            ("NUMERIC", Some(NumericText)),
            ("BOOLEAN", Some(Bool)),
            ("DATE", Some(Date)),
            ("DATETIME", Some(Timestamp)),
            ("TIMESTAMP", Some(Timestamp)),
            ("VARCHAR(20)", Some(Text)),
            ("NCHAR(3)", Some(Text)),
            ("CLOB", Some(Text)),
            ("JSON", Some(Text)),
            ("BLOB", Some(Binary)),
            ("", None),
            ("UUID", None),
        ] {
            assert_eq!(LiteType::from_declared(decl), want, "{decl}");
        }
    }

    #[test]
    fn values() {
        assert_eq!(decimal("-123.45", 12, 2).unwrap(), -12345);
        assert_eq!(decimal("7", 5, 3).unwrap(), 7000);
        assert_eq!(decimal("0.5", 3, 2).unwrap(), 50);
        assert!(decimal("1.234", 12, 2).is_err());
        assert!(decimal("123456", 6, 2).is_err());
        assert!(decimal("abc", 6, 2).is_err());
        assert_eq!(plain_real(1e21), "1000000000000000000000");
        assert_eq!(parse_timestamp("1970-01-01 00:00:01.5"), Some(1_500_000));
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(parse_timestamp("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_timestamp("1970-01-01 01:00+01:00"), Some(0));
        assert_eq!(parse_timestamp("1970-01-02"), Some(86_400_000_000));
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(
            parse_url("sqlite:///a/b.db").unwrap(),
            PathBuf::from("/a/b.db")
        );
        assert_eq!(
            parse_url("sqlite://b.db?mode=ro").unwrap(),
            PathBuf::from("b.db")
        );
        assert_eq!(parse_url("sqlite:b.db").unwrap(), PathBuf::from("b.db"));
        assert!(parse_url("sqlite::memory:").is_err());
        assert!(parse_url("postgres://x").is_err());
    }
}
