//! Access control: who may read and write what, and what they see when they read.
//!
//! A [`Session`](crate::Session) opened with [`Engine::session_for`](crate::Engine::session_for)
//! carries an [`Access`]: the [`Principal`] and the [`AccessPolicy`] in force. It is enforced
//! inside the session's DataFusion context, so every surface that plans SQL on the session
//! (pgwire, Flight SQL, REST, the CLI) gets the same answer:
//!
//! - **Names.** The session's catalog lists and resolves only the namespaces and tables the
//!   principal holds a privilege on. Anything else is "does not exist or is not granted",
//!   whether it exists or not, so names do not leak. A table granted only for some columns
//!   shows only those columns; a table granted only for writing resolves (for `INSERT`,
//!   `UPDATE`…) but refuses to be read.
//! - **Rows and values.** An analyzer rule rewrites every scan of a lake table, including the
//!   scans inside stored views, into `Projection(masks) ← Filter(row policies) ← Scan`, so
//!   joins, predicates and aggregates all see filtered rows and masked values. A table with
//!   row policies shows no rows to a principal none of them applies to (default deny).
//! - **Writes.** DDL and DML run through Strata's own statements, which check the privilege
//!   on the target; plans that would write by any other path (`COPY … TO`, DataFusion's own
//!   DML) are refused for everyone but superusers. Files (`SELECT * FROM 'x.csv'`) are not
//!   reachable from a secured session.
//!
//! Stored views run with their definer's rights: a grant on a view is enough to read it, but
//! the masks and row policies of the tables beneath it still apply.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session as CatalogSession};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, DataFusionError, ScalarValue, TableReference};
use datafusion::datasource::{TableProvider, ViewTable, provider_as_source};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown, TableScan,
    TableType, Volatility, cast, create_udf, lit,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_plan::ExecutionPlan;
use strata_lake::TableName;

use crate::catalog::CATALOG;
use crate::engine::SNAPSHOT_CATALOG;
use crate::{Error, Result};

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Privilege {
    /// Read rows.
    Select,
    /// Add rows.
    Insert,
    /// Change rows.
    Update,
    /// Remove rows (also `TRUNCATE`).
    Delete,
    /// Create tables and views in a namespace.
    Create,
    /// See a namespace.
    Usage,
    /// Everything, including replacing, altering and dropping.
    All,
}

impl Privilege {
    /// The SQL keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::Select => "SELECT",
            Privilege::Insert => "INSERT",
            Privilege::Update => "UPDATE",
            Privilege::Delete => "DELETE",
            Privilege::Create => "CREATE",
            Privilege::Usage => "USAGE",
            Privilege::All => "ALL",
        }
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Privilege {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_uppercase().as_str() {
            "SELECT" => Privilege::Select,
            "INSERT" => Privilege::Insert,
            "UPDATE" => Privilege::Update,
            "DELETE" => Privilege::Delete,
            "CREATE" => Privilege::Create,
            "USAGE" => Privilege::Usage,
            "ALL" | "ALL PRIVILEGES" => Privilege::All,
            other => {
                return Err(Error::Invalid(format!(
                    "`{other}` is not a privilege; use SELECT, INSERT, UPDATE, DELETE, CREATE, USAGE or ALL"
                )));
            }
        })
    }
}

/// What a grant is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Securable {
    /// Every table and view of a namespace.
    Namespace(String),
    /// One table or view.
    Table(TableName),
}

/// One grant: `privilege` on `on` (for `columns` only, when given) to `grantee`, a user or
/// a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRule {
    /// What it allows.
    pub privilege: Privilege,
    /// On what.
    pub on: Securable,
    /// Only these columns (`SELECT` on a table); `None` for all.
    pub columns: Option<Vec<String>>,
    /// To whom: a user or role name.
    pub grantee: String,
}

/// A row policy: rows of `table` that satisfy `predicate` (SQL over the table's columns;
/// `current_user()` and `current_user_attribute('key')` are available) are visible to
/// `applies_to` (a user, a role, or `*` for everyone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFilter {
    /// The table.
    pub table: TableName,
    /// The policy's name.
    pub name: String,
    /// The SQL predicate.
    pub predicate: String,
    /// Who it applies to.
    pub applies_to: String,
}

