//! The lake as a DataFusion catalog: namespaces are schemas, Delta tables and stored views
//! are tables.
//!
//! Tables are opened at their latest version each time a statement is planned, so commits
//! made by other processes are visible to the next statement without a restart. While no
//! commit landed, the provider opened before (its snapshot replayed from the log once) is used
//! again ([`OpenTables`]); checking that costs two metadata requests
//! ([`Lake::still_latest`]), not a listing of the log. The synchronous name listings
//! DataFusion needs (for `information_schema`, `SHOW TABLES`) come from a cache refreshed when
//! a session opens and after each DDL statement.
//!
//! Plans kept to run later (prepared statements) re-resolve their tables when they run:
//! [`scan_latest_when_run`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DataFusionError, TableReference};
use datafusion::datasource::{ViewTable, provider_as_source, source_as_provider};
use datafusion::logical_expr::{
    Expr, LogicalPlan, TableProviderFilterPushDown, TableScan, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use strata_lake::{CommitStamp, Lake, TableName};

use crate::engine::EngineInner;

/// Name of the catalog that holds the lake.
pub const CATALOG: &str = "strata";

/// (tables, views) of one namespace.
type NamespaceNames = (Vec<String>, Vec<String>);

#[derive(Debug)]
pub(crate) struct LakeCatalog {
    lake: Lake,
    engine: Weak<EngineInner>,
    /// namespace → (tables, views); shared with the schemas handed out (a kept plan resolves
    /// its table's schema on every run).
    names: RwLock<BTreeMap<String, Arc<NamespaceNames>>>,
    open: Arc<OpenTables>,
}

/// Providers of the tables statements read, each with the commit it was opened at.
#[derive(Debug, Default)]
struct OpenTables(Mutex<HashMap<TableName, OpenTable>>);

/// A table's provider, the version it reads, that version's commit file and data files.
type OpenTable = (
    u64,
    CommitStamp,
    Arc<dyn TableProvider>,
    Arc<crate::lookup::TableFiles>,
);

/// More open tables than this and the cache starts over (a snapshot holds a table's file
/// list in memory).
const MAX_OPEN_TABLES: usize = 256;

impl OpenTables {
    fn get(&self, t: &TableName) -> Option<OpenTable> {
        let open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        open.get(t).cloned()
    }

    fn put(&self, t: TableName, open_table: OpenTable) {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= MAX_OPEN_TABLES && !open.contains_key(&t) {
            open.clear();
        }
        open.insert(t, open_table);
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
        *self.names.write().unwrap_or_else(|e| e.into_inner()) =
            names.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
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
        Some(Arc::new(self.lake_schema(name)?))
    }
}

impl LakeCatalog {
    fn lake_schema(&self, name: &str) -> Option<LakeSchema> {
        strata_types::validate_identifier(name).ok()?;
        let cached = self
            .names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default();
        Some(LakeSchema {
            namespace: name.to_string(),
            lake: self.lake.clone(),
            engine: Weak::clone(&self.engine),
            names: cached,
            open: Arc::clone(&self.open),
        })
    }
}

#[derive(Debug)]
struct LakeSchema {
    namespace: String,
    lake: Lake,
    engine: Weak<EngineInner>,
    names: Arc<NamespaceNames>,
    open: Arc<OpenTables>,
}

impl LakeSchema {
    /// The Delta table `t` at its latest version with its data files, if it is a table.
    async fn lake_table(
        &self,
        t: &TableName,
    ) -> Result<Option<(Arc<dyn TableProvider>, Arc<crate::lookup::TableFiles>)>, DataFusionError>
    {
        if let Some((version, stamp, provider, files)) = self.open.get(t)
            && self
                .lake
                .still_latest(t, version, &stamp)
                .await
                .map_err(lake_err)?
        {
            crate::views::record_table(t, version);
            return Ok(Some((provider, files)));
        }
        let latest = self.lake.latest_commit(t).await.map_err(lake_err)?;
        if latest.is_none() && !self.lake.table_exists(t).await.map_err(lake_err)? {
            return Ok(None);
        }
        let table = self.lake.open_table(t).await.map_err(lake_err)?;
        let provider = crate::provider::delta_provider(&table).await?;
        let files = Arc::new(crate::lookup::TableFiles::of(t, &table));
        if let Some(version) = table.version() {
            crate::views::record_table(t, version);
            // Kept only when the stamp is that of the version opened (a commit may have
            // landed between the listing and the opening).
            if let Some((v, stamp)) = latest
                && v == version
            {
                self.open.put(
                    t.clone(),
                    (version, stamp, Arc::clone(&provider), Arc::clone(&files)),
                );
            }
        }
        Ok(Some((provider, files)))
    }
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.names.0.iter().chain(&self.names.1).cloned().collect();
        v.sort();
        v
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let Ok(t) = TableName::new(&self.namespace, name) else {
            return Ok(None);
        };
        if let Some((provider, _)) = self.lake_table(&t).await? {
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
        if self.names.1.iter().any(|v| v == name) {
            return Ok(Some(TableType::View));
        }
        if self.names.0.iter().any(|v| v == name) {
            return Ok(Some(TableType::Base));
        }
        Ok(self.table(name).await?.map(|t| t.table_type()))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.names.0.iter().chain(&self.names.1).any(|t| t == name)
    }
}

// ---------------------------------------------------------------------------------------------
// Plans kept to run later
// ---------------------------------------------------------------------------------------------

/// Makes a plan kept to run later (a server-side prepared statement) read each lake table at
/// the version that is latest when it runs, not the one it was planned against.
///
/// Scans of time-travel snapshots, views and tables the principal may only write are left
/// as they are. Columns added since planning are not read; a table whose planned columns
/// changed fails the run with `NotImplemented` (SQLSTATE 0A000, as PostgreSQL's "cached plan
/// must not change result type"): the client prepares the statement again.
pub(crate) fn scan_latest_when_run(
    catalog: &Arc<LakeCatalog>,
    plan: LogicalPlan,
) -> Result<LogicalPlan, DataFusionError> {
    plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::TableScan(scan) => latest_scan(catalog, scan),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

fn latest_scan(
    catalog: &Arc<LakeCatalog>,
    mut scan: TableScan,
) -> Result<Transformed<LogicalPlan>, DataFusionError> {
    let (catalog_name, namespace, name) = resolve_reference(&scan.table_name);
    let Ok(planned) = source_as_provider(&scan.source) else {
        return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
    };
    if catalog_name != CATALOG {
        // Time-travel snapshots and session tables: fixed by design.
        return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
    }
    if let Some(view) = planned.downcast_ref::<ViewTable>() {
        // A stored view, or the columns of a table a principal may read: the scans inside.
        let inner = scan_latest_when_run(catalog, view.logical_plan().clone())?;
        let view = ViewTable::new(inner, view.definition().cloned());
        scan.source = provider_as_source(Arc::new(view));
        return Ok(Transformed::yes(LogicalPlan::TableScan(scan)));
    }
    // Only Delta tables of the lake: not the catalog tables clients query (`pg_catalog`,
    // `information_schema`), nor a table the principal may only write (its scan must fail).
    let lake_table = planned.is::<deltalake::delta_datafusion::DeltaScanNext>();
    let table = match TableName::new(namespace, name) {
        Ok(t) if lake_table => t,
        _ => return Ok(Transformed::no(LogicalPlan::TableScan(scan))),
    };
    scan.source = provider_as_source(Arc::new(Latest {
        catalog: Arc::clone(catalog),
        table,
        planned,
    }));
    Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
}

/// A lake table resolved again each time a scan of it runs.
#[derive(Debug)]
pub(crate) struct Latest {
    catalog: Arc<LakeCatalog>,
    pub(crate) table: TableName,
    /// The provider the plan was made with: its schema is the one the plan expects.
    planned: Arc<dyn TableProvider>,
}

impl Latest {
    async fn resolve(&self) -> Result<Arc<dyn TableProvider>, DataFusionError> {
        Ok(self.resolve_with_files().await?.0)
    }

    /// The table's provider at its latest version, and that version's data files.
    pub(crate) async fn resolve_with_files(
        &self,
    ) -> Result<(Arc<dyn TableProvider>, Arc<crate::lookup::TableFiles>), DataFusionError> {
        let t = &self.table;
        let gone = || {
            DataFusionError::Plan(format!(
                "table `{t}` does not exist any more; it was dropped after this statement was prepared"
            ))
        };
        let schema = self.catalog.lake_schema(&t.namespace).ok_or_else(gone)?;
        let (current, files) = schema.lake_table(t).await?.ok_or_else(gone)?;
        let (was, now) = (self.planned.schema(), current.schema());
        if !starts_with_columns(&now, &was) {
            return Err(DataFusionError::NotImplemented(format!(
                "the columns of `{t}` changed after this statement was prepared; prepare it again"
            )));
        }
        Ok((current, files))
    }
}

/// Whether `now` begins with the columns of `was`, alike in name, type and nullability: a
/// plan made against `was` reads the same columns at the same positions.
fn starts_with_columns(now: &SchemaRef, was: &SchemaRef) -> bool {
    now.fields().len() >= was.fields().len()
        && was.fields().iter().zip(now.fields().iter()).all(|(x, y)| {
            x.name() == y.name()
                && x.data_type() == y.data_type()
                && x.is_nullable() == y.is_nullable()
        })
}

#[async_trait]
impl TableProvider for Latest {
    fn schema(&self) -> SchemaRef {
        self.planned.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>, DataFusionError> {
        self.planned.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let current = self.resolve().await?;
        let planned_columns = self.planned.schema().fields().len();
        if projection.is_none() && current.schema().fields().len() > planned_columns {
            // Columns added since planning: the plan reads the ones it knows.
            let known: Vec<usize> = (0..planned_columns).collect();
            return current.scan(state, Some(&known), filters, limit).await;
        }
        current.scan(state, projection, filters, limit).await
    }
}

/// (catalog, schema, table) of `r` in a session whose defaults are the lake catalog and the
/// `public` namespace.
pub(crate) fn resolve_reference(r: &TableReference) -> (&str, &str, &str) {
    match r {
        TableReference::Bare { table } => (CATALOG, crate::DEFAULT_NAMESPACE, table.as_ref()),
        TableReference::Partial { schema, table } => (CATALOG, schema.as_ref(), table.as_ref()),
        TableReference::Full {
            catalog,
            schema,
            table,
        } => (catalog.as_ref(), schema.as_ref(), table.as_ref()),
    }
}

pub(crate) fn lake_err(e: strata_lake::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}
