//! The lake as a DataFusion catalog: namespaces are schemas, Delta tables and stored views
//! are tables.
//!
//! Tables are opened at their latest version each time a statement is planned, so commits
//! made by other processes are visible to the next statement without a restart. Opening is
//! one listing of the table's log: while no commit landed, the provider opened before (its
//! snapshot replayed from the log once) is used again ([`OpenTables`]). The
//! synchronous name listings DataFusion needs (for `information_schema`, `SHOW TABLES`)
//! come from a cache refreshed when a session opens and after each DDL statement.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::ViewTable;
use datafusion::logical_expr::TableType;
use strata_lake::{Lake, TableName};

use crate::engine::EngineInner;

/// Name of the catalog that holds the lake.
pub const CATALOG: &str = "strata";

/// (tables, views) of one namespace.
type NamespaceNames = (Vec<String>, Vec<String>);

#[derive(Debug)]
pub(crate) struct LakeCatalog {
    lake: Lake,
    engine: Weak<EngineInner>,
    /// namespace → (tables, views)
    names: RwLock<BTreeMap<String, NamespaceNames>>,
    open: Arc<OpenTables>,
}

/// Providers of the tables statements read, each with the version it was opened at.
#[derive(Debug, Default)]
struct OpenTables(Mutex<HashMap<TableName, OpenTable>>);

/// A table's provider and the version it reads.
type OpenTable = (u64, Arc<dyn TableProvider>);

/// More open tables than this and the cache starts over (a snapshot holds a table's file
/// list in memory).
const MAX_OPEN_TABLES: usize = 256;

impl OpenTables {
    fn get(&self, t: &TableName, version: u64) -> Option<Arc<dyn TableProvider>> {
        let open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        open.get(t)
            .filter(|(v, _)| *v == version)
            .map(|(_, p)| Arc::clone(p))
    }

    fn put(&self, t: TableName, version: u64, provider: Arc<dyn TableProvider>) {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= MAX_OPEN_TABLES && !open.contains_key(&t) {
            open.clear();
        }
        open.insert(t, (version, provider));
    }
}

impl LakeCatalog {
    pub(crate) fn new(lake: Lake, engine: Weak<EngineInner>) -> Self {
        Self {
            lake,
            engine,
            names: RwLock::new(BTreeMap::new()),
            open: Arc::default(),
        }
    }

    /// Re-reads the namespace and table names from the lake.
    pub(crate) async fn refresh(&self) -> strata_lake::Result<()> {
        let mut names: BTreeMap<String, NamespaceNames> = BTreeMap::new();
        for ns in self.lake.namespaces().await? {
            names.entry(ns).or_default();
        }
        for t in self.lake.tables(None).await? {
            names.entry(t.namespace).or_default().0.push(t.name);
        }
        for v in self.lake.view_stamps(None).await?.into_keys() {
            names.entry(v.namespace).or_default().1.push(v.name);
        }
        *self.names.write().unwrap_or_else(|e| e.into_inner()) = names;
        Ok(())
    }
}

impl CatalogProvider for LakeCatalog {
    fn schema_names(&self) -> Vec<String> {
        let guard = self.names.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = guard.keys().cloned().collect();
        if !names.iter().any(|n| n == crate::DEFAULT_NAMESPACE) {
            names.push(crate::DEFAULT_NAMESPACE.to_string());
            names.sort();
        }
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        strata_types::validate_identifier(name).ok()?;
        let cached = self
            .names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default();
        Some(Arc::new(LakeSchema {
            namespace: name.to_string(),
            lake: self.lake.clone(),
            engine: Weak::clone(&self.engine),
            tables: cached.0,
            views: cached.1,
            open: Arc::clone(&self.open),
        }))
    }
}

#[derive(Debug)]
struct LakeSchema {
    namespace: String,
    lake: Lake,
    engine: Weak<EngineInner>,
    tables: Vec<String>,
    views: Vec<String>,
    open: Arc<OpenTables>,
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tables.iter().chain(&self.views).cloned().collect();
        v.sort();
        v
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let Ok(t) = TableName::new(&self.namespace, name) else {
            return Ok(None);
        };
        let latest = self.lake.latest_version(&t).await.map_err(lake_err)?;
        if let Some(provider) = latest.and_then(|v| self.open.get(&t, v)) {
            if let Some(v) = latest {
                crate::views::record_table(&t, v);
            }
            return Ok(Some(provider));
        }
        if latest.is_some() || self.lake.table_exists(&t).await.map_err(lake_err)? {
            let table = self.lake.open_table(&t).await.map_err(lake_err)?;
            let provider = crate::provider::delta_provider(&table).await?;
            if let Some(version) = table.version() {
                crate::views::record_table(&t, version);
                self.open.put(t, version, Arc::clone(&provider));
            }
            return Ok(Some(provider));
        }
        if let Some(view) = self.lake.view(&t).await.map_err(lake_err)? {
            let Some(engine) = self.engine.upgrade() else {
                return Ok(None);
            };
            let plan = engine.plan_view(&view).await?;
            crate::views::record_view(&t);
            return Ok(Some(Arc::new(ViewTable::new(plan, Some(view.sql)))));
        }
        Ok(None)
    }

    async fn table_type(&self, name: &str) -> Result<Option<TableType>, DataFusionError> {
        if self.views.iter().any(|v| v == name) {
            return Ok(Some(TableType::View));
        }
        if self.tables.iter().any(|v| v == name) {
            return Ok(Some(TableType::Base));
        }
        Ok(self.table(name).await?.map(|t| t.table_type()))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.iter().chain(&self.views).any(|t| t == name)
    }
}

pub(crate) fn lake_err(e: strata_lake::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}
