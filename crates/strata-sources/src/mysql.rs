//! MySQL and MariaDB: rows streamed with the text protocol (`query_iter`), parsed into Arrow
//! by the column's declared type; the connection runs in its own task and hands batches
//! over a bounded channel, so memory stays bounded whatever the table's size.
//!
//! | MySQL / MariaDB | Arrow |
//! |---|---|
//! | `tinyint(1)` / `bool` | Boolean |
//! | `tinyint`, `smallint`, `mediumint`, `int`, `bigint` | Int8, Int16, Int32, Int32, Int64 (unsigned: the next wider; `bigint unsigned`: Decimal128(20, 0)) |
//! | `float`, `double` | Float32, Float64 |
//! | `decimal(p, s)`, p ≤ 38 | Decimal128(p, s) (wider: Utf8, exact digits) |
//! | `char`, `varchar`, `text` family, `enum`, `set`, `json`, `time` | Utf8 |
//! | `binary`, `varbinary`, `blob` family, `geometry` (WKB) | Binary |
//! | `date` | Date32 |
//! | `datetime` | Timestamp(µs) |
//! | `timestamp` | Timestamp(µs, UTC) (the session runs in UTC) |
//! | `year` | Int16 |
//! | `bit(n)` | Int64 |
//!
//! Zero dates (`0000-00-00`), MySQL's "no date" sentinel, are read as NULL.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row, Value};
use strata_project::{SourceDef, StreamDef};

use crate::{BatchStream, DiscoveredStream, Error, Result, Source};

/// The Arrow-side type of a MySQL column.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MyType {
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt64,
    Float32,
    Float64,
    Decimal(u8, i8),
    Text,
    Binary,
    Date,
    DateTime,
    Timestamp,
    Bit,
}

