//! Integration tests of sources against real services (PostgreSQL on the machine),
//! each in its own schema, loading into a lake in a temporary directory.

mod clone;
mod files;
mod mysql;
mod postgres;
mod redis;
mod rest;
mod sqlite;

use strata_lake::deltalake::datafusion::prelude::SessionContext;
use strata_lake::{Lake, TableName};

/// Rows of a lake table, formatted `a|b|c`, ordered by the first column.
pub(crate) async fn rows(lake: &Lake, t: &str, columns: &str) -> Vec<String> {
    let t: TableName = t.parse().unwrap();
    let table = lake.open_table(&t).await.unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("t", table.table_provider().await.unwrap())
        .unwrap();
    let batches = ctx
        .sql(&format!("SELECT {columns} FROM t ORDER BY 1"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let opts = arrow::util::display::FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in &batches {
        let f: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                f.iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out
}
