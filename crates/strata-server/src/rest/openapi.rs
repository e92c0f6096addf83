//! The API's OpenAPI 3.1 document, built from the same endpoint list the router is built
//! from, plus one path per table the caller may read (with a filter parameter per column).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};

use super::{RestState, Secure};

/// One endpoint: where, what it does, and its handler.
pub(crate) struct Endpoint {
    pub(crate) path: &'static str,
    method: &'static str,
    summary: &'static str,
    description: &'static str,
    /// Whether it needs credentials.
    secured: bool,
    /// Extra OpenAPI fields (parameters, request body, responses).
    extra: fn() -> Value,
    pub(crate) handler: MethodRouter<Arc<RestState>>,
}

/// Every endpoint of the API.
pub(crate) fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            path: "/api/v1/health",
            method: "get",
            summary: "Liveness",
            description: "Answers as long as the process serves requests.",
            secured: false,
            extra: || json!({}),
            handler: get(super::health),
        },
        Endpoint {
            path: "/api/v1/ready",
            method: "get",
            summary: "Readiness",
            description: "Whether the metadata store and the lake answer; 503 when not.",
            secured: false,
            extra: || json!({}),
            handler: get(super::ready),
        },
        Endpoint {
            path: "/api/v1/openapi.json",
            method: "get",
            summary: "This document",
            description: "With credentials, it also lists a path per table the caller may read.",
            secured: false,
            extra: || json!({}),
            handler: get(document),
        },
        Endpoint {
            path: "/api/v1/sql",
            method: "post",
            summary: "Run SQL",
            description: "Runs the statements of `sql` (the last one's result is returned) in a session of the caller, under its grants, row policies and masks. Rows stream in the format chosen by `Accept` or `?format=`: JSON (default), NDJSON, CSV, Arrow IPC stream or Parquet. `params` bind to `$1`, `$2`… A plain-text body (`Content-Type: text/plain`) is the SQL itself.",
            secured: true,
            extra: || {
                json!({
                    "parameters": [format_param()],
                    "requestBody": {
                        "required": true,
                        "content": {
                            "application/json": {"schema": {
                                "type": "object",
                                "required": ["sql"],
                                "properties": {
                                    "sql": {"type": "string"},
                                    "params": {"type": "array", "items": {}},
                                    "max_rows": {"type": "integer", "minimum": 0},
                                    "timeout_ms": {"type": "integer", "minimum": 1}
                                }
                            }},
                            "text/plain": {"schema": {"type": "string"}}
                        }
                    }
                })
            },
            handler: post(super::sql),
        },
        Endpoint {
            path: "/api/v1/tables",
            method: "get",
            summary: "Tables",
            description: "The tables and views the caller may read, with their columns.",
            secured: true,
            extra: || json!({}),
            handler: get(super::tables),
        },
        Endpoint {
            path: "/api/v1/tables/{ns}/{table}",
            method: "get",
            summary: "Rows of a table",
            description: "Filters `column=op.value` (eq, neq, gt, gte, lt, lte, like, ilike, in, is; `not.` negates), `or=(…)`/`and=(…)` groups, `select=a,b`, `order=a.desc.nullslast,b`, `limit` (default 100, at most 10000), `offset`, and `cursor` (from `next_cursor` or the `X-Next-Cursor` header): every page of one cursor chain reads the same table version.",
            secured: true,
            extra: || {
                json!({
                    "parameters": [
                        path_param("ns"), path_param("table"),
                        query_param("select", "Columns to return, comma-separated."),
                        query_param("order", "Sort: `col[.asc|.desc][.nullsfirst|.nullslast]`, comma-separated."),
                        query_param("limit", "Rows per page (default 100, at most 10000)."),
                        query_param("offset", "Rows to skip."),
                        query_param("cursor", "The next page of an earlier response."),
                        format_param()
                    ]
                })
            },
            handler: get(super::table_rows),
        },
        Endpoint {
            path: "/api/v1/tables/{ns}/{table}/schema",
            method: "get",
            summary: "Columns of a table",
            description: "Column names, types and nullability, and the table's current version.",
            secured: true,
            extra: || json!({"parameters": [path_param("ns"), path_param("table")]}),
            handler: get(super::table_schema),
        },
    ]
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}})
}

fn format_param() -> Value {
    json!({
        "name": "format", "in": "query", "required": false,
        "description": "Result format; overrides `Accept`.",
        "schema": {"type": "string", "enum": ["json", "ndjson", "csv", "arrow", "parquet"]}
    })
}