impl MyType {
    fn arrow(&self) -> DataType {
        match self {
            MyType::Bool => DataType::Boolean,
            MyType::Int8 => DataType::Int8,
            MyType::Int16 => DataType::Int16,
            MyType::Int32 => DataType::Int32,
            MyType::Int64 | MyType::Bit => DataType::Int64,
            MyType::UInt64 => DataType::Decimal128(20, 0),
            MyType::Float32 => DataType::Float32,
            MyType::Float64 => DataType::Float64,
            MyType::Decimal(p, s) => DataType::Decimal128(*p, *s),
            MyType::Text => DataType::Utf8,
            MyType::Binary => DataType::Binary,
            MyType::Date => DataType::Date32,
            MyType::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            MyType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// From `information_schema.columns` (`DATA_TYPE`, `COLUMN_TYPE`).
    fn from_catalog(
        data_type: &str,
        column_type: &str,
        precision: Option<u64>,
        scale: Option<u64>,
    ) -> Self {
        let unsigned = column_type.contains("unsigned");
        match data_type {
            "tinyint" if column_type.starts_with("tinyint(1)") && !unsigned => MyType::Bool,
            "bool" | "boolean" => MyType::Bool,
            "tinyint" => {
                if unsigned {
                    MyType::Int16
                } else {
                    MyType::Int8
                }
            }
            "smallint" => {
                if unsigned {
                    MyType::Int32
                } else {
                    MyType::Int16
                }
            }
            "mediumint" => MyType::Int32,
            "int" | "integer" => {
                if unsigned {
                    MyType::Int64
                } else {
                    MyType::Int32
                }
            }
            "bigint" => {
                if unsigned {
                    MyType::UInt64
                } else {
                    MyType::Int64
                }
            }
            "float" => MyType::Float32,
            "double" | "real" => MyType::Float64,
            "decimal" | "numeric" => match (precision, scale) {
                (Some(p), Some(s)) if p <= 38 => MyType::Decimal(p as u8, s as i8),
                _ => MyType::Text,
            },
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
            | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
            | "multilinestring" | "multipolygon" | "geometrycollection" => MyType::Binary,
            "date" => MyType::Date,
            "datetime" => MyType::DateTime,
            "timestamp" => MyType::Timestamp,
            "year" => MyType::Int16,
            "bit" => MyType::Bit,
            _ => MyType::Text,
        }
    }

    /// From a result column (query streams).
    fn from_column(c: &mysql_async::Column) -> Self {
        use mysql_async::consts::{ColumnFlags, ColumnType as T};
        let unsigned = c.flags().contains(ColumnFlags::UNSIGNED_FLAG);
        let binary = c.character_set() == 63;
        match c.column_type() {
            T::MYSQL_TYPE_TINY if c.column_length() == 1 && !unsigned => MyType::Bool,
            T::MYSQL_TYPE_TINY => {
                if unsigned {
                    MyType::Int16
                } else {
                    MyType::Int8
                }
            }
            T::MYSQL_TYPE_SHORT => {
                if unsigned {
                    MyType::Int32
                } else {
                    MyType::Int16
                }
            }
            T::MYSQL_TYPE_INT24 => MyType::Int32,
            T::MYSQL_TYPE_LONG => {
                if unsigned {
                    MyType::Int64
                } else {
                    MyType::Int32
                }
            }
            T::MYSQL_TYPE_LONGLONG => {
                if unsigned {
                    MyType::UInt64
                } else {
                    MyType::Int64
                }
            }
            T::MYSQL_TYPE_FLOAT => MyType::Float32,
            T::MYSQL_TYPE_DOUBLE => MyType::Float64,
            T::MYSQL_TYPE_NEWDECIMAL | T::MYSQL_TYPE_DECIMAL => {
                let scale = c.decimals() as u64;
                // column_length counts digits, the point and the sign.
                let precision = (c.column_length() as u64)
                    .saturating_sub(u64::from(scale > 0))
                    .saturating_sub(u64::from(!unsigned));
                if precision <= 38 && precision > 0 {
                    MyType::Decimal(precision as u8, scale as i8)
                } else {
                    MyType::Text
                }
            }
            T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => MyType::Date,
            T::MYSQL_TYPE_DATETIME | T::MYSQL_TYPE_DATETIME2 => MyType::DateTime,
            T::MYSQL_TYPE_TIMESTAMP | T::MYSQL_TYPE_TIMESTAMP2 => MyType::Timestamp,
            T::MYSQL_TYPE_YEAR => MyType::Int16,
            T::MYSQL_TYPE_BIT => MyType::Bit,
            T::MYSQL_TYPE_GEOMETRY => MyType::Binary,
            T::MYSQL_TYPE_TINY_BLOB
            | T::MYSQL_TYPE_MEDIUM_BLOB
            | T::MYSQL_TYPE_LONG_BLOB
            | T::MYSQL_TYPE_BLOB
            | T::MYSQL_TYPE_VAR_STRING
            | T::MYSQL_TYPE_STRING
            | T::MYSQL_TYPE_VARCHAR
                if binary =>
            {
                MyType::Binary
            }
            _ => MyType::Text,
        }
    }
}

/// How long connecting may take before the source is reported unreachable.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A MySQL or MariaDB source.
pub struct MysqlSource {
    name: String,
    url: String,
    schemas: Vec<String>,
}

impl MysqlSource {
    /// From a validated definition (`url: mysql://user:pass@host:3306/db`).
    pub fn new(def: &SourceDef) -> Result<Self> {
        let url = def.url.clone().ok_or_else(|| {
            Error::config(
                &def.name,
                "a mysql source needs `url: mysql://user@host:3306/database`",
            )
        })?;
        let url = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url,
        };
        let default_db = url
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty() && !s.contains('@') && !s.contains(':'))
            .map(|s| s.split('?').next().unwrap_or(s).to_string());
        Ok(Self {
            name: def.name.clone(),
            schemas: if def.schemas.is_empty() {
                default_db.into_iter().collect()
            } else {
                def.schemas.clone()
            },
            url,
        })
    }

