//! PostgreSQL: streams read with binary `COPY (SELECT …) TO STDOUT`, decoded straight into
//! Arrow (see [`copy`]), with the type mapping of [`types`].
//!
//! Each read is one statement, so it sees one consistent snapshot of the table even while
//! rows change under it (a large table read over several connections shares one exported
//! snapshot between them, see [`parallel`]); incremental reads select `cursor >= last value` ordered by cursor
//! and key, and the pipeline merges on the key, so rows sharing the last cursor value are
//! re-read and de-duplicated rather than skipped.

pub mod copy;
pub mod parallel;
mod tls;
pub mod types;

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use futures::StreamExt;
use strata_project::{SourceDef, StreamDef};
use tokio_postgres::{Client, NoTls};

use self::copy::CopyDecoder;
use self::types::{PgColumn, plan_column};
use crate::{BatchStream, DiscoveredStream, Error, Result, Source};

/// Drives a connection until its client is dropped.
fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection closed with an error.");
        }
    });
}

/// How long connecting may take before the source is reported unreachable.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A PostgreSQL source.
pub struct PostgresSource {
    name: String,
    url: String,
    schemas: Vec<String>,
    batch_size: usize,
}

impl PostgresSource {
    /// From a validated definition.
    pub fn new(def: &SourceDef) -> Result<Self> {
        let url = def.url.clone().ok_or_else(|| {
            Error::config(
                &def.name,
                "a postgres source needs `url: postgres://user@host:5432/db`",
            )
        })?;
        Ok(Self {
            name: def.name.clone(),
            url,
            schemas: if def.schemas.is_empty() {
                vec!["public".into()]
            } else {
                def.schemas.clone()
            },
            batch_size: 65_536,
        })
    }

    async fn connect(&self) -> Result<Client> {
        let invalid = |e: String| {
            Error::config(
                &self.name,
                &format!(
                    "invalid url {}: {e}",
                    strata_types::redact_url_password(&self.url)
                ),
            )
        };
        let (url, security) = tls::split_url(&self.url).map_err(invalid)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| invalid(e.to_string()))?;
        // An unreachable host fails in seconds, not after the operating system's minutes;
        // `?connect_timeout=N` in the URL overrides.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // The same limit covers the whole handshake: a server that accepts the connection
        // and then says nothing must not hang the run either.
        let limit = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT);
        let timed_out = || Error::Connect {
            source_name: self.name.clone(),
            message: format!(
                "the server did not answer within {}s: {}",
                limit.as_secs_f32(),
                strata_types::redact_url_password(&self.url)
            ),
            retryable: true,
        };
        let client = if security == tls::Security::Plain {
            let (client, connection) = tokio::time::timeout(limit, config.connect(NoTls))
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| self.connection_error(e))?;
            spawn_connection(connection);
            client
        } else {
            let tls_config =
                tls::client_config(&security).map_err(|m| Error::config(&self.name, &m))?;
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config);
            let (client, connection) = tokio::time::timeout(limit, config.connect(tls))
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| self.connection_error(e))?;
            spawn_connection(connection);
            client
        };
        Ok(client)
    }

    /// Explains a connection failure in plain words.
    fn connection_error(&self, e: tokio_postgres::Error) -> Error {
        let url = strata_types::redact_url_password(&self.url);
        let detail = e.to_string();
        let code = e.code().map(|c| c.code().to_string());
        let full = format!(
            "{detail} {}",
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        let (what, retryable) = match code.as_deref() {
            Some("28P01") | Some("28000") => {
                ("authentication failed: check the user and password", false)
            }
            Some("3D000") => ("the database does not exist", false),
            _ if detail.contains("Connection refused") || detail.contains("error connecting") => (
                "the host is unreachable or nothing listens on that port",
                true,
            ),
            _ if detail.contains("timed out") => ("the connection timed out", true),
            _ if full.contains("not valid for name") => (
                "the server's TLS certificate is for another host name: connect by the name it was issued for",
                false,
            ),
            _ if full.contains("certificate") => (
                "the server's TLS certificate is not trusted: give its CA with `sslrootcert=/path/ca.pem` in the url (or `sslmode=require` to encrypt without checking it)",
                false,
            ),
            _ => ("cannot connect", true),
        };
        let source_detail = std::error::Error::source(&e)
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        Error::Connect {
            source_name: self.name.clone(),
            message: format!("{what}: {url}{source_detail}"),
            retryable,
        }
    }

    async fn columns_of(
        &self,
        client: &Client,
        schema: &str,
        table: &str,
    ) -> Result<Vec<PgColumn>> {
        let rows = client
            .query(
                COLUMNS_SQL,
                &[&vec![schema.to_string()], &Some(table.to_string())],
            )
            .await
            .map_err(|e| self.query_error("reading the catalog", e))?;
        Ok(rows.iter().map(column_from_row).collect())
    }

    fn query_error(&self, what: &str, e: tokio_postgres::Error) -> Error {
        let message = match e.as_db_error() {
            Some(db) => format!("{what}: {}", db.message()),
            None => format!("{what}: {e}"),
        };
        Error::Read {
            source_name: self.name.clone(),
            stream: None,
            message,
        }
    }
}

