//! [`Engine`] (one per process: memory pool, spill directory, catalog) and [`Session`] (one
//! per user or connection: plans and runs statements).

use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::common::{DataFusionError, TableReference};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DdlStatement, DmlStatement, LogicalPlan, WriteOp};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{self, Statement as SqlStatement};
use futures::TryStreamExt;
use strata_lake::{Lake, TableName, ViewDef, WriteMode, WriteOptions};
use strata_project::EngineSettings;

use crate::access::{Access, AccessPolicy, Principal, Privilege};
use crate::catalog::{CATALOG, LakeCatalog};
use crate::dialect::StrataDialect;
use crate::{DEFAULT_NAMESPACE, Error, Result, dml, time_travel};

/// Catalog holding per-statement time-travel snapshots.
pub(crate) const SNAPSHOT_CATALOG: &str = "strata_snapshots";

/// The query engine of one process.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) lake: Lake,
    settings: EngineSettings,
    runtime: Arc<RuntimeEnv>,
    catalog: Arc<LakeCatalog>,
    /// The context stored views are planned in (views see the lake, not a session's state).
    view_context: OnceLock<SessionContext>,
    /// Plans of stored views, reused while their definitions and tables are unchanged.
    view_plans: crate::views::ViewPlans,
    /// Footers and decoded pages of the files point lookups read.
    lookup_cache: Arc<crate::lookup::FileCache>,
}

impl std::fmt::Debug for EngineInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineInner")
            .field("lake", &self.lake)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a statement produced.
pub enum StatementResult {
    /// Rows, streamed.
    Rows {
        /// Their schema.
        schema: SchemaRef,
        /// The batches.
        stream: SendableRecordBatchStream,
    },
    /// A command's completion: `CREATE TABLE`, `INSERT 0 42`…
    Done {
        /// What was done, in the style of a Postgres command tag.
        tag: String,
        /// Rows affected, where that means something.
        rows: Option<u64>,
    },
}

impl std::fmt::Debug for StatementResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatementResult::Rows { schema, .. } => {
                f.debug_struct("Rows").field("schema", schema).finish()
            }
            StatementResult::Done { tag, rows } => f
                .debug_struct("Done")
                .field("tag", tag)
                .field("rows", rows)
                .finish(),
        }
    }
}

impl Engine {
    /// Builds the engine over `lake` with the project's engine settings.
    pub async fn new(lake: Lake, settings: &EngineSettings) -> Result<Self> {
        let mut rt = RuntimeEnvBuilder::new();
        if let Some(limit) = settings.memory_limit {
            let pool = TrackConsumersPool::new(
                FairSpillPool::new(limit as usize),
                NonZeroUsize::new(5).expect("5 is not zero"),
            );
            rt = rt.with_memory_pool(Arc::new(pool));
        }
        std::fs::create_dir_all(&settings.spill_dir).map_err(|e| {
            Error::Invalid(format!(
                "cannot create the spill directory {}: {e}",
                settings.spill_dir.display()
            ))
        })?;
        rt = rt.with_disk_manager_builder(DiskManagerBuilder::default().with_mode(
            DiskManagerMode::Directories(vec![settings.spill_dir.clone()]),
        ));
        let runtime = rt.build_arc()?;
        crate::provider::register_lake_store(&lake, &runtime)?;
        let inner = Arc::new_cyclic(|weak| EngineInner {
            catalog: Arc::new(LakeCatalog::new(lake.clone(), std::sync::Weak::clone(weak))),
            lake,
            settings: settings.clone(),
            runtime,
            view_context: OnceLock::new(),
            view_plans: Default::default(),
            lookup_cache: Arc::default(),
        });
        inner.catalog.refresh().await?;
        Ok(Self { inner })
    }

    /// The lake this engine reads and writes.
    pub fn lake(&self) -> &Lake {
        &self.inner.lake
    }

    /// Makes `plan`, kept to run later (a server-side prepared statement), read each lake
    /// table at its latest version when it runs rather than the version it was planned
    /// against. A table whose columns changed in between fails the run with an error that
    /// asks to prepare the statement again (SQLSTATE 0A000).
    pub fn scan_latest_when_run(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
    ) -> Result<datafusion::logical_expr::LogicalPlan> {
        Ok(crate::catalog::scan_latest_when_run(
            &self.inner.catalog,
            plan,
        )?)
    }

