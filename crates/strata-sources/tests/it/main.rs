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

/// A lake in `dir/lake`.
pub(crate) async fn lake_in(dir: &std::path::Path) -> Lake {
    Lake::open(
        &url::Url::from_directory_path(dir.join("lake")).unwrap(),
        Default::default(),
    )
    .await
    .unwrap()
}

/// Runs every stream of `def` in order, stopping at the first error.
pub(crate) async fn ingest_all(
    lake: &Lake,
    def: &strata_project::SourceDef,
    opts: &strata_sources::ingest::IngestOptions,
) -> Result<Vec<strata_sources::ingest::StreamReport>, strata_sources::Error> {
    let src = strata_sources::connect(def)?;
    let mut out = Vec::new();
    for s in &def.streams {
        out.push(
            strata_sources::ingest::run_stream(
                lake,
                src.as_ref(),
                def,
                s,
                opts,
                std::sync::Arc::new(strata_sources::ingest::Progress::default()),
            )
            .await?,
        );
    }
    Ok(out)
}

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