/// How a masked column's values are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskKind {
    /// `****` for text; NULL for other types.
    Full,
    /// NULL.
    Null,
    /// The SHA-256 of the value, in hex (text columns).
    Hash,
    /// `a***@example.com`: the first character and the domain.
    Email,
    /// Keeps the first `keep_start` and last `keep_end` characters, stars the other letters
    /// and digits and keeps separators: `***.***.***-12` for a CPF with `partial(0,2)`.
    Partial {
        /// Characters kept at the start.
        keep_start: usize,
        /// Characters kept at the end.
        keep_end: usize,
    },
    /// Any SQL expression over the table's columns.
    Expr(String),
}

impl FromStr for MaskKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if let Some(sql) = t.strip_prefix("expr:") {
            return Ok(MaskKind::Expr(sql.trim().to_string()));
        }
        let lower = t.to_ascii_lowercase();
        if let Some(args) = lower
            .strip_prefix("partial(")
            .and_then(|r| r.strip_suffix(')'))
        {
            let parts: Vec<_> = args.split(',').map(|p| p.trim().parse::<usize>()).collect();
            if let [Ok(keep_start), Ok(keep_end)] = parts.as_slice() {
                return Ok(MaskKind::Partial {
                    keep_start: *keep_start,
                    keep_end: *keep_end,
                });
            }
        }
        Ok(match lower.as_str() {
            "full" => MaskKind::Full,
            "null" => MaskKind::Null,
            "hash" => MaskKind::Hash,
            "email" => MaskKind::Email,
            _ => {
                return Err(Error::Invalid(format!(
                    "`{t}` is not a mask; use full, null, hash, email, partial(<keep start>,<keep end>) or expr:<sql>"
                )));
            }
        })
    }
}

/// A column mask: `column` of `table` is shown through `kind` to everyone not in `exempt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMask {
    /// The table.
    pub table: TableName,
    /// The column.
    pub column: String,
    /// How values are shown.
    pub kind: MaskKind,
    /// Users and roles who see clear values.
    pub exempt: Vec<String>,
}

/// The grants, row policies and masks in force.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// Grants.
    pub grants: Vec<GrantRule>,
    /// Row policies.
    pub row_filters: Vec<RowFilter>,
    /// Column masks.
    pub masks: Vec<ColumnMask>,
}

/// Who is asking.
#[derive(Debug, Clone, Default)]
pub struct Principal {
    /// The user's name.
    pub name: String,
    /// Every role the user belongs to, directly or through other roles.
    pub roles: BTreeSet<String>,
    /// Attributes row policies can read (`current_user_attribute('region')`).
    pub attributes: BTreeMap<String, String>,
    /// Superusers bypass grants, policies and masks.
    pub superuser: bool,
}

impl Principal {
    /// Whether a grant, policy or exemption naming `who` covers this principal.
    pub fn is(&self, who: &str) -> bool {
        who == "*" || who == self.name || self.roles.contains(who)
    }
}

/// A principal under a policy: the checks a secured session makes.
#[derive(Debug)]
pub struct Access {
    principal: Principal,
    policy: Arc<AccessPolicy>,
    /// Time-travel snapshots registered by the session, by their registered name.
    snapshots: Mutex<HashMap<String, TableName>>,
}

impl Access {
    /// `principal` under `policy`.
    pub fn new(principal: Principal, policy: Arc<AccessPolicy>) -> Self {
        Self {
            principal,
            policy,
            snapshots: Mutex::new(HashMap::new()),
        }
    }