    async fn connect(&self) -> Result<Conn> {
        let opts = Opts::from_url(&self.url).map_err(|e| {
            Error::config(
                &self.name,
                &format!(
                    "invalid url {}: {e}",
                    strata_types::redact_url_password(&self.url)
                ),
            )
        })?;
        // An unreachable host fails in seconds, not after the operating system's minutes.
        let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
            Ok(conn) => conn.map_err(|e| self.connection_error(e))?,
            Err(_) => {
                return Err(Error::Connect {
                    source_name: self.name.clone(),
                    message: format!(
                        "the connection timed out after {}s: {}",
                        CONNECT_TIMEOUT.as_secs(),
                        strata_types::redact_url_password(&self.url)
                    ),
                    retryable: true,
                });
            }
        };
        conn.query_drop("SET time_zone = '+00:00'")
            .await
            .map_err(|e| self.read_error(None, "setting the session time zone", e))?;
        Ok(conn)
    }

    fn connection_error(&self, e: mysql_async::Error) -> Error {
        let url = strata_types::redact_url_password(&self.url);
        let text = e.to_string();
        let (what, retryable) = match &e {
            mysql_async::Error::Server(s) if s.code == 1045 => {
                ("authentication failed: check the user and password", false)
            }
            mysql_async::Error::Server(s) if s.code == 1049 => {
                ("the database does not exist", false)
            }
            mysql_async::Error::Io(_) if text.contains("refused") => (
                "the host is unreachable or nothing listens on that port",
                true,
            ),
            _ => ("cannot connect", true),
        };
        Error::Connect {
            source_name: self.name.clone(),
            message: format!("{what}: {url} ({text})"),
            retryable,
        }
    }

    fn read_error(&self, stream: Option<&str>, what: &str, e: mysql_async::Error) -> Error {
        Error::Read {
            source_name: self.name.clone(),
            stream: stream.map(str::to_string),
            message: format!("{what}: {e}"),
        }
    }

    async fn catalog(
        &self,
        conn: &mut Conn,
        table: Option<(&str, &str)>,
    ) -> Result<Vec<CatalogColumn>> {
        let schemas: Vec<String> = match table {
            Some((s, _)) => vec![s.to_string()],
            None => self.schemas.clone(),
        };
        if schemas.is_empty() {
            return Err(Error::config(
                &self.name,
                "no database: put it in the url or list `schemas:`",
            ));
        }
        let list = schemas
            .iter()
            .map(|s| quote_literal(s))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, \
             NUMERIC_PRECISION, NUMERIC_SCALE, COLUMN_KEY, COLUMN_COMMENT \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ({list})"
        );
        if let Some((_, t)) = table {
            sql.push_str(&format!(" AND TABLE_NAME = {}", quote_literal(t)));
        }
        sql.push_str(" ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION");
        let rows: Vec<Row> = conn
            .query(sql)
            .await
            .map_err(|e| self.read_error(None, "reading information_schema", e))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let text = |i: usize| match r.as_ref(i) {
                    Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(Value::Int(v)) => v.to_string(),
                    Some(Value::UInt(v)) => v.to_string(),
                    _ => String::new(),
                };
                let num = |i: usize| text(i).parse::<u64>().ok();
                CatalogColumn {
                    schema: text(0),
                    table: text(1),
                    name: text(2),
                    ty: MyType::from_catalog(&text(3), &text(4), num(6), num(7)),
                    type_name: text(4),
                    nullable: text(5) == "YES",
                    primary: text(8) == "PRI",
                    comment: Some(text(9)).filter(|c| !c.is_empty()),
                }
            })
            .collect())
    }
}

impl MysqlSource {
    /// `(schema, table, TABLE_TYPE, TABLE_COMMENT)` of the relations of the source's schemas.
    async fn tables(&self, conn: &mut Conn) -> Result<Vec<(String, String, String, String)>> {
        let list = self
            .schemas
            .iter()
            .map(|s| quote_literal(s))
            .collect::<Vec<_>>()
            .join(", ");
        let rows: Vec<Row> = conn
            .query(format!(
                "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, TABLE_COMMENT \
                 FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({list})"
            ))
            .await
            .map_err(|e| self.read_error(None, "reading information_schema", e))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let text = |i: usize| match r.as_ref(i) {
                    Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                (text(0), text(1), text(2), text(3))
            })
            .collect())
    }
}

#[derive(Debug, Clone)]
struct CatalogColumn {
    schema: String,
    table: String,
    name: String,
    ty: MyType,
    type_name: String,
    nullable: bool,
    primary: bool,
    comment: Option<String>,
}

fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn schema_of(cols: &[(String, MyType, bool, Option<String>)]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|(n, t, nullable, comment)| {
                let f = Field::new(n, t.arrow(), *nullable);
                match comment {
                    Some(c) => f.with_metadata([("comment".to_string(), c.clone())].into()),
                    None => f,
                }
            })
            .collect::<Vec<_>>(),
    ))
}

#[async_trait]
impl Source for MysqlSource {
    async fn check(&self) -> Result<()> {
        let mut conn = self.connect().await?;
        conn.query_drop("SELECT 1")
            .await
            .map_err(|e| self.read_error(None, "running a test query", e))?;
        let _ = conn.disconnect().await;
        Ok(())
    }