const COLUMNS_SQL: &str = "
SELECT n.nspname::text, c.relname::text, a.attname::text, a.atttypid::int8, a.atttypmod,
       t.typtype::text, t.typelem::int8, format_type(a.atttypid, a.atttypmod),
       NOT a.attnotnull, col_description(c.oid, a.attnum),
       coalesce((SELECT k.ord FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                 WHERE i.indrelid = c.oid AND i.indisprimary AND k.attnum = a.attnum), 0)::int4
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attnum > 0 AND NOT a.attisdropped
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname = ANY($1)
  AND ($2::text IS NULL OR c.relname = $2)
ORDER BY n.nspname, c.relname, a.attnum";

/// Kind (table, view, partition) and comment of each relation of the schemas `$1`.
const RELATIONS_SQL: &str = "
SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relispartition,
       obj_description(c.oid, 'pg_class')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname = ANY($1)";

fn column_from_row(r: &tokio_postgres::Row) -> PgColumn {
    PgColumn {
        name: r.get(2),
        type_oid: r.get::<_, i64>(3) as u32,
        typmod: r.get(4),
        typtype: r.get(5),
        elem_oid: r.get::<_, i64>(6) as u32,
        type_name: r.get(7),
        nullable: r.get(8),
        comment: r.get(9),
    }
}

/// `"name"` with embedded quotes doubled.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled.
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn split_table(t: &str) -> (String, String) {
    match t.split_once('.') {
        Some((s, n)) => (s.to_string(), n.to_string()),
        None => ("public".to_string(), t.to_string()),
    }
}

fn arrow_schema(cols: &[PgColumn]) -> (SchemaRef, Vec<types::ColumnPlan>) {
    let plans: Vec<_> = cols.iter().map(plan_column).collect();
    let fields: Vec<Field> = cols
        .iter()
        .zip(&plans)
        .map(|(c, p)| {
            let mut f = Field::new(&c.name, p.pg.arrow_type(), c.nullable);
            if let Some(comment) = &c.comment {
                f = f.with_metadata([("comment".to_string(), comment.clone())].into());
            }
            f
        })
        .collect();
    (Arc::new(Schema::new(fields)), plans)
}