fn error_responses() -> Value {
    let err = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let with = |d: &str| {
        let mut e = err.clone();
        e["description"] = Value::String(d.into());
        e
    };
    json!({
        "400": with("The request or its SQL is wrong; `code` is the SQLSTATE."),
        "401": with("Missing or invalid credentials."),
        "403": with("Not granted."),
        "404": with("No such table, or not granted."),
        "413": with("The body is too large."),
        "429": with("Over the rate limit; see `Retry-After`."),
        "504": with("The statement ran past its timeout.")
    })
}

/// A table as the document describes it: namespace, name, columns as `(name, SQL type)`.
pub(crate) type TableDoc = (String, String, Vec<(String, String)>);

/// The document for a caller who may read `tables`.
pub(crate) fn build(tables: &[TableDoc]) -> Value {
    let mut paths = serde_json::Map::new();
    for e in endpoints() {
        let mut op = json!({
            "summary": e.summary,
            "description": e.description,
            "operationId": format!("{}_{}", e.method, e.path.trim_start_matches("/api/v1/").replace(['/', '{', '}', '.'], "_")),
            "responses": {"200": {"description": "OK"}},
        });
        if !e.secured {
            op["security"] = json!([]);
        } else if let (Some(r), Some(errors)) = (
            op["responses"].as_object_mut(),
            error_responses().as_object(),
        ) {
            r.extend(errors.clone());
        }
        if let (Some(o), Value::Object(extra)) = (op.as_object_mut(), (e.extra)()) {
            o.extend(extra);
        }
        let entry = paths.entry(e.path.to_string()).or_insert_with(|| json!({}));
        entry[e.method] = op;
    }
    for (ns, t, columns) in tables {
        let mut params: Vec<Value> = columns
            .iter()
            .map(|(c, ty)| {
                json!({
                    "name": c, "in": "query", "required": false,
                    "description": format!("Filter on `{c}` ({ty}): `op.value`, e.g. `eq.42`, `in.(1,2)`, `is.null`."),
                    "schema": {"type": "string"}
                })
            })
            .collect();
        for (n, d) in [
            ("select", "Columns to return."),
            ("order", "Sort order."),
            ("limit", "Rows per page."),
            ("cursor", "The next page."),
        ] {
            params.push(query_param(n, d));
        }
        let props: serde_json::Map<String, Value> = columns
            .iter()
            .map(|(c, ty)| (c.clone(), json!({"type": json_type(ty), "x-sql-type": ty})))
            .collect();
        paths.insert(
            format!("/api/v1/tables/{ns}/{t}"),
            json!({"get": {
                "summary": format!("Rows of {ns}.{t}"),
                "operationId": format!("get_{ns}_{t}"),
                "tags": [ns],
                "parameters": params,
                "responses": {"200": {"description": "A page of rows", "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {
                        "rows": {"type": "array", "items": {"type": "object", "properties": props}},
                        "row_count": {"type": "integer"},
                        "next_cursor": {"type": "string"}
                    }
                }}}}}
            }}),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Strata",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "SQL and table reads over Strata's warehouse, under the caller's grants, row policies and masks."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"basic": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API token (`strata tokens create`)."},
                "basic": {"type": "http", "scheme": "basic", "description": "A user and its password or API token."}
            },
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "code": {"type": "string", "description": "SQLSTATE"},
                    "message": {"type": "string"}
                }}}}
            }
        },
        "paths": paths
    })
}

fn json_type(sql: &str) -> &'static str {
    match sql {
        "boolean" => "boolean",
        "smallint" | "integer" | "bigint" => "integer",
        "real" | "double precision" => "number",
        t if t.starts_with("numeric") => "number",
        t if t.ends_with("[]") => "array",
        _ => "string",
    }
}

pub(crate) async fn document(
    State(state): State<Arc<RestState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(secure): axum::Extension<Secure>,
    headers: HeaderMap,
) -> axum::response::Response {
    let mut tables = Vec::new();
    if headers.contains_key(axum::http::header::AUTHORIZATION) {
        match super::begin(&state, &headers, peer, secure).await {
            Ok((_, session)) => {
                for (ns, t, _, schema) in super::visible_tables(&session).await {
                    let cols = schema
                        .fields()
                        .iter()
                        .map(|f| (f.name().clone(), super::type_name(f.data_type())))
                        .collect();
                    tables.push((ns, t, cols));
                }
            }
            Err(e) => return e.into_response(),
        }
    }
    axum::Json(build(&tables)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_and_table_is_documented() {
        let doc = build(&[(
            "marts".into(),
            "orders".into(),
            vec![("id".into(), "bigint".into())],
        )]);
        for e in endpoints() {
            assert!(doc["paths"][e.path][e.method].is_object(), "{}", e.path);
        }
        let t = &doc["paths"]["/api/v1/tables/marts/orders"]["get"];
        assert_eq!(t["parameters"][0]["name"], "id");
        assert_eq!(doc["paths"]["/api/v1/health"]["get"]["security"], json!([]));
    }
}
