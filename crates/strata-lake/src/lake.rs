//! The [`Lake`]: namespaces, tables and every write to them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::catalog::Session;
use deltalake::datafusion::logical_expr::LogicalPlan;
use deltalake::datafusion::prelude::DataFrame;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use deltalake::kernel::{StructField, Transaction};
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError, ObjectStore, Path};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use url::Url;

use crate::{Error, Result, TableName};

/// How a write treats the rows already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Add rows. Creates the table if it does not exist.
    Append,
    /// Replace all rows atomically. Creates the table if it does not exist.
    Overwrite,
    /// Create the table; fail if it exists.
    Create,
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Partition columns, for a table created by this write.
    pub partition_by: Vec<String>,
    /// Add the data's new columns to the table (older rows read NULL) and accept data that
    /// lacks some of the table's columns (written as NULL) instead of failing.
    ///
    /// Column types never change: deltalake 1.1 cannot widen a column (no `typeWidening`),
    /// so with or without this option values are cast to the column's type, and a value
    /// that does not fit (an Int64 beyond an Int32 column's range) fails the whole write.
    pub evolve_schema: bool,
    /// With [`WriteMode::Overwrite`]: replace the table's columns (and partitioning) with
    /// those of the new data, in the same atomic commit (`CREATE OR REPLACE TABLE`).
    pub replace_schema: bool,
    /// An idempotency marker committed with the data (Delta `txn` action): a write whose
    /// `(app_id, version)` is not newer than the table's recorded one is skipped.
    pub transaction: Option<(String, i64)>,
    /// Key/values stored in the commit's info (who, which command).
    pub commit_metadata: HashMap<String, serde_json::Value>,
    /// Description for a table created by this write.
    pub description: Option<String>,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The table version the write created (or found, when skipped).
    pub version: u64,
    /// Rows written.
    pub rows: u64,
    /// True when the transaction marker showed the write was already committed.
    pub skipped: bool,
}

/// One commit of a table's history.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The version it created.
    pub version: u64,
    /// When.
    pub timestamp: Option<DateTime<Utc>>,
    /// `WRITE`, `MERGE`, `DELETE`, `OPTIMIZE`…
    pub operation: String,
    /// Operation parameters (mode, predicate…).
    pub parameters: serde_json::Value,
    /// Operation metrics (rows, files).
    pub metrics: serde_json::Value,
    /// The whole `commitInfo`, including application metadata written with
    /// [`WriteOptions::commit_metadata`].
    pub info: serde_json::Value,
}

/// Size and shape of a table at its latest version.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// The table.
    pub name: TableName,
    /// Latest version.
    pub version: u64,
    /// Rows, from file statistics.
    pub rows: u64,
    /// Bytes of live data files.
    pub bytes: u64,
    /// Live data files.
    pub files: usize,
    /// When the latest version was committed.
    pub last_modified: Option<DateTime<Utc>>,
    /// Partition columns.
    pub partition_columns: Vec<String>,
    /// Arrow schema.
    pub schema: SchemaRef,
    /// The table's description, if any.
    pub description: Option<String>,
}

/// Result of [`Lake::optimize`].
#[derive(Debug, Clone, Default)]
pub struct OptimizeReport {
    /// Files written.
    pub files_added: u64,
    /// Files compacted away.
    pub files_removed: u64,
}

/// Result of [`Lake::vacuum`].
#[derive(Debug, Clone, Default)]
pub struct VacuumReport {
    /// Files deleted (or that would be, in a dry run).
    pub files: Vec<String>,
    /// Whether nothing was deleted.
    pub dry_run: bool,
}

/// A lake rooted at one URL.
#[derive(Clone)]
pub struct Lake {
    root: Url,
    options: HashMap<String, String>,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("root", &self.root.as_str())
            .finish()
    }
}

/// The folder that holds Strata's own lake files (views). It is a valid identifier, so it is
/// reserved explicitly: never listed as a namespace, never written to as one.
pub(crate) const INTERNAL_DIR: &str = "_strata";

/// Refuses the reserved namespace for tables, views and explicit namespaces.
pub(crate) fn check_namespace(ns: &str) -> Result<()> {
    strata_types::validate_identifier(ns)?;
    if ns == INTERNAL_DIR {
        return Err(Error::Invalid(format!(
            "`{INTERNAL_DIR}` is reserved for Strata's own files (view definitions); choose another namespace"
        )));
    }
    Ok(())
}

impl Lake {
    /// Opens (and, on local disk, creates) the lake at `root`.
    pub async fn open(root: &Url, options: HashMap<String, String>) -> Result<Self> {
        crate::object_stores::register();
        let mut root = root.clone();
        if !root.path().ends_with('/') {
            let p = format!("{}/", root.path());
            root.set_path(&p);
        }
        if root.scheme() == "file" {
            let path = root.to_file_path().map_err(|_| Error::Location {
                url: root.to_string(),
                message: "not a local path".into(),
            })?;
            std::fs::create_dir_all(&path).map_err(|e| Error::Location {
                url: root.to_string(),
                message: format!("cannot create the folder: {e}"),
            })?;
        }
        let store = deltalake::logstore::store_for(
            &root,
            options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map_err(|e| Error::Location {
            url: strata_types::redact_url_password(root.as_str()),
            message: e.to_string(),
        })?;
        Ok(Self {
            root,
            options,
            store,
        })
    }

    /// The lake's root URL (ends with `/`).
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Object-store options the lake was opened with.
    pub fn options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The lake's folder when it is on the local file system: metadata and small reads go
    /// straight to it, without the store's hand-off to a blocking thread.
    pub fn local_root(&self) -> Option<std::path::PathBuf> {
        if self.root.scheme() != "file" {
            return None;
        }
        self.root.to_file_path().ok()
    }

    /// The object store rooted at the lake's root.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// URL of a table's folder.
    pub fn table_url(&self, t: &TableName) -> Url {
        self.root
            .join(&format!("{}/{}/", t.namespace, t.name))
            .expect("validated identifiers are valid URL segments")
    }

    /// An unloaded handle for a table that may not exist yet (local folders are created).
    async fn new_table_handle(&self, t: &TableName) -> Result<DeltaTable> {
        let url = self.table_url(t);
        if url.scheme() == "file"
            && let Ok(path) = url.to_file_path()
        {
            std::fs::create_dir_all(&path).map_err(|e| Error::Location {
                url: url.to_string(),
                message: format!("cannot create the table folder: {e}"),
            })?;
        }
        DeltaTable::try_from_url_with_storage_options(url, self.options.clone())
            .await
            .map_err(Error::delta(format!("preparing `{t}`")))
    }

    fn builder(&self, t: &TableName) -> Result<DeltaTableBuilder> {
        Ok(DeltaTableBuilder::from_url(self.table_url(t))
            .map_err(Error::delta(format!("table `{t}`")))?
            .with_storage_options(self.options.clone()))
    }

    /// Namespaces that hold at least one table or view, or were created explicitly.
    pub async fn namespaces(&self) -> Result<Vec<String>> {
        let listing = self
            .store
            .list_with_delimiter(None)
            .await
            .map_err(Error::store("listing the lake"))?;
        let mut out: BTreeSet<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|n| n != INTERNAL_DIR && strata_types::validate_identifier(n).is_ok())
            .collect();
        for v in self.view_stamps(None).await?.into_keys() {
            out.insert(v.namespace);
        }
        Ok(out.into_iter().collect())
    }