    async fn discover(&self) -> Result<Vec<DiscoveredStream>> {
        let mut conn = self.connect().await?;
        let cols = self.catalog(&mut conn, None).await?;
        let tables = self.tables(&mut conn).await?;
        let _ = conn.disconnect().await;
        let mut out: Vec<DiscoveredStream> = Vec::new();
        let mut i = 0;
        while i < cols.len() {
            let j = cols[i..]
                .iter()
                .position(|c| c.schema != cols[i].schema || c.table != cols[i].table)
                .map(|p| i + p)
                .unwrap_or(cols.len());
            let group = &cols[i..j];
            out.push(DiscoveredStream {
                table: format!("{}.{}", group[0].schema, group[0].table),
                schema: schema_of(
                    &group
                        .iter()
                        .map(|c| (c.name.clone(), c.ty.clone(), c.nullable, c.comment.clone()))
                        .collect::<Vec<_>>(),
                ),
                source_types: group.iter().map(|c| c.type_name.clone()).collect(),
                primary_key: group
                    .iter()
                    .filter(|c| c.primary)
                    .map(|c| c.name.clone())
                    .collect(),
                kind: crate::TableKind::Table,
                description: None,
            });
            if let Some((kind, comment)) = tables
                .iter()
                .find(|(s, t, _, _)| *s == group[0].schema && *t == group[0].table)
                .map(|(_, _, kind, comment)| (kind, comment))
                && let Some(d) = out.last_mut()
            {
                if kind != "BASE TABLE" {
                    d.kind = crate::TableKind::View;
                } else if !comment.is_empty() {
                    d.description = Some(comment.clone());
                }
            }
            i = j;
        }
        Ok(out)
    }