    /// Opens a session with every right: for the project's own commands (`strata run`,
    /// `strata sql` on the command line), never for a remote client.
    pub async fn session(&self) -> Result<Session> {
        self.inner.catalog.refresh().await?;
        Ok(Session {
            ctx: self.inner.new_context(None),
            engine: Arc::clone(&self.inner),
            access: None,
        })
    }

    /// Opens a session for `principal` under `policy`: it sees, reads and writes only what
    /// the policy grants, with row policies and column masks applied in every plan (see
    /// [`crate::access`]).
    pub async fn session_for(
        &self,
        principal: Principal,
        policy: Arc<AccessPolicy>,
    ) -> Result<Session> {
        self.inner.catalog.refresh().await?;
        let access = Arc::new(Access::new(principal, policy));
        Ok(Session {
            ctx: self.inner.new_context(Some(&access)),
            engine: Arc::clone(&self.inner),
            access: Some(access),
        })
    }
}

impl EngineInner {
    pub(crate) fn new_context(&self, access: Option<&Arc<Access>>) -> SessionContext {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(self.settings.target_partitions)
            .with_batch_size(self.settings.batch_size)
            .with_default_catalog_and_schema(CATALOG, DEFAULT_NAMESPACE)
            .with_create_default_catalog_and_schema(false)
            .set_bool("datafusion.execution.parquet.schema_force_view_types", true)
            // Source positions in plans, so that planning errors (an unknown column, a
            // missing GROUP BY entry) say where in the SQL they are.
            .set_bool("datafusion.sql_parser.collect_spans", true)
            // Hash-join IN-list pushdown can panic on dictionary-encoded keys (seen with Delta
            // partition columns); hash lookups are as fast for our sizes.
            .set_usize("datafusion.optimizer.hash_join_inlist_pushdown_max_size", 0)
            .set_usize(
                "datafusion.optimizer.hash_join_inlist_pushdown_max_distinct_values",
                0,
            );
        let config = match self.settings.memory_limit {
            // Each sorting partition reserves memory for its final merge up front (10 MB by
            // default); with a small limit that reservation alone would exhaust the pool.
            Some(limit) => config.set_usize(
                "datafusion.execution.sort_spill_reservation_bytes",
                (limit as usize / (self.settings.target_partitions * 8)).clamp(256 << 10, 10 << 20),
            ),
            None => config,
        };
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::clone(&self.runtime))
            .with_default_features()
            // Delta's writers plan custom nodes (metrics observers) that need its planner.
            .with_query_planner(deltalake::delta_datafusion::planner::DeltaPlanner::new())
            // Masks and other shown values computed after `ORDER BY … LIMIT`, not before.
            .with_optimizer_rule(Arc::new(crate::late::ProjectAfterTopK));
        let secured = access.filter(|a| !a.principal().superuser);
        let mut rules = datafusion::optimizer::Analyzer::new().rules;
        rules.insert(0, Arc::new(crate::compat::LikeEscapeRule));
        if let Some(access) = secured {
            // Row policies and masks are added to scans before types are coerced, so the
            // expressions they add are coerced like the user's own.
            let parser = self.new_context(None);
            for f in crate::access::principal_functions(access.principal()) {
                parser.register_udf(f);
            }
            let rule = Arc::new(crate::access::PolicyRule {
                access: Arc::clone(access),
                parser: Arc::new(parser.state()),
            });
            let at = rules
                .iter()
                .position(|r| r.name() == "type_coercion")
                .unwrap_or(rules.len());
            rules.insert(at, rule);
        }
        builder = builder.with_analyzer_rules(rules);
        let state = builder.build();
        let mut ctx = SessionContext::new_with_state(state);
        // Files on the server's disk are reachable only from unsecured (local) sessions.
        if secured.is_none() {
            ctx = ctx.enable_url_table();
        }
        crate::compat::register(&ctx);
        if let Some(access) = access {
            for f in crate::access::principal_functions(access.principal()) {
                ctx.register_udf(f);
            }
        }
        // A principal's session (a superuser's too) gets a catalog of its own.
        let catalog: Arc<dyn CatalogProvider> = match access {
            Some(access) => Arc::new(crate::access::SecuredCatalog::new(
                Arc::clone(&self.catalog) as Arc<dyn CatalogProvider>,
                Arc::clone(access),
            )),
            None => Arc::clone(&self.catalog) as Arc<dyn CatalogProvider>,
        };
        ctx.register_catalog(CATALOG, catalog);
        ctx
    }

    /// Registers the catalog of time-travel snapshots in `ctx` on first use, so that
    /// sessions which never travel (and the listings their clients read) do not see it.
    pub(crate) fn ensure_snapshot_catalog(ctx: &SessionContext) {
        if ctx.catalog(SNAPSHOT_CATALOG).is_some() {
            return;
        }
        let snapshots = MemoryCatalogProvider::new();
        snapshots
            .register_schema("v", Arc::new(MemorySchemaProvider::new()))
            .expect("a new memory catalog accepts schemas");
        ctx.register_catalog(SNAPSHOT_CATALOG, Arc::new(snapshots));
    }

    /// Plans a stored view's query. Views may read other views: a chain of them is planned
    /// once and its plan reused by every later statement until a definition in it changes
    /// or one of the tables beneath it gets a new version.
    pub(crate) async fn plan_view(&self, view: &ViewDef) -> Result<LogicalPlan, DataFusionError> {
        if let Some(plan) = self.view_plans.get(&self.lake, view).await {
            return Ok(plan);
        }
        let ctx = self.view_context.get_or_init(|| self.new_context(None));
        let (planned, deps) = crate::views::collecting_dependencies(ctx.sql(&view.sql)).await;
        let plan = planned
            .map_err(|e| {
                DataFusionError::Plan(format!(
                    "view `{}` no longer plans: {e}. Fix or drop it with `DROP VIEW {}`",
                    view.name, view.name
                ))
            })?
            .into_unoptimized_plan();
        self.view_plans.insert(view, &plan, deps);
        Ok(plan)
    }
}