    /// Creates a namespace (a folder with a marker file). Idempotent.
    pub async fn create_namespace(&self, ns: &str) -> Result<()> {
        check_namespace(ns)?;
        self.store
            .put(&Path::from(format!("{ns}/.strata_namespace")), "".into())
            .await
            .map_err(Error::store(format!("creating namespace `{ns}`")))?;
        Ok(())
    }

    /// Removes an empty namespace. Fails if it holds tables or views.
    pub async fn drop_namespace(&self, ns: &str, cascade: bool) -> Result<bool> {
        check_namespace(ns)?;
        // Before anything is deleted: on object stores a namespace is only its objects, so it
        // stops being listed as soon as its last table is gone.
        let existed = self.namespaces().await?.iter().any(|n| n == ns);
        let tables = self.tables(Some(ns)).await?;
        let views = self.list_views(Some(ns)).await?;
        if !cascade && (!tables.is_empty() || !views.is_empty()) {
            return Err(Error::Invalid(format!(
                "namespace `{ns}` is not empty ({} tables, {} views); drop them first or use CASCADE",
                tables.len(),
                views.len()
            )));
        }
        for t in &tables {
            self.drop_table(t).await?;
        }
        for v in &views {
            self.drop_view(&v.name).await?;
        }
        self.delete_prefix(&Path::from(ns)).await?;
        Ok(existed)
    }