    /// The principal.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    fn grants_on<'a>(&'a self, t: &'a TableName) -> impl Iterator<Item = &'a GrantRule> + 'a {
        self.policy.grants.iter().filter(move |g| {
            self.principal.is(&g.grantee)
                && match &g.on {
                    Securable::Namespace(ns) => ns == &t.namespace,
                    Securable::Table(x) => x == t,
                }
        })
    }

    /// Whether the principal holds `privilege` on the whole of table or view `t`.
    pub fn allows(&self, privilege: Privilege, t: &TableName) -> bool {
        self.principal.superuser
            || self.grants_on(t).any(|g| {
                (g.privilege == privilege || g.privilege == Privilege::All) && g.columns.is_none()
            })
    }

    /// Whether the principal holds `privilege` on namespace `ns` itself.
    pub fn allows_namespace(&self, privilege: Privilege, ns: &str) -> bool {
        self.principal.superuser
            || self.policy.grants.iter().any(|g| {
                self.principal.is(&g.grantee)
                    && matches!(&g.on, Securable::Namespace(n) if n == ns)
                    && (g.privilege == privilege || g.privilege == Privilege::All)
            })
    }

    /// Refuses unless the principal holds `privilege` on `t`.
    pub fn require(&self, privilege: Privilege, t: &TableName) -> Result<()> {
        if self.allows(privilege, t) {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "permission denied: {privilege} on `{t}` is not granted to `{}`",
            self.principal.name
        )))
    }

    /// Refuses unless the principal holds `privilege` on namespace `ns`.
    pub fn require_namespace(&self, privilege: Privilege, ns: &str) -> Result<()> {
        if self.allows_namespace(privilege, ns) {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "permission denied: {privilege} on namespace `{ns}` is not granted to `{}`",
            self.principal.name
        )))
    }

    /// Refuses unless the principal is a superuser.
    pub fn require_superuser(&self, what: &str) -> Result<()> {
        if self.principal.superuser {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "permission denied: only superusers may {what}"
        )))
    }

    /// The row policies of `t` that apply to this principal: `None` when `t` has none, an
    /// empty list when none applies (the principal sees no rows).
    fn row_filters_for(&self, t: &TableName) -> Option<Vec<&RowFilter>> {
        let mut on_table = self
            .policy
            .row_filters
            .iter()
            .filter(|f| &f.table == t)
            .peekable();
        on_table.peek()?;
        Some(
            on_table
                .filter(|f| self.principal.is(&f.applies_to))
                .collect(),
        )
    }

    /// The row policies of `t` for this principal as one SQL predicate: `None` when `t` has
    /// none (or for a superuser), `false` when none applies to the principal.
    pub(crate) fn row_predicate(&self, t: &TableName) -> Option<String> {
        if self.principal.superuser {
            return None;
        }
        let applying = self.row_filters_for(t)?;
        Some(if applying.is_empty() {
            "false".into()
        } else {
            applying
                .iter()
                .map(|f| format!("({})", f.predicate))
                .collect::<Vec<_>>()
                .join(" OR ")
        })
    }

    /// Whether `t` is visible: any privilege on it or its namespace.
    fn sees_table(&self, t: &TableName) -> bool {
        self.principal.superuser || self.grants_on(t).next().is_some()
    }

    /// Whether namespace `ns` is visible: any grant on it or on something in it.
    fn sees_namespace(&self, ns: &str) -> bool {
        self.principal.superuser
            || self.policy.grants.iter().any(|g| {
                self.principal.is(&g.grantee)
                    && match &g.on {
                        Securable::Namespace(n) => n == ns,
                        Securable::Table(t) => t.namespace == ns,
                    }
            })
    }

    /// The columns of `t` the principal may read: `None` for all, else the union of its
    /// column grants.
    fn readable_columns(&self, t: &TableName) -> Option<BTreeSet<String>> {
        if self.allows(Privilege::Select, t) {
            return None;
        }
        Some(
            self.grants_on(t)
                .filter(|g| matches!(g.privilege, Privilege::Select | Privilege::All))
                .filter_map(|g| g.columns.as_ref())
                .flatten()
                .cloned()
                .collect(),
        )
    }

    fn denied(t: &TableName) -> DataFusionError {
        DataFusionError::External(Box::new(Error::PermissionDenied(format!(
            "table `{t}` does not exist or is not granted to you"
        ))))
    }

    /// Notes a time-travel snapshot of `t` registered as `name`, so its scans get `t`'s
    /// policies.
    pub(crate) fn register_snapshot(&self, name: &str, t: &TableName) {
        self.snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), t.clone());
    }

    /// The lake table a scan reads, if it is one.
    fn lake_table(&self, r: &TableReference) -> Option<TableName> {
        let (catalog, schema, table) = crate::catalog::resolve_reference(r);
        if catalog == SNAPSHOT_CATALOG {
            return self
                .snapshots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(table)
                .cloned();
        }
        if catalog != CATALOG {
            return None;
        }
        TableName::new(schema, table).ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Names: the secured catalog
// ---------------------------------------------------------------------------------------------

/// The lake catalog as one principal sees it. Each session has its own, so schemas a
/// surface adds for its clients (`pg_catalog` for the Postgres wire protocol) stay in it.
#[derive(Debug)]
pub(crate) struct SecuredCatalog {
    pub(crate) inner: Arc<dyn CatalogProvider>,
    pub(crate) access: Arc<Access>,
    pub(crate) local: std::sync::RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
}

impl SecuredCatalog {
    pub(crate) fn new(inner: Arc<dyn CatalogProvider>, access: Arc<Access>) -> Self {
        Self {
            inner,
            access,
            local: Default::default(),
        }
    }
}

impl CatalogProvider for SecuredCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .inner
            .schema_names()
            .into_iter()
            .filter(|ns| self.access.sees_namespace(ns))
            .collect();
        names.extend(
            self.local
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned(),
        );
        names.sort();
        names.dedup();
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(local) = self
            .local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Some(Arc::clone(local));
        }
        let inner = self.inner.schema(name)?;
        Some(Arc::new(SecuredSchema {
            namespace: name.to_string(),
            inner,
            access: Arc::clone(&self.access),
        }))
    }

    /// Adds a schema of this session's own (never a lake namespace).
    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>, DataFusionError> {
        if self.inner.schema_names().iter().any(|n| n == name) {
            return Err(DataFusionError::Plan(format!(
                "`{name}` is a lake namespace; create tables in it with CREATE TABLE"
            )));
        }
        Ok(self
            .local
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), schema))
    }
}

