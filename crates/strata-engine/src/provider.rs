//! Table providers for Delta tables, and the object-store wiring they need.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use deltalake::DeltaTable;
use deltalake::delta_datafusion::engine::AsObjectStoreUrl;
use strata_lake::Lake;

use crate::Result;

/// A provider scanning `table` at the version it was loaded at.
pub(crate) async fn delta_provider(
    table: &DeltaTable,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    table.table_provider().await
}

/// Registers the lake's root object store with the runtime so scans can read data files.
/// Local disk needs nothing (DataFusion knows `file://`).
pub(crate) fn register_lake_store(lake: &Lake, runtime: &RuntimeEnv) -> Result<()> {
    if lake.root().scheme() == "file" {
        return Ok(());
    }
    let config = deltalake::logstore::StorageConfig::parse_options(lake.options().clone())
        .map_err(|e| crate::Error::Invalid(format!("lake options: {e}")))?;
    let log_store = deltalake::logstore::logstore_for(lake.root(), config)
        .map_err(|e| crate::Error::Invalid(format!("lake at {}: {e}", lake.root())))?;
    let url = lake.root().as_object_store_url();
    runtime.register_object_store(url.as_ref(), log_store.root_object_store(None));
    Ok(())
}