    async fn read(
        &self,
        stream: &StreamDef,
        ctx: &crate::ReadContext,
    ) -> Result<(SchemaRef, BatchStream)> {
        let since = ctx.since.as_deref();
        let mut conn = self.connect().await?;
        let read_err = |m: String| Error::Read {
            source_name: self.name.clone(),
            stream: Some(stream.name.clone()),
            message: m,
        };
        let (from, mut cols): (String, Vec<(String, MyType, bool, Option<String>)>) = match (
            &stream.table,
            &stream.query,
        ) {
            (Some(t), _) => {
                let (schema, table) = match t.split_once('.') {
                    Some((s, n)) => (s.to_string(), n.to_string()),
                    None => (self.schemas.first().cloned().unwrap_or_default(), t.clone()),
                };
                let cat = self.catalog(&mut conn, Some((&schema, &table))).await?;
                if cat.is_empty() {
                    return Err(read_err(format!(
                        "table `{schema}.{table}` does not exist or is not visible to this user"
                    )));
                }
                // The server's row estimate, for the progress display of full reads.
                if ctx.since.is_none() && stream.filter.is_none() {
                    let estimate: Option<Option<u64>> = conn
                            .exec_first(
                                "SELECT table_rows FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                                (&schema, &table),
                            )
                            .await
                            .ok()
                            .flatten();
                    if let Some(Some(n)) = estimate {
                        ctx.report.set_expected_rows(n);
                    }
                }
                (
                    format!("{}.{}", quote_ident(&schema), quote_ident(&table)),
                    cat.into_iter()
                        .map(|c| (c.name, c.ty, c.nullable, c.comment))
                        .collect(),
                )
            }
            (None, Some(q)) => {
                let stmt = conn
                    .prep(format!("SELECT * FROM ({q}) AS q LIMIT 0"))
                    .await
                    .map_err(|e| {
                        self.read_error(Some(&stream.name), "preparing the stream's query", e)
                    })?;
                let cols = stmt
                    .columns()
                    .iter()
                    .map(|c| {
                        (
                            c.name_str().into_owned(),
                            MyType::from_column(c),
                            true,
                            None,
                        )
                    })
                    .collect();
                (format!("({q}) AS q"), cols)
            }
            (None, None) => {
                return Err(read_err("the stream has neither table nor query".into()));
            }
        };
        if !stream.columns.is_empty() {
            for c in &stream.columns {
                if !cols.iter().any(|x| &x.0 == c) {
                    return Err(read_err(format!(
                        "column `{c}` listed in `columns:` does not exist"
                    )));
                }
            }
            cols.retain(|c| stream.columns.contains(&c.0));
        }
        cols.retain(|c| !stream.exclude.contains(&c.0));
        for needed in stream.cursor.iter().chain(&stream.primary_key) {
            if !cols.iter().any(|c| &c.0 == needed) {
                return Err(read_err(format!(
                    "column `{needed}` (cursor or key) is not among the stream's columns"
                )));
            }
        }
        let schema = schema_of(&cols);
        let mut sql = format!(
            "SELECT {} FROM {from}",
            cols.iter()
                .map(|c| quote_ident(&c.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut conditions = Vec::new();
        if let Some(f) = &stream.filter {
            conditions.push(format!("({f})"));
        }
        if let (Some(cursor), Some(v)) = (&stream.cursor, since) {
            // Timestamps come back as RFC 3339 from the pipeline; MySQL wants a space.
            let v = v.trim_end_matches('Z').replacen('T', " ", 1);
            conditions.push(format!("{} >= {}", quote_ident(cursor), quote_literal(&v)));
        }
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        if let Some(cursor) = &stream.cursor {
            let mut order = vec![quote_ident(cursor)];
            order.extend(stream.primary_key.iter().map(|k| quote_ident(k)));
            sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }
        let types: Vec<MyType> = cols.iter().map(|c| c.1.clone()).collect();
        let names: Vec<String> = cols.iter().map(|c| c.0.clone()).collect();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let schema_task = Arc::clone(&schema);
        let source_name = self.name.clone();
        let stream_name = stream.name.clone();
        tokio::spawn(async move {
            let fail = |m: String| Error::Read {
                source_name: source_name.clone(),
                stream: Some(stream_name.clone()),
                message: m,
            };
            let mut result = match conn.query_iter(sql).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(fail(format!("reading: {e}")))).await;
                    return;
                }
            };
            let mut builders: Vec<Builder> = types.iter().map(Builder::new).collect();
            let mut rows = 0usize;
            loop {
                match result.next().await {
                    Ok(Some(row)) => {
                        let values = row.unwrap_raw();
                        for (i, v) in values.into_iter().enumerate() {
                            if let Err(m) = builders[i].append(v) {
                                let _ = tx
                                    .send(Err(fail(format!("column `{}`: {m}", names[i]))))
                                    .await;
                                return;
                            }
                        }
                        rows += 1;
                        if rows == 65_536 {
                            rows = 0;
                            let b = finish(&schema_task, &mut builders);
                            if tx.send(b.map_err(fail)).await.is_err() {
                                return; // the reader went away: stop reading
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(fail(format!("the read failed: {e}")))).await;
                        return;
                    }
                }
            }
            drop(result);
            if rows > 0 {
                let _ = tx
                    .send(finish(&schema_task, &mut builders).map_err(fail))
                    .await;
            }
            let _ = conn.disconnect().await;
        });
        let batches =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        Ok((schema, Box::pin(batches)))
    }
}

fn finish(
    schema: &SchemaRef,
    builders: &mut [Builder],
) -> std::result::Result<RecordBatch, String> {
    let arrays: Vec<ArrayRef> = builders.iter_mut().map(Builder::finish).collect();
    RecordBatch::try_new(Arc::clone(schema), arrays).map_err(|e| e.to_string())
}

enum Builder {
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder, i8),
    Text(StringBuilder),
    Bin(BinaryBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Bit(Int64Builder),
}

impl Builder {
    fn new(t: &MyType) -> Self {
        match t {
            MyType::Bool => Builder::Bool(BooleanBuilder::new()),
            MyType::Int8 => Builder::I8(Int8Builder::new()),
            MyType::Int16 => Builder::I16(Int16Builder::new()),
            MyType::Int32 => Builder::I32(Int32Builder::new()),
            MyType::Int64 => Builder::I64(Int64Builder::new()),
            MyType::UInt64 => Builder::Dec(
                Decimal128Builder::new().with_data_type(DataType::Decimal128(20, 0)),
                0,
            ),
            MyType::Float32 => Builder::F32(Float32Builder::new()),
            MyType::Float64 => Builder::F64(Float64Builder::new()),
            MyType::Decimal(p, s) => Builder::Dec(
                Decimal128Builder::new().with_data_type(DataType::Decimal128(*p, *s)),
                *s,
            ),
            MyType::Text => Builder::Text(StringBuilder::new()),
            MyType::Binary => Builder::Bin(BinaryBuilder::new()),
            MyType::Date => Builder::Date(Date32Builder::new()),
            MyType::DateTime => Builder::Ts(TimestampMicrosecondBuilder::new()),
            MyType::Timestamp => {
                Builder::Ts(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            MyType::Bit => Builder::Bit(Int64Builder::new()),
        }
    }

    fn append(&mut self, v: Option<Value>) -> std::result::Result<(), String> {
        let bytes = match v {
            None | Some(Value::NULL) => {
                self.append_null();
                return Ok(());
            }
            Some(Value::Bytes(b)) => b,
            Some(other) => other.as_sql(true).into_bytes(),
        };
        let text =
            || std::str::from_utf8(&bytes).map_err(|_| "text is not valid UTF-8".to_string());
        fn number<T: std::str::FromStr>(t: &str) -> std::result::Result<T, String> {
            t.parse().map_err(|_| format!("cannot read `{t}`"))
        }
        match self {
            Builder::Bool(b) => b.append_value(text()? != "0"),
            Builder::I8(b) => b.append_value(number(text()?)?),
            Builder::I16(b) => b.append_value(number(text()?)?),
            Builder::I32(b) => b.append_value(number(text()?)?),
            Builder::I64(b) => b.append_value(number(text()?)?),
            Builder::F32(b) => b.append_value(number(text()?)?),
            Builder::F64(b) => b.append_value(number(text()?)?),
            Builder::Dec(b, scale) => b.append_value(parse_decimal(text()?, *scale)?),
            Builder::Text(b) => b.append_value(text()?),
            Builder::Bin(b) => b.append_value(&bytes),
            Builder::Date(b) => match parse_date(text()?)? {
                Some(d) => b.append_value(d),
                None => b.append_null(),
            },
            Builder::Ts(b) => match parse_datetime(text()?)? {
                Some(t) => b.append_value(t),
                None => b.append_null(),
            },
            Builder::Bit(b) => {
                if bytes.len() > 8 {
                    return Err("bit values wider than 64 bits are not supported".into());
                }
                b.append_value(bytes.iter().fold(0i64, |acc, x| (acc << 8) | i64::from(*x)))
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::I8(b) => b.append_null(),
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) | Builder::Bit(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Dec(b, _) => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Bin(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Ts(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::I8(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) | Builder::Bit(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Dec(b, _) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Bin(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
        }
    }
}

/// `-123.45` at scale 2 → -12345; more digits than the scale is an error, never a rounding.
fn parse_decimal(s: &str, scale: i8) -> std::result::Result<i128, String> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = frac.trim_end_matches('0');
    if frac.len() > scale.max(0) as usize {
        return Err(format!("`{s}` has more than {scale} decimal digits"));
    }
    let mut all = String::from(int);
    all.push_str(frac);
    all.push_str(&"0".repeat(scale as usize - frac.len()));
    let v: i128 = all
        .parse()
        .map_err(|_| format!("cannot read `{s}` as a decimal"))?;
    Ok(if neg { -v } else { v })
}

fn parse_date(s: &str) -> std::result::Result<Option<i32>, String> {
    if s.starts_with("0000-00-00") {
        return Ok(None);
    }
    let d = chrono::NaiveDate::parse_from_str(&s[..s.len().min(10)], "%Y-%m-%d")
        .map_err(|_| format!("cannot read `{s}` as a date"))?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    Ok(Some((d - epoch).num_days() as i32))
}

fn parse_datetime(s: &str) -> std::result::Result<Option<i64>, String> {
    if s.starts_with("0000-00-00") {
        return Ok(None);
    }
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .map_err(|_| format!("cannot read `{s}` as a date and time"))?;
    Ok(Some(t.and_utc().timestamp_micros()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_dates_and_types() {
        assert_eq!(parse_decimal("-123.45", 2).unwrap(), -12345);
        assert_eq!(parse_decimal("7", 3).unwrap(), 7000);
        assert_eq!(parse_decimal("1.500", 1).unwrap(), 15);
        assert!(parse_decimal("1.234", 2).is_err());
        assert_eq!(parse_date("1970-01-02").unwrap(), Some(1));
        assert_eq!(parse_date("0000-00-00").unwrap(), None);
        assert_eq!(
            parse_datetime("1970-01-01 00:00:01.5").unwrap(),
            Some(1_500_000)
        );
        assert_eq!(
            MyType::from_catalog("tinyint", "tinyint(1)", None, None),
            MyType::Bool
        );
        assert_eq!(
            MyType::from_catalog("int", "int(10) unsigned", None, None),
            MyType::Int64
        );
        assert_eq!(
            MyType::from_catalog("bigint", "bigint(20) unsigned", None, None),
            MyType::UInt64
        );
        assert_eq!(
            MyType::from_catalog("decimal", "decimal(12,2)", Some(12), Some(2)),
            MyType::Decimal(12, 2)
        );
        assert_eq!(
            MyType::from_catalog("decimal", "decimal(65,2)", Some(65), Some(2)),
            MyType::Text
        );
        assert_eq!(
            MyType::from_catalog("enum", "enum('a','b')", None, None),
            MyType::Text
        );
    }
}