#[derive(Debug)]
struct SecuredSchema {
    namespace: String,
    inner: Arc<dyn SchemaProvider>,
    access: Arc<Access>,
}

#[async_trait]
impl SchemaProvider for SecuredSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner
            .table_names()
            .into_iter()
            .filter(|n| {
                TableName::new(&self.namespace, n).is_ok_and(|t| self.access.sees_table(&t))
            })
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let Ok(t) = TableName::new(&self.namespace, name) else {
            return Ok(None);
        };
        if !self.access.sees_table(&t) {
            return Err(Access::denied(&t));
        }
        let Some(provider) = self.inner.table(name).await? else {
            return Ok(None);
        };
        match self.access.readable_columns(&t) {
            None => Ok(Some(provider)),
            Some(columns) if columns.is_empty() => Ok(Some(Arc::new(WriteOnly {
                inner: provider,
                table: t,
            }))),
            Some(columns) => {
                let reference = TableReference::full(CATALOG, self.namespace.as_str(), name);
                let schema = provider.schema();
                let kept: Vec<Expr> = schema
                    .fields()
                    .iter()
                    .filter(|f| columns.contains(&f.name().to_lowercase()))
                    .map(|f| {
                        Expr::Column(datafusion::common::Column::new(
                            Some(reference.clone()),
                            f.name(),
                        ))
                    })
                    .collect();
                let plan = LogicalPlanBuilder::scan(reference, provider_as_source(provider), None)?
                    .project(kept)?
                    .build()?;
                Ok(Some(Arc::new(ViewTable::new(plan, None))))
            }
        }
    }

    async fn table_type(&self, name: &str) -> Result<Option<TableType>, DataFusionError> {
        let Ok(t) = TableName::new(&self.namespace, name) else {
            return Ok(None);
        };
        if !self.access.sees_table(&t) {
            return Ok(None);
        }
        self.inner.table_type(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        TableName::new(&self.namespace, name).is_ok_and(|t| self.access.sees_table(&t))
            && self.inner.table_exist(name)
    }
}