/// A SQL session: one user's (or connection's) settings and statements.
#[derive(Clone)]
pub struct Session {
    ctx: SessionContext,
    engine: Arc<EngineInner>,
    access: Option<Arc<Access>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// The DataFusion context (for embedding and tests).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The lake.
    pub fn lake(&self) -> &Lake {
        &self.engine.lake
    }

    /// The lookup that answers `plan` (a statement kept to run many times, its parameters
    /// unbound) by reading only the pages that can hold its key, if `plan` is a key lookup on
    /// one lake table. The session's row policies and column masks are part of it.
    pub fn key_lookup(&self, plan: &LogicalPlan) -> Option<crate::lookup::KeyLookup> {
        crate::lookup::KeyLookup::of(
            plan,
            &self.ctx.state(),
            crate::lookup::Store {
                store: self.engine.lake.store(),
                local_root: self.engine.lake.local_root(),
            },
            Arc::clone(&self.engine.lookup_cache),
        )
    }

    /// The principal's access, for a session opened with [`Engine::session_for`].
    pub fn access(&self) -> Option<&Arc<Access>> {
        self.access.as_ref()
    }

    /// Refuses unless the session may use `privilege` on `t` (always true for an
    /// unsecured session).
    pub(crate) fn require(&self, privilege: Privilege, t: &TableName) -> Result<()> {
        match &self.access {
            Some(a) => a.require(privilege, t),
            None => Ok(()),
        }
    }

    /// Refuses unless the session may create in namespace `ns`.
    fn require_namespace(&self, privilege: Privilege, ns: &str) -> Result<()> {
        match &self.access {
            Some(a) => a.require_namespace(privilege, ns),
            None => Ok(()),
        }
    }

    /// Refuses unless the session is unsecured or a superuser's.
    fn require_superuser(&self, what: &str) -> Result<()> {
        match &self.access {
            Some(a) => a.require_superuser(what),
            None => Ok(()),
        }
    }

    /// Splits a script into statements.
    pub fn parse(&self, sql: &str) -> Result<Vec<DFStatement>> {
        let stmts = DFParser::parse_sql_with_dialect(sql, &StrataDialect::default())
            .map_err(Error::from)?;
        stmts.into_iter().map(crate::compat::rewrite).collect()
    }