    /// Tables in one namespace, or in all.
    pub async fn tables(&self, ns: Option<&str>) -> Result<Vec<TableName>> {
        let namespaces = match ns {
            Some(ns) => vec![ns.to_string()],
            None => self.namespaces().await?,
        };
        let mut out = Vec::new();
        for ns in namespaces {
            let listing = self
                .store
                .list_with_delimiter(Some(&Path::from(ns.as_str())))
                .await
                .map_err(Error::store(format!("listing namespace `{ns}`")))?;
            for p in listing.common_prefixes {
                let Some(name) = p.filename() else { continue };
                if strata_types::validate_identifier(name).is_err() {
                    continue;
                }
                let t = TableName::new(&ns, name)?;
                if self.table_exists(&t).await? {
                    out.push(t);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Whether the table exists (has a Delta log).
    pub async fn table_exists(&self, t: &TableName) -> Result<bool> {
        let prefix = Path::from(format!("{}/{}/_delta_log", t.namespace, t.name));
        let mut list = self.store.list(Some(&prefix));
        while let Some(item) = list.next().await {
            let meta = item.map_err(Error::store(format!("checking table `{t}`")))?;
            let name = meta.location.filename().unwrap_or_default();
            if name.ends_with(".json")
                || name.ends_with(".checkpoint.parquet")
                || name == "_last_checkpoint"
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The error for a missing table, with a "did you mean" hint from the lake's tables.
    pub async fn not_found(&self, t: &TableName) -> Error {
        let candidates: Vec<String> = self
            .tables(None)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.to_string())
            .collect();
        let wanted = t.to_string();
        let best = candidates
            .iter()
            .map(|c| (strsim_distance(&wanted, c), c))
            .filter(|(d, _)| *d <= 3)
            .min_by_key(|(d, _)| *d);
        let hint = match best {
            Some((_, c)) => format!("; did you mean `{c}`?"),
            None if candidates.is_empty() => "; the lake holds no tables yet".to_string(),
            None => "; `strata tables` lists the existing ones".to_string(),
        };
        Error::TableNotFound {
            table: t.clone(),
            hint,
        }
    }

    /// Opens a table at its latest version.
    pub async fn open_table(&self, t: &TableName) -> Result<DeltaTable> {
        if !self.table_exists(t).await? {
            return Err(self.not_found(t).await);
        }
        self.builder(t)?
            .load()
            .await
            .map_err(Error::delta(format!("opening `{t}`")))
    }

    /// Opens a table as of a version (time travel).
    pub async fn open_table_version(&self, t: &TableName, version: u64) -> Result<DeltaTable> {
        let mut table = self.open_table(t).await?;
        let latest = table.version().unwrap_or(0);
        if version > latest {
            return Err(Error::NoSuchVersion {
                table: t.clone(),
                what: version.to_string(),
                oldest: self.oldest_version(t).await.unwrap_or(0),
                latest,
            });
        }
        match table.load_version(version).await {
            Ok(()) => Ok(table),
            Err(e) => {
                let oldest = self.oldest_version(t).await.unwrap_or(0);
                if version < oldest
                    || matches!(
                        e,
                        DeltaTableError::InvalidVersion(_) | DeltaTableError::NotATable(_)
                    )
                {
                    Err(Error::NoSuchVersion {
                        table: t.clone(),
                        what: version.to_string(),
                        oldest,
                        latest,
                    })
                } else {
                    Err(Error::Delta {
                        context: format!("loading version {version} of `{t}`"),
                        source: Box::new(e),
                    })
                }
            }
        }
    }

    /// The latest committed version of `t` from a listing of its log (no log replay), or
    /// `None` when `t` is not a table. Cheap enough to check before reusing a cached plan.
    pub async fn latest_version(&self, t: &TableName) -> Result<Option<u64>> {
        let listing = self.log_listing(t).await?;
        Ok(listing
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
            .max())
    }

    /// The latest committed version of `t` and the stamp of its commit file, from one listing
    /// of the log; `None` when `t` has no commit files. Pass both to [`Lake::still_latest`]
    /// later to learn whether anything was committed since, without listing the log again.
    pub async fn latest_commit(&self, t: &TableName) -> Result<Option<(u64, CommitStamp)>> {
        let listing = self.log_listing(t).await?;
        Ok(listing
            .iter()
            .filter_map(|m| {
                let v: u64 = m.location.filename()?.strip_suffix(".json")?.parse().ok()?;
                Some((v, CommitStamp::of(m)))
            })
            .max_by_key(|(v, _)| *v))
    }

    /// Whether `version` (committed as `stamp`) is still the latest version of `t`: its commit
    /// file is the same file (not a table dropped and created again since) and no next commit
    /// exists. Two metadata requests, however long the log is.
    pub async fn still_latest(
        &self,
        t: &TableName,
        version: u64,
        stamp: &CommitStamp,
    ) -> Result<bool> {
        if let Some(root) = self.local_root() {
            // Two `stat` calls: cheaper inline than two trips to a blocking thread. The
            // stamps compare by modification time and size (the store's entity tag for
            // local files is made of those and the inode).
            let stamp_of = |v: u64| -> Result<Option<CommitStamp>> {
                let file = root
                    .join(&t.namespace)
                    .join(&t.name)
                    .join("_delta_log")
                    .join(format!("{v:020}.json"));
                match std::fs::metadata(&file).and_then(|m| Ok((m.modified()?, m.len()))) {
                    Ok((modified, size)) => Ok(Some(CommitStamp {
                        e_tag: None,
                        last_modified: modified.into(),
                        size,
                    })),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::store(format!("checking the log of `{t}`"))(
                        deltalake::ObjectStoreError::Generic {
                            store: "LocalFileSystem",
                            source: Box::new(e),
                        },
                    )),
                }
            };
            return Ok(
                stamp_of(version)?.as_ref() == Some(stamp) && stamp_of(version + 1)?.is_none()
            );
        }
        let head = |v: u64| {
            let path = Path::from(format!(
                "{}/{}/_delta_log/{v:020}.json",
                t.namespace, t.name
            ));
            async move {
                match self.store.head(&path).await {
                    Ok(m) => Ok(Some(CommitStamp::of(&m))),
                    Err(deltalake::ObjectStoreError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(Error::store(format!("checking the log of `{t}`"))(e)),
                }
            }
        };
        let (current, next) = futures::try_join!(head(version), head(version + 1))?;
        Ok(current.as_ref() == Some(stamp) && next.is_none())
    }

    async fn log_listing(&self, t: &TableName) -> Result<Vec<deltalake::ObjectMeta>> {
        self.store
            .list(Some(&log_dir(t)))
            .try_collect()
            .await
            .map_err(Error::store(format!("listing the log of `{t}`")))
    }

    /// The oldest version time travel can reach: 0 while the whole log is kept, else the
    /// oldest checkpoint (commits before it were cleaned up, and the ones after it alone
    /// cannot rebuild a version without it).
    async fn oldest_version(&self, t: &TableName) -> Result<u64> {
        let listing = self.log_listing(t).await?;
        let names: Vec<&str> = listing
            .iter()
            .filter_map(|m| m.location.filename())
            .collect();
        let version_of = |suffix: &str| -> Vec<u64> {
            names
                .iter()
                .filter_map(|n| n.split_once('.'))
                .filter(|(_, rest)| rest.starts_with(suffix))
                .filter_map(|(v, _)| v.parse().ok())
                .collect()
        };
        let commits = version_of("json");
        if commits.contains(&0) {
            return Ok(0);
        }
        let checkpoints = version_of("checkpoint");
        Ok(checkpoints
            .into_iter()
            .min()
            .or_else(|| commits.into_iter().min())
            .unwrap_or(0))
    }

    /// Opens a table as it was at `ts`: the latest version committed at or before it.
    pub async fn open_table_at(&self, t: &TableName, ts: DateTime<Utc>) -> Result<DeltaTable> {
        let history = self.history(t, None).await?;
        let latest = history.first().map(|c| c.version).unwrap_or(0);
        let version = history
            .iter()
            .filter(|c| c.timestamp.is_some_and(|c_ts| c_ts <= ts))
            .map(|c| c.version)
            .max();
        match version {
            Some(v) => self.open_table_version(t, v).await,
            None => Err(Error::NoSuchVersion {
                table: t.clone(),
                what: format!("at or before {}", ts.to_rfc3339()),
                oldest: history.last().map(|c| c.version).unwrap_or(0),
                latest,
            }),
        }
    }

    /// Creates an empty table with `schema`.
    pub async fn create_table(
        &self,
        t: &TableName,
        schema: &SchemaRef,
        partition_by: &[String],
        description: Option<&str>,
        if_not_exists: bool,
    ) -> Result<DeltaTable> {
        check_namespace(&t.namespace)?;
        if self.view(t).await?.is_some() {
            return Err(Error::IsAView(t.clone(), "drop the view first"));
        }
        if self.table_exists(t).await? {
            if if_not_exists {
                return self.open_table(t).await;
            }
            return Err(Error::TableExists(t.clone()));
        }
        check_partitions(t, schema, partition_by)?;
        let fields: Vec<StructField> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().try_into_kernel())
            .collect::<Result<_, _>>()
            .map_err(|e| Error::SchemaMismatch {
                table: t.clone(),
                message: format!("a column type cannot be stored in Delta: {e}"),
            })?;
        let mut builder = self
            .new_table_handle(t)
            .await?
            .create()
            .with_table_name(&t.name)
            .with_columns(fields)
            .with_partition_columns(partition_by.to_vec())
            .with_save_mode(SaveMode::ErrorIfExists);
        if let Some(d) = description {
            builder = builder.with_comment(d);
        }
        builder.await.map_err(|e| match e {
            DeltaTableError::Generic(m) if m.contains("already exists") => {
                Error::TableExists(t.clone())
            }
            e => Error::Delta {
                context: format!("creating `{t}`"),
                source: Box::new(e),
            },
        })
    }

    async fn table_for_write(&self, t: &TableName, mode: WriteMode) -> Result<DeltaTable> {
        check_namespace(&t.namespace)?;
        if self.view(t).await?.is_some() {
            return Err(Error::IsAView(t.clone(), "views cannot be written to"));
        }
        let exists = self.table_exists(t).await?;
        match (mode, exists) {
            (WriteMode::Create, true) => Err(Error::TableExists(t.clone())),
            (_, true) => self.open_table(t).await,
            (_, false) => self.new_table_handle(t).await,
        }
    }

    /// Writes in-memory batches.
    pub async fn write_batches(
        &self,
        t: &TableName,
        batches: Vec<RecordBatch>,
        mode: WriteMode,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome> {
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        let table = self.table_for_write(t, mode).await?;
        if let Some(skip) = self.already_committed(&table, opts).await? {
            return Ok(skip);
        }
        if let Some(first) = batches.first()
            && table.version().is_none()
        {
            check_partitions(t, &first.schema(), &opts.partition_by)?;
        }
        let builder = table.write(batches);
        let table = self.finish_write(t, builder, mode, opts).await?;
        Ok(WriteOutcome {
            version: table.version().unwrap_or(0),
            rows,
            skipped: false,
        })
    }

    /// Writes a stream of batches without collecting it: memory stays bounded whatever the
    /// stream's length. Nothing is committed if the stream fails.
    pub async fn write_stream(
        &self,
        t: &TableName,
        schema: SchemaRef,
        stream: deltalake::datafusion::execution::SendableRecordBatchStream,
        mode: WriteMode,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome> {
        use deltalake::datafusion::catalog::streaming::StreamingTable;
        use deltalake::datafusion::physical_plan::streaming::PartitionStream;

        struct Once(
            SchemaRef,
            std::sync::Mutex<Option<deltalake::datafusion::execution::SendableRecordBatchStream>>,
        );
        impl std::fmt::Debug for Once {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("OnceStream")
            }
        }
        impl PartitionStream for Once {
            fn schema(&self) -> &SchemaRef {
                &self.0
            }
            fn execute(
                &self,
                _ctx: Arc<deltalake::datafusion::execution::TaskContext>,
            ) -> deltalake::datafusion::execution::SendableRecordBatchStream {
                let taken = self.1.lock().unwrap_or_else(|e| e.into_inner()).take();
                taken.unwrap_or_else(|| {
                    Box::pin(
                        deltalake::datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                            Arc::clone(&self.0),
                            futures::stream::once(async {
                                Err(deltalake::datafusion::error::DataFusionError::Internal(
                                    "a one-shot input stream was read twice".into(),
                                ))
                            }),
                        ),
                    )
                })
            }
        }
        let partition = Arc::new(Once(
            Arc::clone(&schema),
            std::sync::Mutex::new(Some(stream)),
        ));
        let table = StreamingTable::try_new(Arc::clone(&schema), vec![partition])
            .map_err(|e| Error::Invalid(format!("preparing the write to `{t}`: {e}")))?;
        let ctx = deltalake::datafusion::prelude::SessionContext::new();
        let df = ctx
            .read_table(Arc::new(table))
            .map_err(|e| Error::Invalid(format!("preparing the write to `{t}`: {e}")))?;
        let plan = df.into_unoptimized_plan();
        self.write_plan(t, plan, Arc::new(ctx.state()), mode, opts)
            .await
    }

    /// Writes the rows of a DataFusion plan, streamed (never collected in memory).
    pub async fn write_plan(
        &self,
        t: &TableName,
        plan: LogicalPlan,
        session: Arc<dyn Session>,
        mode: WriteMode,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome> {
        let table = self.table_for_write(t, mode).await?;
        if let Some(skip) = self.already_committed(&table, opts).await? {
            return Ok(skip);
        }
        if table.version().is_none() {
            let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
            check_partitions(t, &schema, &opts.partition_by)?;
        }
        let builder = table
            .write(Vec::<RecordBatch>::new())
            .with_input_plan(plan)
            .with_session_state(with_delta_planner(session));
        let table = self.finish_write(t, builder, mode, opts).await?;
        let version = table.version().unwrap_or(0);
        // Rows from this write's own commit (not the newest one: another writer may have
        // committed since).
        let rows = match self.read_commit(t, version).await {
            Ok(c) => metric_u64(&c.metrics, "num_added_rows"),
            Err(_) => 0,
        };
        Ok(WriteOutcome {
            version,
            rows,
            skipped: false,
        })
    }

    async fn already_committed(
        &self,
        table: &DeltaTable,
        opts: &WriteOptions,
    ) -> Result<Option<WriteOutcome>> {
        let (Some((app, version)), Ok(state)) = (&opts.transaction, table.snapshot()) else {
            return Ok(None);
        };
        let recorded = state
            .transaction_version(table.log_store().as_ref(), app)
            .await
            .map_err(Error::delta("reading the transaction marker"))?;
        if recorded.is_some_and(|r| r >= *version) {
            return Ok(Some(WriteOutcome {
                version: table.version().unwrap_or(0),
                rows: 0,
                skipped: true,
            }));
        }
        Ok(None)
    }

    async fn finish_write(
        &self,
        t: &TableName,
        builder: deltalake::operations::write::WriteBuilder,
        mode: WriteMode,
        opts: &WriteOptions,
    ) -> Result<DeltaTable> {
        let mut builder = builder
            .with_save_mode(match mode {
                WriteMode::Append => SaveMode::Append,
                WriteMode::Overwrite => SaveMode::Overwrite,
                WriteMode::Create => SaveMode::ErrorIfExists,
            })
            .with_table_name(&t.name)
            .with_commit_properties(commit_properties(opts));
        if !opts.partition_by.is_empty() {
            builder = builder.with_partition_columns(opts.partition_by.clone());
        }
        if opts.replace_schema && mode == WriteMode::Overwrite {
            builder = builder.with_schema_mode(SchemaMode::Overwrite);
        } else if opts.evolve_schema {
            builder = builder.with_schema_mode(SchemaMode::Merge);
        }
        if let Some(d) = &opts.description {
            builder = builder.with_description(d);
        }
        builder.await.map_err(|e| map_write_error(t, e))
    }

    /// Upserts: `predicate` joins `source` (alias `source_alias`) to the table (alias
    /// `target_alias`); clause expressions use the same aliases.
    #[allow(clippy::too_many_arguments)]
    pub async fn merge(
        &self,
        t: &TableName,
        source: DataFrame,
        source_alias: &str,
        target_alias: &str,
        predicate: &str,
        clauses: Vec<MergeClause>,
        session: Arc<dyn Session>,
        opts: &WriteOptions,
    ) -> Result<MergeOutcome> {
        let table = self.open_table(t).await?;
        if !opts.evolve_schema {
            let schema = table_arrow_schema(&table)?;
            for c in &clauses {
                let set = match c {
                    MergeClause::MatchedUpdate { set, .. }
                    | MergeClause::NotMatchedInsert { set, .. }
                    | MergeClause::NotMatchedBySourceUpdate { set, .. } => set,
                    MergeClause::MatchedDelete { .. }
                    | MergeClause::NotMatchedBySourceDelete { .. } => continue,
                };
                check_assigned_columns(t, &schema, Some(target_alias), set)?;
            }
        }
        if let Some(skip) = self.already_committed(&table, opts).await? {
            return Ok(MergeOutcome {
                version: skip.version,
                ..Default::default()
            });
        }
        let mut builder = table
            .merge(source, predicate.to_string())
            .with_source_alias(source_alias)
            .with_target_alias(target_alias)
            .with_session_state(session)
            .with_merge_schema(opts.evolve_schema)
            .with_commit_properties(commit_properties(opts));
        let bad = |e: DeltaTableError| map_write_error(t, e);
        for c in clauses {
            builder = match c {
                MergeClause::MatchedUpdate { predicate, set } => builder
                    .when_matched_update(|mut u| {
                        if let Some(p) = predicate {
                            u = u.predicate(p);
                        }
                        for (col, expr) in set {
                            u = u.update(col, expr);
                        }
                        u
                    })
                    .map_err(bad)?,
                MergeClause::MatchedDelete { predicate } => builder
                    .when_matched_delete(|mut d| {
                        if let Some(p) = predicate {
                            d = d.predicate(p);
                        }
                        d
                    })
                    .map_err(bad)?,
                MergeClause::NotMatchedInsert { predicate, set } => builder
                    .when_not_matched_insert(|mut i| {
                        if let Some(p) = predicate {
                            i = i.predicate(p);
                        }
                        for (col, expr) in set {
                            i = i.set(col, expr);
                        }
                        i
                    })
                    .map_err(bad)?,
                MergeClause::NotMatchedBySourceUpdate { predicate, set } => builder
                    .when_not_matched_by_source_update(|mut u| {
                        if let Some(p) = predicate {
                            u = u.predicate(p);
                        }
                        for (col, expr) in set {
                            u = u.update(col, expr);
                        }
                        u
                    })
                    .map_err(bad)?,
                MergeClause::NotMatchedBySourceDelete { predicate } => builder
                    .when_not_matched_by_source_delete(|mut d| {
                        if let Some(p) = predicate {
                            d = d.predicate(p);
                        }
                        d
                    })
                    .map_err(bad)?,
            };
        }
        let (table, m) = builder.await.map_err(bad)?;
        Ok(MergeOutcome {
            version: table.version().unwrap_or(0),
            inserted: m.num_target_rows_inserted as u64,
            updated: m.num_target_rows_updated as u64,
            deleted: m.num_target_rows_deleted as u64,
        })
    }

    /// Deletes the rows matching `predicate` (SQL), or all rows.
    pub async fn delete(
        &self,
        t: &TableName,
        predicate: Option<&str>,
        session: Option<Arc<dyn Session>>,
    ) -> Result<u64> {
        let table = self.open_table(t).await?;
        let mut b = table.delete();
        if let Some(p) = predicate {
            b = b.with_predicate(p.to_string());
        }
        if let Some(s) = session {
            b = b.with_session_state(s);
        }
        let (_, m) = b.await.map_err(|e| map_write_error(t, e))?;
        Ok(m.num_deleted_rows.unwrap_or(0) as u64)
    }

    /// Sets columns to SQL expressions on the rows matching `predicate`.
    pub async fn update(
        &self,
        t: &TableName,
        predicate: Option<&str>,
        set: Vec<(String, String)>,
        session: Option<Arc<dyn Session>>,
    ) -> Result<u64> {
        let table = self.open_table(t).await?;
        check_assigned_columns(t, &table_arrow_schema(&table)?, None, &set)?;
        let mut b = table.update();
        if let Some(p) = predicate {
            b = b.with_predicate(p.to_string());
        }
        for (c, e) in set {
            b = b.with_update(c, e);
        }
        if let Some(s) = session {
            b = b.with_session_state(s);
        }
        let (_, m) = b.await.map_err(|e| map_write_error(t, e))?;
        Ok(m.num_updated_rows as u64)
    }

    /// Sets the description (`comment` field metadata) of columns, `None` clearing it; one
    /// metadata-only commit per column whose comment changes, none when all are already
    /// so. Columns the table lacks are ignored. Returns the table's version.
    pub async fn set_column_comments(
        &self,
        t: &TableName,
        comments: &[(String, Option<String>)],
    ) -> Result<u64> {
        use deltalake::kernel::schema::MetadataValue;
        let mut table = self.open_table(t).await?;
        let existing: SchemaRef = table_arrow_schema(&table)?;
        for (column, comment) in comments {
            let Ok(field) = existing.field_with_name(column) else {
                continue;
            };
            let current = field.metadata().get("comment").map(String::as_str);
            let wanted = comment.as_deref().filter(|c| !c.is_empty());
            if current.filter(|c| !c.is_empty()) == wanted {
                continue;
            }
            table = table
                .update_field_metadata()
                .with_field_name(column)
                .with_metadata(HashMap::from([(
                    "comment".to_string(),
                    MetadataValue::String(wanted.unwrap_or_default().to_string()),
                )]))
                .await
                .map_err(|e| map_write_error(t, e))?;
        }
        Ok(table.version().unwrap_or(0))
    }

    /// Adds nullable columns.
    pub async fn add_columns(&self, t: &TableName, schema: &SchemaRef) -> Result<u64> {
        let table = self.open_table(t).await?;
        let existing: SchemaRef = table_arrow_schema(&table)?;
        let mut fields = Vec::new();
        for f in schema.fields() {
            if existing.field_with_name(f.name()).is_ok() {
                return Err(Error::SchemaMismatch {
                    table: t.clone(),
                    message: format!("column `{}` already exists", f.name()),
                });
            }
            let f = f.as_ref().clone().with_nullable(true);
            let kf: StructField = (&f).try_into_kernel().map_err(|e| Error::SchemaMismatch {
                table: t.clone(),
                message: format!("column `{}`: {e}", f.name()),
            })?;
            fields.push(kf);
        }
        let table = table
            .add_columns()
            .with_fields(fields)
            .await
            .map_err(|e| map_write_error(t, e))?;
        Ok(table.version().unwrap_or(0))
    }

    /// Changes the type of columns by rewriting the table with every value cast to its new
    /// type, in one atomic commit (deltalake cannot widen a column in place). Used for safe
    /// widening (Int32 → Int64, Float32 → Float64, a wider decimal) and for turning a
    /// column to text; a value that does not cast fails the rewrite and nothing changes.
    pub async fn retype_columns(
        &self,
        t: &TableName,
        changes: &[(String, deltalake::arrow::datatypes::DataType)],
        opts: &WriteOptions,
    ) -> Result<WriteOutcome> {
        use deltalake::datafusion::common::Column;
        use deltalake::datafusion::logical_expr::{Expr, cast};
        use deltalake::datafusion::prelude::SessionContext;
        let table = self.open_table(t).await?;
        let info = self.table_info(t).await?;
        let ctx = SessionContext::new();
        let df = ctx
            .read_table(
                table
                    .table_provider()
                    .await
                    .map_err(|e| Error::Invalid(format!("reading `{t}`: {e}")))?,
            )
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let exprs: Vec<Expr> = info
            .schema
            .fields()
            .iter()
            .map(|f| {
                let c = Expr::Column(Column::new_unqualified(f.name()));
                match changes.iter().find(|(n, _)| n == f.name()) {
                    Some((_, ty)) => cast(c, ty.clone()).alias(f.name()),
                    None => c,
                }
            })
            .collect();
        let plan = df
            .select(exprs)
            .map_err(|e| Error::Invalid(e.to_string()))?
            .into_unoptimized_plan();
        let opts = WriteOptions {
            replace_schema: true,
            partition_by: info.partition_columns.clone(),
            ..opts.clone()
        };
        self.write_plan(t, plan, Arc::new(ctx.state()), WriteMode::Overwrite, &opts)
            .await
    }

    /// Drops a table: deletes its folder.
    pub async fn drop_table(&self, t: &TableName) -> Result<()> {
        if !self.table_exists(t).await? {
            return Err(self.not_found(t).await);
        }
        self.delete_prefix(&Path::from(format!("{}/{}", t.namespace, t.name)))
            .await
    }

    pub(crate) async fn delete_prefix(&self, prefix: &Path) -> Result<()> {
        let locations = self.store.list(Some(prefix)).map_ok(|m| m.location).boxed();
        self.store
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await
            .map_err(Error::store(format!("deleting `{prefix}`")))?;
        // Local folders outlive their files; remove them so the name is free again.
        if self.root.scheme() == "file"
            && let Ok(root) = self.root.to_file_path()
        {
            let dir = root.join(prefix.as_ref());
            if dir.is_dir() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        Ok(())
    }

    /// The table's commits, newest first.
    ///
    /// Versions come from the commit files' names. delta-rs' own history numbers commits by
    /// `readVersion` or by position, and skips commits without the (optional) `commitInfo`,
    /// which shifts every older version by one.
    pub async fn history(&self, t: &TableName, limit: Option<usize>) -> Result<Vec<Commit>> {
        let table = self.open_table(t).await?;
        let latest = table.version().unwrap_or(0);
        let log = log_dir(t);
        let listing: Vec<_> = self
            .store
            .list(Some(&log))
            .try_collect()
            .await
            .map_err(Error::store(format!("listing the log of `{t}`")))?;
        let mut versions: Vec<u64> = listing
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
            // Not commits that landed after the snapshot was loaded.
            .filter(|v| *v <= latest)
            .collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        versions.truncate(limit.unwrap_or(usize::MAX));
        futures::stream::iter(versions)
            .map(|v| self.read_commit(t, v))
            .buffered(8)
            .try_collect()
            .await
    }

    /// One commit's info, read from `_delta_log/<version>.json`.
    async fn read_commit(&self, t: &TableName, version: u64) -> Result<Commit> {
        let context = || format!("reading version {version} of `{t}`");
        let got = self
            .store
            .get(&Path::from(format!(
                "{}/{}/_delta_log/{version:020}.json",
                t.namespace, t.name
            )))
            .await
            .map_err(|e| Error::Store {
                context: context(),
                source: e,
            })?;
        let written = got.meta.last_modified;
        let bytes = got.bytes().await.map_err(|e| Error::Store {
            context: context(),
            source: e,
        })?;
        let info = bytes
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
            .find_map(|mut action| action.get_mut("commitInfo").map(serde_json::Value::take))
            .unwrap_or_default();
        let millis = |key: &str| {
            info.get(key)
                .and_then(serde_json::Value::as_i64)
                .and_then(DateTime::<Utc>::from_timestamp_millis)
        };
        Ok(Commit {
            version,
            // With in-commit timestamps on, that one is the commit's time (Delta protocol).
            timestamp: millis("inCommitTimestamp")
                .or_else(|| millis("timestamp"))
                .or(Some(written)),
            operation: info
                .get("operation")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string(),
            parameters: info.get("operationParameters").cloned().unwrap_or_default(),
            metrics: info.get("operationMetrics").cloned().unwrap_or_default(),
            info,
        })
    }

    /// The newest commit whose info has `key` satisfying `matches`, with that value.
    ///
    /// Ingestion stores each stream's state this way, in the commit that holds its rows;
    /// the scan stops at the first match, which is normally among the newest commits.
    pub async fn find_commit_metadata(
        &self,
        t: &TableName,
        key: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<Option<(u64, serde_json::Value)>> {
        let table = self.open_table(t).await?;
        let latest = table.version().unwrap_or(0);
        let mut v = latest as i64;
        while v >= 0 {
            let page: Vec<u64> = (0..16)
                .map(|i| v - i)
                .filter(|x| *x >= 0)
                .map(|x| x as u64)
                .collect();
            let commits: Vec<Result<Commit>> = futures::stream::iter(page.clone())
                .map(|x| self.read_commit(t, x))
                .buffered(8)
                .collect()
                .await;
            for c in commits {
                // A version whose file is gone (log cleanup) ends the search.
                let Ok(c) = c else { return Ok(None) };
                if let Some(value) = c.info.get(key)
                    && matches(value)
                {
                    return Ok(Some((c.version, value.clone())));
                }
            }
            v -= page.len() as i64;
        }
        Ok(None)
    }

    /// Rows, bytes, files and schema of a table.
    pub async fn table_info(&self, t: &TableName) -> Result<TableInfo> {
        let table = self.open_table(t).await?;
        let mut info = info_of(t, &table)?;
        // The commit's own timestamp, as history and time travel use it (the log file's
        // modification time has only second precision on S3).
        if let Ok(commit) = self.read_commit(t, info.version).await
            && commit.timestamp.is_some()
        {
            info.last_modified = commit.timestamp;
        }
        Ok(info)
    }

    /// Compacts small files into larger ones (one commit).
    pub async fn optimize(&self, t: &TableName) -> Result<OptimizeReport> {
        let table = self.open_table(t).await?;
        let (_, m) = table.optimize().await.map_err(|e| map_write_error(t, e))?;
        Ok(OptimizeReport {
            files_added: m.num_files_added,
            files_removed: m.num_files_removed,
        })
    }

    /// Rewrites the table's files with rows ordered by the Z-order curve of `columns` (by
    /// `columns` themselves when there is one), so file statistics and Parquet page indexes
    /// narrow lookups and range filters on them to a few pages.
    pub async fn zorder(&self, t: &TableName, columns: &[String]) -> Result<OptimizeReport> {
        if columns.is_empty() {
            return Err(Error::Invalid(format!(
                "Z-ordering `{t}` needs at least one column"
            )));
        }
        let table = self.open_table(t).await?;
        if let Ok(snapshot) = table.snapshot() {
            let schema = snapshot.schema();
            for c in columns {
                if schema.field(c).is_none() {
                    let names: Vec<&str> = schema.fields().map(|f| f.name().as_str()).collect();
                    return Err(Error::Invalid(format!(
                        "`{t}` has no column `{c}`; its columns are {}",
                        names.join(", ")
                    )));
                }
            }
        }
        let (_, m) = table
            .optimize()
            .with_type(deltalake::operations::optimize::OptimizeType::ZOrder(
                columns.to_vec(),
            ))
            .with_writer_properties(lookup_writer_properties())
            .await
            .map_err(|e| map_write_error(t, e))?;
        Ok(OptimizeReport {
            files_added: m.num_files_added,
            files_removed: m.num_files_removed,
        })
    }

    /// Deletes data files no longer referenced by versions younger than `retention`.
    ///
    /// The table's `delta.deletedFileRetentionDuration` (7 days by default) is the minimum
    /// unless `force` is set.
    pub async fn vacuum(
        &self,
        t: &TableName,
        retention: Option<Duration>,
        dry_run: bool,
        force: bool,
    ) -> Result<VacuumReport> {
        let table = self.open_table(t).await?;
        let minimum = table
            .snapshot()
            .ok()
            .and_then(|s| s.table_config().deleted_file_retention_duration)
            .unwrap_or(Duration::from_secs(7 * 24 * 3600));
        let retention = retention.unwrap_or(minimum);
        if retention < minimum && !force {
            return Err(Error::RetentionTooShort {
                requested: retention,
                minimum,
            });
        }
        let (_, m) = table
            .vacuum()
            .with_retention_period(
                chrono::Duration::from_std(retention)
                    .map_err(|e| Error::Invalid(format!("retention: {e}")))?,
            )
            .with_enforce_retention_duration(!force)
            .with_dry_run(dry_run)
            .await
            .map_err(|e| map_write_error(t, e))?;
        Ok(VacuumReport {
            files: m.files_deleted,
            dry_run: m.dry_run,
        })
    }
}

/// What a MERGE did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// The version created.
    pub version: u64,
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows deleted.
    pub deleted: u64,
}

/// One `WHEN … THEN …` clause of a MERGE. Expressions are SQL text over the aliases
/// `source` and `target`.
#[derive(Debug, Clone)]
pub enum MergeClause {
    /// `WHEN MATCHED [AND p] THEN UPDATE SET c = e, …`
    MatchedUpdate {
        /// Extra condition.
        predicate: Option<String>,
        /// Column assignments.
        set: Vec<(String, String)>,
    },
    /// `WHEN MATCHED [AND p] THEN DELETE`
    MatchedDelete {
        /// Extra condition.
        predicate: Option<String>,
    },
    /// `WHEN NOT MATCHED [AND p] THEN INSERT (c, …) VALUES (e, …)`
    NotMatchedInsert {
        /// Extra condition.
        predicate: Option<String>,
        /// Column values.
        set: Vec<(String, String)>,
    },
    /// `WHEN NOT MATCHED BY SOURCE [AND p] THEN UPDATE SET …`
    NotMatchedBySourceUpdate {
        /// Extra condition.
        predicate: Option<String>,
        /// Column assignments.
        set: Vec<(String, String)>,
    },
    /// `WHEN NOT MATCHED BY SOURCE [AND p] THEN DELETE`
    NotMatchedBySourceDelete {
        /// Extra condition.
        predicate: Option<String>,
    },
}

/// What identifies one commit file: a table dropped and created again reuses version
/// numbers, never the same file. Compared by entity tag where the store gives one, else by
/// modification time, and always by size.
#[derive(Clone, Debug)]
pub struct CommitStamp {
    e_tag: Option<String>,
    last_modified: DateTime<Utc>,
    size: u64,
}

impl CommitStamp {
    fn of(meta: &deltalake::ObjectMeta) -> Self {
        Self {
            e_tag: meta.e_tag.clone(),
            last_modified: meta.last_modified,
            size: meta.size,
        }
    }
}

impl PartialEq for CommitStamp {
    fn eq(&self, other: &Self) -> bool {
        let same_file = match (&self.e_tag, &other.e_tag) {
            (Some(a), Some(b)) => a == b,
            _ => self.last_modified == other.last_modified,
        };
        same_file && self.size == other.size
    }
}

impl Eq for CommitStamp {}

/// Rows per Parquet data page in files written by [`Lake::zorder`]. A point lookup decodes
/// one page per column, so small pages make lookups cheap; the page index (one entry per page)
/// stays small at this size (about 700 pages per column for a million rows).
pub const LOOKUP_PAGE_ROWS: usize = 2048;

/// Dictionary size limit per column chunk in files written by [`Lake::zorder`]. A lookup
/// reads and decompresses the whole dictionary page of each column it reads, whichever page
/// holds the key, so only low-cardinality columns (a status, a priority) keep a dictionary;
/// the others fall back to plain encoding after a few kilobytes, and zstd compresses them.
/// At 64 KiB, dictionaries were half the bytes a lookup decompressed.
pub const LOOKUP_DICTIONARY_BYTES: usize = 4 * 1024;

/// Writer settings for files laid out for lookups: small pages and dictionaries, with the
/// page statistics and offset index readers use to skip to the one page holding a key.
///
/// Pages are LZ4-compressed: a lookup decompresses one small page per column, and LZ4 does
/// that several times faster than zstd without the per-column-chunk codec contexts the
/// Parquet reader builds for zstd (which cost as much as the decompression itself).
/// Dictionary fallback and the page row limit are checked after each write batch, so batches
/// of a quarter page keep pages at exactly [`LOOKUP_PAGE_ROWS`] rows and dictionaries near
/// [`LOOKUP_DICTIONARY_BYTES`].
fn lookup_writer_properties() -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::Compression;
    use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
    WriterProperties::builder()
        .set_compression(Compression::LZ4_RAW)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(LOOKUP_PAGE_ROWS)
        .set_write_batch_size(LOOKUP_PAGE_ROWS / 4)
        .set_dictionary_page_size_limit(LOOKUP_DICTIONARY_BYTES)
        .build()
}

fn commit_properties(opts: &WriteOptions) -> CommitProperties {
    let mut cp = CommitProperties::default().with_metadata(opts.commit_metadata.clone());
    if let Some((app, version)) = &opts.transaction {
        cp = cp.with_application_transaction(Transaction::new(app, *version));
    }
    cp
}

/// Refuses assignments to columns the table does not have: delta-rs skips them silently and
/// still rewrites the matched rows and reports them as updated.
fn check_assigned_columns(
    t: &TableName,
    schema: &SchemaRef,
    alias: Option<&str>,
    set: &[(String, String)],
) -> Result<()> {
    for (column, _) in set {
        let mut name = column.as_str();
        if let Some(rest) = alias.and_then(|a| name.strip_prefix(a)?.strip_prefix('.')) {
            name = rest;
        }
        let name = name.trim_matches('"');
        let known = schema
            .fields()
            .iter()
            .any(|f| f.name() == name || f.name().eq_ignore_ascii_case(name));
        if known {
            continue;
        }
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let hint = names
            .iter()
            .map(|n| (strsim_distance(name, n), n))
            .filter(|(d, _)| *d <= 2)
            .min_by_key(|(d, _)| *d)
            .map(|(_, n)| format!("did you mean `{n}`? "))
            .unwrap_or_default();
        return Err(Error::SchemaMismatch {
            table: t.clone(),
            message: format!(
                "column `{name}` does not exist; {hint}columns are: {}",
                names.join(", ")
            ),
        });
    }
    Ok(())
}

/// The caller's session with Delta's query planner: writes from a plan add Delta's own
/// logical nodes (metrics observers), which a plain DataFusion session cannot plan. MERGE
/// does the same inside delta-rs; WRITE does not.
fn with_delta_planner(session: Arc<dyn Session>) -> Arc<dyn Session> {
    use deltalake::datafusion::execution::session_state::{SessionState, SessionStateBuilder};
    use deltalake::delta_datafusion::planner::DeltaPlanner;
    match session.as_any().downcast_ref::<SessionState>() {
        Some(state) => Arc::new(
            SessionStateBuilder::new_from_existing(state.clone())
                .with_query_planner(DeltaPlanner::new())
                .build(),
        ),
        None => session,
    }
}

fn check_partitions(t: &TableName, schema: &SchemaRef, partition_by: &[String]) -> Result<()> {
    for p in partition_by {
        if schema.field_with_name(p).is_err() {
            return Err(Error::SchemaMismatch {
                table: t.clone(),
                message: format!(
                    "partition column `{p}` is not a column; columns are: {}",
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// The table's logical schema: columns in their declared order with their declared types.
///
/// Not DataFusion's scan schema (`read_schema`), which moves partition columns to the end and
/// dictionary-encodes string partition values.
pub(crate) fn table_arrow_schema(table: &DeltaTable) -> Result<SchemaRef> {
    let state = table
        .snapshot()
        .map_err(Error::delta("reading the table schema"))?;
    Ok(state.snapshot().arrow_schema())
}

fn info_of(t: &TableName, table: &DeltaTable) -> Result<TableInfo> {
    let state = table
        .snapshot()
        .map_err(Error::delta(format!("reading `{t}`")))?;
    let mut rows = 0u64;
    let mut bytes = 0u64;
    let mut files = 0usize;
    let mut last_file: Option<i64> = None;
    for f in state.log_data().iter() {
        rows += f.num_records().unwrap_or(0) as u64;
        bytes += f.size().max(0) as u64;
        files += 1;
        last_file = last_file.max(Some(f.modification_time()));
    }
    let version = table.version().unwrap_or(0);
    let last_modified = state
        .version_timestamp(version)
        .or(last_file)
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    let meta = state.metadata();
    Ok(TableInfo {
        name: t.clone(),
        version,
        rows,
        bytes,
        files,
        last_modified,
        partition_columns: meta.partition_columns().to_vec(),
        schema: table_arrow_schema(table)?,
        description: meta.description().map(str::to_string),
    })
}

fn metric_u64(metrics: &serde_json::Value, name: &str) -> u64 {
    metrics
        .get(name)
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(0)
}

fn map_write_error(t: &TableName, e: DeltaTableError) -> Error {
    match e {
        DeltaTableError::SchemaMismatch { msg } => Error::SchemaMismatch {
            table: t.clone(),
            message: msg,
        },
        // Another writer won: a conflicting commit, retries exhausted, or (when retries are
        // off) the version taken. Decided by kind, not by message text: the conflict
        // messages ("Concurrent transaction failed.", "…deleted data this operation read")
        // share no common word.
        DeltaTableError::Transaction {
            source:
                source @ (TransactionError::CommitConflict(_)
                | TransactionError::MaxCommitAttempts(_)
                | TransactionError::VersionAlreadyExists(_)),
        } => Error::Conflict {
            table: t.clone(),
            message: source.to_string(),
        },
        e @ DeltaTableError::VersionAlreadyExists(_) => Error::Conflict {
            table: t.clone(),
            message: e.to_string(),
        },
        DeltaTableError::Transaction { source } => Error::Delta {
            context: format!("committing to `{t}`"),
            source: Box::new(DeltaTableError::Transaction { source }),
        },
        e => {
            let text = clean_message(&e.to_string());
            if text.contains("Schema error")
                || text.contains("Cast error")
                || (text.contains("schema") && text.contains("mismatch"))
            {
                Error::SchemaMismatch {
                    table: t.clone(),
                    message: text,
                }
            } else {
                Error::Delta {
                    context: format!("writing `{t}`"),
                    source: Box::new(e),
                }
            }
        }
    }
}

/// The innermost cause of a layered Delta/DataFusion message, without layer prefixes.
fn clean_message(text: &str) -> String {
    let last = text.rsplit("caused by").next().unwrap_or(text).trim();
    let mut s = last.to_string();
    loop {
        let before = s.len();
        for prefix in [
            "Generic DeltaTable error: ",
            "Arrow error: ",
            "Execution error: ",
            "External error: ",
            "Error during planning: ",
            "Schema error: ",
        ] {
            if let Some(rest) = s.strip_prefix(prefix) {
                s = rest.to_string();
            }
        }
        if s.len() == before {
            return s;
        }
    }
}

fn log_dir(t: &TableName) -> Path {
    Path::from(format!("{}/{}/_delta_log", t.namespace, t.name))
}

/// Levenshtein distance, for "did you mean" hints.
pub(crate) fn strsim_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