/// A table the principal may write but not read: it plans (for `INSERT`, `UPDATE`…) and
/// refuses to scan.
#[derive(Debug)]
struct WriteOnly {
    inner: Arc<dyn TableProvider>,
    table: TableName,
}

#[async_trait]
impl TableProvider for WriteOnly {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>, DataFusionError> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        _state: &dyn CatalogSession,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        Err(DataFusionError::External(Box::new(
            Error::PermissionDenied(format!(
                "permission denied: SELECT on `{}` is not granted",
                self.table
            )),
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// Rows and values: the analyzer rule
// ---------------------------------------------------------------------------------------------

/// Rewrites scans of lake tables with the principal's row policies and column masks, and
/// refuses plans that write outside Strata's statements.
#[derive(Debug)]
pub(crate) struct PolicyRule {
    pub(crate) access: Arc<Access>,
    /// Parses policy predicates and masks (no tables are resolved through it).
    pub(crate) parser: Arc<SessionState>,
}

impl AnalyzerRule for PolicyRule {
    fn name(&self) -> &str {
        "strata_access_policy"
    }

    fn analyze(
        &self,
        plan: LogicalPlan,
        _config: &ConfigOptions,
    ) -> Result<LogicalPlan, DataFusionError> {
        if self.access.principal.superuser {
            return Ok(plan);
        }
        plan.transform_up_with_subqueries(|node| match node {
            LogicalPlan::TableScan(scan)
                if datafusion::datasource::source_as_provider(&scan.source)
                    .is_ok_and(|p| p.is::<WriteOnly>()) =>
            {
                Err(DataFusionError::External(Box::new(
                    Error::PermissionDenied(format!(
                        "permission denied: SELECT on `{}` is not granted to `{}`",
                        scan.table_name, self.access.principal.name
                    )),
                )))
            }
            LogicalPlan::TableScan(scan) => match self.access.lake_table(&scan.table_name) {
                Some(t) => self.secure(scan, &t),
                None => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
            },
            LogicalPlan::Dml(d) => Err(DataFusionError::External(Box::new(
                Error::PermissionDenied(format!(
                    "permission denied: {} on `{}` must go through a Strata SQL statement",
                    d.op, d.table_name
                )),
            ))),
            LogicalPlan::Copy(_) => Err(DataFusionError::External(Box::new(
                Error::PermissionDenied(
                    "permission denied: only superusers may COPY to files".into(),
                ),
            ))),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
    }
}

impl PolicyRule {
    fn secure(
        &self,
        scan: TableScan,
        t: &TableName,
    ) -> Result<Transformed<LogicalPlan>, DataFusionError> {
        let filters = self.access.row_filters_for(t);
        let masks: Vec<&ColumnMask> = self
            .access
            .policy
            .masks
            .iter()
            .filter(|m| &m.table == t && !m.exempt.iter().any(|e| self.access.principal.is(e)))
            .collect();
        if filters.is_none() && masks.is_empty() {
            return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
        }
        let qualifier = scan.table_name.clone();
        let schema = Arc::clone(&scan.projected_schema);
        let mut builder = LogicalPlanBuilder::from(LogicalPlan::TableScan(scan));
        if let Some(filters) = filters {
            let mut predicate: Option<Expr> = None;
            for f in filters {
                let e = self.parse(&f.predicate, &schema).map_err(|e| {
                    DataFusionError::Plan(format!(
                        "row policy `{}` on `{t}` does not plan: {e}",
                        f.name
                    ))
                })?;
                predicate = Some(match predicate {
                    Some(p) => p.or(e),
                    None => e,
                });
            }
            builder = builder.filter(predicate.unwrap_or_else(|| lit(false)))?;
        }
        if !masks.is_empty() {
            let mut exprs = Vec::with_capacity(schema.fields().len());
            for (q, field) in schema.iter() {
                let column =
                    Expr::Column(datafusion::common::Column::new(q.cloned(), field.name()));
                match masks
                    .iter()
                    .find(|m| m.column.eq_ignore_ascii_case(field.name()))
                {
                    Some(m) => {
                        let masked = self
                            .mask_expr(m, field.name(), field.data_type(), &schema)
                            .map_err(|e| {
                                DataFusionError::Plan(format!(
                                    "mask on `{t}.{}` does not plan: {e}",
                                    m.column
                                ))
                            })?;
                        exprs.push(
                            cast(masked, field.data_type().clone())
                                .alias_qualified(Some(qualifier.clone()), field.name()),
                        );
                    }
                    None => exprs.push(column),
                }
            }
            builder = builder.project(exprs)?;
        }
        Ok(Transformed::yes(builder.build()?))
    }

    fn parse(&self, sql: &str, schema: &DFSchema) -> Result<Expr, DataFusionError> {
        self.parser.create_logical_expr(sql, schema)
    }

    fn mask_expr(
        &self,
        m: &ColumnMask,
        column: &str,
        data_type: &DataType,
        schema: &DFSchema,
    ) -> Result<Expr, DataFusionError> {
        let text = matches!(
            data_type,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        );
        let c = format!("\"{}\"", column.replace('"', "\"\""));
        let null = || Ok(lit(ScalarValue::try_from(data_type)?));
        let sql = match &m.kind {
            MaskKind::Null => return null(),
            MaskKind::Full if !text => return null(),
            MaskKind::Full => format!("CASE WHEN {c} IS NULL THEN NULL ELSE '****' END"),
            MaskKind::Hash | MaskKind::Email | MaskKind::Partial { .. } if !text => {
                return Err(DataFusionError::Plan(format!(
                    "this mask applies to text columns and `{column}` is {data_type}; use `null` or `full`"
                )));
            }
            MaskKind::Hash => {
                let column = self.parse(&c, schema)?;
                return Ok(crate::mask_fn::TextMask::Hash.udf().call(vec![column]));
            }
            MaskKind::Email => {
                let column = self.parse(&c, schema)?;
                return Ok(crate::mask_fn::TextMask::Email.udf().call(vec![column]));
            }
            MaskKind::Partial {
                keep_start,
                keep_end,
            } => {
                let column = self.parse(&c, schema)?;
                let mask = crate::mask_fn::TextMask::Partial {
                    keep_start: *keep_start,
                    keep_end: *keep_end,
                };
                return Ok(mask.udf().call(vec![column]));
            }
            MaskKind::Expr(sql) => sql.clone(),
        };
        self.parse(&sql, schema)
    }
}

// ---------------------------------------------------------------------------------------------
// Functions a secured session answers from its principal
// ---------------------------------------------------------------------------------------------

/// `current_user()` and `current_user_attribute('key')` for `principal`. Constant within a
/// session, so the optimizer folds them and row policies prune files like any literal.
pub(crate) fn principal_functions(
    principal: &Principal,
) -> Vec<datafusion::logical_expr::ScalarUDF> {
    let name = principal.name.clone();
    let current_user = create_udf(
        "current_user",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name.clone()))))
        }),
    );
    let attributes = principal.attributes.clone();
    let current_user_attribute = create_udf(
        "current_user_attribute",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| match args {
            [ColumnarValue::Scalar(ScalarValue::Utf8(key))] => Ok(ColumnarValue::Scalar(
                ScalarValue::Utf8(key.as_ref().and_then(|k| attributes.get(k).cloned())),
            )),
            [ColumnarValue::Array(keys)] => {
                let keys = datafusion::common::cast::as_string_array(keys)?;
                let values: datafusion::arrow::array::StringArray = keys
                    .iter()
                    .map(|k| k.and_then(|k| attributes.get(k).cloned()))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(values)))
            }
            _ => Err(DataFusionError::Plan(
                "current_user_attribute takes one text argument".into(),
            )),
        }),
    );
    vec![current_user, current_user_attribute]
}