    /// Runs every statement of `sql` and returns the result of the last one, with the rows
    /// of a final query collected. Convenient for scripts and tests.
    pub async fn sql(&self, sql: &str) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        let mut last = Vec::new();
        for stmt in self.parse(sql)? {
            last = match self.execute(stmt).await? {
                StatementResult::Rows { stream, .. } => {
                    datafusion::physical_plan::common::collect(stream).await?
                }
                StatementResult::Done { .. } => Vec::new(),
            };
        }
        Ok(last)
    }

    /// Executes one statement.
    pub async fn execute(&self, stmt: DFStatement) -> Result<StatementResult> {
        let mut stmt = stmt;
        if let DFStatement::Statement(s) = &mut stmt {
            match s.as_mut() {
                SqlStatement::Update(u) => return dml::update(self, u).await,
                SqlStatement::Delete(d) => return dml::delete(self, d).await,
                SqlStatement::Merge(m) => return dml::merge(self, m).await,
                SqlStatement::Truncate(t) => return dml::truncate(self, t).await,
                SqlStatement::AlterTable(a) => return dml::alter_table(self, a).await,
                _ => {}
            }
        }
        if let DFStatement::CreateExternalTable(_) = &stmt {
            return Err(Error::Unsupported(
                "CREATE EXTERNAL TABLE is not supported; query files directly (`SELECT * FROM 'data/*.parquet'`) or load them with `CREATE TABLE raw.t AS SELECT * FROM 'file.csv'`".into(),
            ));
        }
        let snapshots = time_travel::pin_versions(self, &mut stmt).await?;
        let result = self.execute_planned(stmt).await;
        snapshots.release(&self.ctx);
        result
    }

    async fn execute_planned(&self, stmt: DFStatement) -> Result<StatementResult> {
        let state = self.ctx.state();
        let (planned, deps) =
            crate::views::collecting_dependencies(state.statement_to_plan(stmt)).await;
        let plan = match planned {
            Ok(p) => p,
            Err(e) => return Err(self.explain_plan_error(e).await),
        };
        match plan {
            LogicalPlan::Ddl(ddl) => self.ddl(ddl, &deps).await,
            LogicalPlan::Dml(DmlStatement {
                table_name,
                op: WriteOp::Insert(op),
                input,
                ..
            }) => {
                let t = self.table_name(&table_name)?;
                self.require(
                    match op {
                        InsertOp::Overwrite => Privilege::All,
                        _ => Privilege::Insert,
                    },
                    &t,
                )?;
                let mode = match op {
                    InsertOp::Append => WriteMode::Append,
                    InsertOp::Overwrite => WriteMode::Overwrite,
                    InsertOp::Replace => {
                        return Err(Error::Unsupported(
                            "REPLACE INTO is not supported; use MERGE INTO".into(),
                        ));
                    }
                };
                let out = self
                    .engine
                    .lake
                    .write_plan(
                        &t,
                        input.as_ref().clone(),
                        self.session_state(),
                        mode,
                        &WriteOptions::default(),
                    )
                    .await?;
                Ok(StatementResult::Done {
                    tag: format!("INSERT 0 {}", out.rows),
                    rows: Some(out.rows),
                })
            }
            LogicalPlan::Dml(other) => Err(Error::Unsupported(format!(
                "{} is not supported here",
                other.op
            ))),
            plan => {
                let df = self.ctx.execute_logical_plan(plan).await?;
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let task = Arc::new(df.task_ctx());
                let physical = df.create_physical_plan().await?;
                // Nothing runs until the first row is asked for: a caller that only wants the
                // schema (Flight SQL's GetFlightInfo) starts no work.
                let rows = futures::stream::once(async move {
                    datafusion::physical_plan::execute_stream(physical, task)
                })
                .try_flatten();
                let stream = Box::pin(
                    datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                        Arc::clone(&schema),
                        rows,
                    ),
                );
                Ok(StatementResult::Rows { schema, stream })
            }
        }
    }

    /// Turns DataFusion's "table 'strata.ns.t' not found" into the lake's message, which
    /// suggests the closest existing table.
    async fn explain_plan_error(&self, e: DataFusionError) -> Error {
        if self.access.is_some() {
            // No "did you mean": the hint would list tables the principal may not see.
            return e.into();
        }
        let msg = e.find_root().to_string();
        if let Some(start) = msg.find("table '")
            && let Some(rest) = msg.get(start + 7..)
            && let Some(end) = rest.find("' not found")
        {
            let full = &rest[..end];
            let path = full
                .strip_prefix(&format!("{CATALOG}.{DEFAULT_NAMESPACE}."))
                .unwrap_or(full);
            let looks_like_file = path.contains('/')
                || [
                    ".csv", ".parquet", ".json", ".ndjson", ".tsv", ".avro", ".arrow",
                ]
                .iter()
                .any(|ext| path.to_ascii_lowercase().contains(ext));
            if looks_like_file {
                return Error::Invalid(format!(
                    "no file matches `{path}` (relative paths start at the current directory; globs like 'data/*.parquet' are allowed)"
                ));
            }
            let parts: Vec<&str> = full.split('.').collect();
            let r = match parts.as_slice() {
                [t] => TableReference::bare(*t),
                [s, t] => TableReference::partial(*s, *t),
                [c, s, t] => TableReference::full(*c, *s, *t),
                _ => return e.into(),
            };
            if let Ok(t) = self.table_name(&r) {
                return self.engine.lake.not_found(&t).await.into();
            }
        }
        e.into()
    }

    pub(crate) fn session_state(&self) -> Arc<dyn datafusion::catalog::Session> {
        Arc::new(self.ctx.state())
    }

    /// Resolves a (possibly partial) SQL table reference to a lake table.
    pub(crate) fn table_name(&self, r: &TableReference) -> Result<TableName> {
        match r {
            TableReference::Bare { table } => Ok(TableName::new(DEFAULT_NAMESPACE, table)?),
            TableReference::Partial { schema, table } => Ok(TableName::new(schema, table)?),
            TableReference::Full {
                catalog,
                schema,
                table,
            } => {
                if catalog.as_ref() != CATALOG {
                    return Err(Error::Invalid(format!(
                        "catalog `{catalog}` is not writable; tables live in `{CATALOG}`"
                    )));
                }
                Ok(TableName::new(schema, table)?)
            }
        }
    }

    /// Resolves an AST object name (`t`, `ns.t`, `strata.ns.t`).
    pub(crate) fn object_name(&self, name: &ast::ObjectName) -> Result<TableName> {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| match p.as_ident() {
                Some(i) if i.quote_style.is_some() => i.value.clone(),
                Some(i) => i.value.to_ascii_lowercase(),
                None => p.to_string(),
            })
            .collect();
        let r = match parts.as_slice() {
            [t] => TableReference::bare(t.as_str()),
            [s, t] => TableReference::partial(s.as_str(), t.as_str()),
            [c, s, t] => TableReference::full(c.as_str(), s.as_str(), t.as_str()),
            _ => return Err(Error::Invalid(format!("`{name}` is not a table name"))),
        };
        self.table_name(&r)
    }

    /// Creating `t` needs CREATE on its namespace; replacing an existing table or view
    /// also needs ALL on it.
    async fn require_create(&self, t: &TableName) -> Result<()> {
        if self.access.is_none() {
            return Ok(());
        }
        self.require_namespace(Privilege::Create, &t.namespace)?;
        let lake = &self.engine.lake;
        if lake.table_exists(t).await? || lake.view(t).await?.is_some() {
            self.require(Privilege::All, t)?;
        }
        Ok(())
    }

    async fn refresh(&self) -> Result<()> {
        self.engine.catalog.refresh().await?;
        Ok(())
    }

    async fn ddl(
        &self,
        ddl: DdlStatement,
        deps: &crate::views::Dependencies,
    ) -> Result<StatementResult> {
        let lake = &self.engine.lake;
        let result = match ddl {
            DdlStatement::CreateMemoryTable(c) => {
                let t = self.table_name(&c.name)?;
                self.require_create(&t).await?;
                if c.temporary {
                    return Err(Error::Unsupported(
                        "temporary tables are not supported; create a table in a scratch namespace and drop it".into(),
                    ));
                }
                let exists = lake.table_exists(&t).await?;
                if exists && c.if_not_exists {
                    return Ok(StatementResult::Done {
                        tag: "CREATE TABLE".into(),
                        rows: None,
                    });
                }
                if exists && !c.or_replace {
                    return Err(strata_lake::Error::TableExists(t).into());
                }
                let is_ctas = !matches!(c.input.as_ref(), LogicalPlan::EmptyRelation(e) if !e.produce_one_row);
                // CREATE OR REPLACE swaps rows and columns in one commit: readers (and a
                // crash at any instant) see the old table or the new one, never neither.
                let (mode, opts) = if exists {
                    (
                        WriteMode::Overwrite,
                        WriteOptions {
                            replace_schema: true,
                            ..Default::default()
                        },
                    )
                } else {
                    (WriteMode::Create, WriteOptions::default())
                };
                if is_ctas {
                    let out = lake
                        .write_plan(
                            &t,
                            c.input.as_ref().clone(),
                            self.session_state(),
                            mode,
                            &opts,
                        )
                        .await?;
                    StatementResult::Done {
                        tag: format!("SELECT {}", out.rows),
                        rows: Some(out.rows),
                    }
                } else {
                    let schema: SchemaRef =
                        Arc::new(Schema::new(c.input.schema().as_arrow().fields().clone()));
                    if exists {
                        lake.write_batches(
                            &t,
                            vec![datafusion::arrow::array::RecordBatch::new_empty(schema)],
                            mode,
                            &opts,
                        )
                        .await?;
                    } else {
                        lake.create_table(&t, &schema, &[], None, c.if_not_exists)
                            .await?;
                    }
                    StatementResult::Done {
                        tag: "CREATE TABLE".into(),
                        rows: None,
                    }
                }
            }
            DdlStatement::CreateView(v) => {
                let t = self.table_name(&v.name)?;
                self.require_create(&t).await?;
                if v.temporary {
                    return Err(Error::Unsupported(
                        "temporary views are not supported".into(),
                    ));
                }
                let Some(definition) = v.definition else {
                    return Err(Error::Invalid("CREATE VIEW without a query".into()));
                };
                let query = view_query_text(&definition);
                // The query was planned through the views it reads: it would form a cycle
                // only if it reaches the view being defined. The definitions are walked
                // again (for the message) only then.
                let reaches_itself = self
                    .engine
                    .view_plans
                    .reachable_views(deps)
                    .is_none_or(|reached| reached.contains(&t));
                if reaches_itself {
                    crate::views::check_no_cycle(self, &t, &query).await?;
                }
                lake.put_view(&t, &query, v.or_replace).await?;
                StatementResult::Done {
                    tag: "CREATE VIEW".into(),
                    rows: None,
                }
            }
            DdlStatement::CreateCatalogSchema(s) => {
                self.require_superuser("create namespaces")?;
                let name = s
                    .schema_name
                    .rsplit('.')
                    .next()
                    .unwrap_or(&s.schema_name)
                    .to_string();
                let exists = lake.namespaces().await?.contains(&name);
                if exists && !s.if_not_exists {
                    return Err(Error::Invalid(format!("schema `{name}` already exists")));
                }
                lake.create_namespace(&name).await?;
                StatementResult::Done {
                    tag: "CREATE SCHEMA".into(),
                    rows: None,
                }
            }
            DdlStatement::DropTable(d) => {
                let t = self.table_name(&d.name)?;
                self.require(Privilege::All, &t)?;
                if lake.view(&t).await?.is_some() {
                    return Err(strata_lake::Error::IsAView(t, "use DROP VIEW").into());
                }
                if d.if_exists && !lake.table_exists(&t).await? {
                    return Ok(StatementResult::Done {
                        tag: "DROP TABLE".into(),
                        rows: None,
                    });
                }
                lake.drop_table(&t).await?;
                StatementResult::Done {
                    tag: "DROP TABLE".into(),
                    rows: None,
                }
            }
            DdlStatement::DropView(d) => {
                let t = self.table_name(&d.name)?;
                self.require(Privilege::All, &t)?;
                if !lake.drop_view(&t).await? && !d.if_exists {
                    return Err(strata_lake::Error::ViewNotFound(t).into());
                }
                StatementResult::Done {
                    tag: "DROP VIEW".into(),
                    rows: None,
                }
            }
            DdlStatement::DropCatalogSchema(d) => {
                self.require_superuser("drop namespaces")?;
                let name = d.name.schema_name().to_string();
                let existed = lake.drop_namespace(&name, d.cascade).await?;
                if !existed && !d.if_exists {
                    return Err(Error::Invalid(format!("schema `{name}` does not exist")));
                }
                StatementResult::Done {
                    tag: "DROP SCHEMA".into(),
                    rows: None,
                }
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "{} is not supported",
                    other.name()
                )));
            }
        };
        self.refresh().await?;
        Ok(result)
    }
}

/// `CREATE [OR REPLACE] VIEW v AS <query>` → `<query>`.
fn view_query_text(definition: &str) -> String {
    if let Ok(stmts) = DFParser::parse_sql_with_dialect(definition, &StrataDialect::default())
        && let Some(DFStatement::Statement(s)) = stmts.front()
        && let SqlStatement::CreateView(cv) = s.as_ref()
    {
        return cv.query.to_string();
    }
    definition.to_string()
}