#[async_trait]
impl Source for PostgresSource {
    async fn check(&self) -> Result<()> {
        let client = self.connect().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| self.query_error("running a test query", e))?;
        Ok(())
    }

    async fn discover(&self) -> Result<Vec<DiscoveredStream>> {
        let client = self.connect().await?;
        let rows = client
            .query(COLUMNS_SQL, &[&self.schemas, &None::<String>])
            .await
            .map_err(|e| self.query_error("reading the catalog", e))?;
        let mut out: Vec<DiscoveredStream> = Vec::new();
        let mut current: Option<(String, String, Vec<PgColumn>, Vec<(i32, String)>)> = None;
        let flush = |cur: Option<(String, String, Vec<PgColumn>, Vec<(i32, String)>)>,
                     out: &mut Vec<DiscoveredStream>| {
            if let Some((schema, table, cols, mut pk)) = cur {
                pk.sort();
                let (arrow, _) = arrow_schema(&cols);
                out.push(DiscoveredStream {
                    table: format!("{schema}.{table}"),
                    schema: arrow,
                    source_types: cols.iter().map(|c| c.type_name.clone()).collect(),
                    primary_key: pk.into_iter().map(|(_, n)| n).collect(),
                    kind: crate::TableKind::Table,
                    description: None,
                });
            }
        };
        for r in &rows {
            let schema: String = r.get(0);
            let table: String = r.get(1);
            let pk_pos: i32 = r.get(10);
            let col = column_from_row(r);
            let same = current
                .as_ref()
                .is_some_and(|(s, t, _, _)| *s == schema && *t == table);
            if !same {
                flush(current.take(), &mut out);
                current = Some((schema, table, Vec::new(), Vec::new()));
            }
            let cur = current.as_mut().expect("set above");
            if pk_pos > 0 {
                cur.3.push((pk_pos, col.name.clone()));
            }
            cur.2.push(col);
        }
        flush(current, &mut out);
        let relations = client
            .query(RELATIONS_SQL, &[&self.schemas])
            .await
            .map_err(|e| self.query_error("reading the catalog", e))?;
        let relations: std::collections::HashMap<String, (crate::TableKind, Option<String>)> =
            relations
                .iter()
                .map(|r| {
                    let kind = match (r.get::<_, String>(2).as_str(), r.get::<_, bool>(3)) {
                        (_, true) => crate::TableKind::Partition,
                        ("r" | "p", _) => crate::TableKind::Table,
                        _ => crate::TableKind::View,
                    };
                    let name = format!("{}.{}", r.get::<_, String>(0), r.get::<_, String>(1));
                    (name, (kind, r.get(4)))
                })
                .collect();
        for d in &mut out {
            if let Some((kind, description)) = relations.get(&d.table) {
                d.kind = *kind;
                d.description = description.clone();
            }
        }
        Ok(out)
    }

    async fn read(
        &self,
        stream: &StreamDef,
        ctx: &crate::ReadContext,
    ) -> Result<(SchemaRef, BatchStream)> {
        let since = ctx.since.as_deref();
        let client = self.connect().await?;
        let read_err = |message: String| Error::Read {
            source_name: self.name.clone(),
            stream: Some(stream.name.clone()),
            message,
        };
        // The columns: from the catalog for a table, from a zero-row probe for a query.
        let (from, mut cols, is_table) = match (&stream.table, &stream.query) {
            (Some(t), _) => {
                let (schema, table) = split_table(t);
                let cols = self.columns_of(&client, &schema, &table).await?;
                if cols.is_empty() {
                    return Err(read_err(format!(
                        "table `{schema}.{table}` does not exist or has no columns visible to this user"
                    )));
                }
                (
                    format!("{}.{}", quote_ident(&schema), quote_ident(&table)),
                    cols,
                    true,
                )
            }
            (None, Some(q)) => {
                let stmt = client
                    .prepare(&format!("SELECT * FROM ({q}) AS q LIMIT 0"))
                    .await
                    .map_err(|e| self.query_error("preparing the stream's query", e))?;
                let cols = stmt
                    .columns()
                    .iter()
                    .map(|c| PgColumn {
                        name: c.name().to_string(),
                        type_oid: c.type_().oid(),
                        typmod: -1,
                        typtype: match c.type_().kind() {
                            tokio_postgres::types::Kind::Enum(_) => "e".into(),
                            _ => "b".into(),
                        },
                        elem_oid: match c.type_().kind() {
                            tokio_postgres::types::Kind::Array(e) => e.oid(),
                            _ => 0,
                        },
                        type_name: c.type_().name().to_string(),
                        nullable: true,
                        comment: None,
                    })
                    .collect();
                (format!("({q}) AS q"), cols, false)
            }
            (None, None) => return Err(read_err("the stream has neither table nor query".into())),
        };
        let table_columns = cols.clone();
        if !stream.columns.is_empty() {
            for c in &stream.columns {
                if !cols.iter().any(|x| &x.name == c) {
                    return Err(read_err(format!(
                        "column `{c}` listed in `columns:` does not exist; columns are: {}",
                        cols.iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
            cols.retain(|c| stream.columns.contains(&c.name));
        }
        cols.retain(|c| !stream.exclude.contains(&c.name));
        for needed in stream.cursor.iter().chain(&stream.primary_key) {
            if !cols.iter().any(|c| &c.name == needed) {
                return Err(read_err(format!(
                    "column `{needed}` (cursor or key) is not among the stream's columns"
                )));
            }
        }
        let (schema, plans) = arrow_schema(&cols);
        let select: Vec<String> = cols
            .iter()
            .zip(&plans)
            .map(|(c, p)| {
                if p.as_text {
                    format!("{}::text", quote_ident(&c.name))
                } else {
                    quote_ident(&c.name)
                }
            })
            .collect();
        let mut conditions: Vec<String> = Vec::new();
        if let Some(f) = &stream.filter {
            conditions.push(format!("({f})"));
        }
        // The planner's row estimate, for the progress display of full reads.
        if is_table
            && since.is_none()
            && stream.filter.is_none()
            && let Ok(Some(row)) = client
                .query_opt(
                    "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::text::regclass",
                    &[&from],
                )
                .await
        {
            let n: i64 = row.get(0);
            ctx.report.set_expected_rows(n.max(0) as u64);
        }
        let table = is_table.then(|| parallel::TableFacts {
            qualified: &from,
            columns: &table_columns,
        });
        if let Some(chunking) = parallel::decide(self, &client, stream, table).await? {
            let read = parallel::ChunkedRead {
                select: select.join(", "),
                from: from.clone(),
                conditions,
                schema: Arc::clone(&schema),
                types: plans.into_iter().map(|p| p.pg).collect(),
                batch_size: self.batch_size,
            };
            let batches = parallel::read(self, client, stream, &chunking, read).await?;
            return Ok((schema, batches));
        }
        let mut order: Vec<String> = Vec::new();
        if let Some(cursor) = &stream.cursor {
            let col = cols
                .iter()
                .find(|c| &c.name == cursor)
                .expect("checked above");
            if let Some(v) = since {
                conditions.push(format!(
                    "{} >= {}::{}",
                    quote_ident(cursor),
                    quote_literal(v),
                    col.type_name
                ));
            }
            order.push(quote_ident(cursor));
            order.extend(stream.primary_key.iter().map(|k| quote_ident(k)));
        }
        let mut sql = format!("SELECT {} FROM {from}", select.join(", "));
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        if !order.is_empty() {
            sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }
        let copy = format!("COPY ({sql}) TO STDOUT (FORMAT binary)");
        tracing::debug!(source = %self.name, stream = %stream.name, sql = %copy, "Reading.");
        let bytes = client
            .copy_out(copy.as_str())
            .await
            .map_err(|e| self.query_error(&format!("reading stream `{}`", stream.name), e))?;
        let types: Vec<_> = plans.into_iter().map(|p| p.pg).collect();
        let decoder = CopyDecoder::new(Arc::clone(&schema), &types, self.batch_size);
        let name = self.name.clone();
        let stream_name = stream.name.clone();
        let batches = futures::stream::unfold(
            (Box::pin(bytes), decoder, client, false),
            move |(mut bytes, mut decoder, client, done)| {
                let name = name.clone();
                let stream_name = stream_name.clone();
                async move {
                    if done {
                        return None;
                    }
                    let to_err = |m: String| Error::Read {
                        source_name: name.clone(),
                        stream: Some(stream_name.clone()),
                        message: m,
                    };
                    loop {
                        match bytes.next().await {
                            Some(Ok(chunk)) => match decoder.push(&chunk) {
                                Ok(batches) if batches.is_empty() => continue,
                                Ok(batches) => {
                                    let items: Vec<Result<_>> =
                                        batches.into_iter().map(Ok).collect();
                                    return Some((
                                        futures::stream::iter(items),
                                        (bytes, decoder, client, false),
                                    ));
                                }
                                Err(e) => {
                                    return Some((
                                        futures::stream::iter(vec![Err(to_err(e.0))]),
                                        (bytes, decoder, client, true),
                                    ));
                                }
                            },
                            Some(Err(e)) => {
                                return Some((
                                    futures::stream::iter(vec![Err(to_err(format!(
                                        "the read failed: {e}"
                                    )))]),
                                    (bytes, decoder, client, true),
                                ));
                            }
                            None => {
                                let last = decoder.finish().map_err(|e| to_err(e.0));
                                let items: Vec<Result<_>> = match last {
                                    Ok(Some(b)) => vec![Ok(b)],
                                    Ok(None) => vec![],
                                    Err(e) => vec![Err(e)],
                                };
                                return Some((
                                    futures::stream::iter(items),
                                    (bytes, decoder, client, true),
                                ));
                            }
                        }
                    }
                }
            },
        )
        .flatten()
        .boxed();
        Ok((schema, batches))
    }
}
