//! Point lookups: a kept statement such as `SELECT … FROM t WHERE key = $1` answered by
//! reading only the Parquet pages that can hold the key, without planning it again.
//!
//! ```text
//!   plan (parameters unbound) ──optimize once──▶ Projection / Filter chain over one lake scan
//!                                                 with `column = $n` among the scan's filters
//!   run($n = 42): latest version's files ─▶ footers (cached) ─▶ row groups and pages whose
//!                 min/max admit 42 ─▶ those pages' columns, decoded (cached) ─▶ rows whose
//!                 key is 42 ─▶ the chain's filters and projections, evaluated on those rows
//! ```
//!
//! Decoded pages are kept (within [`MAX_PAGE_BYTES`], least recently used out first), one
//! array per column of each page of the key column: a data file never changes, so a kept
//! page is never stale, and a lookup that finds its pages kept decodes nothing. Files
//! without a page index are read with the key compared before other columns are decoded (a
//! Parquet row filter), and nothing is kept.
//!
//! The general path re-optimizes and re-plans a prepared statement on every execution and
//! builds a Delta scan over every file of the table; for a lookup that work costs more than
//! reading the rows. A [`KeyLookup`] does the optimization once, when it is made, and keeps
//! the optimized chain: the row policies and column masks of the session's principal are
//! nodes of that chain (the access rule put them there), so they apply exactly as on the
//! general path. Each run reads the table at its latest version, like every kept plan
//! ([`crate::Engine::scan_latest_when_run`]).
//!
//! Only what can be read exactly this way is: tables without partition columns, column
//! mapping or deletion vectors, whose files live under the table's directory, and at most
//! [`MAX_LOOKUP_FILES`] files. For anything else [`KeyLookup::run`] answers `None` and the
//! caller takes the general path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::kernels::cmp;
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, DataFusionError, ParamValues, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::execution::SessionState;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator, Volatility};
use datafusion::optimizer::OptimizerConfig;
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, RowFilter, RowSelection, RowSelector,
};
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{
    PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader,
};
use datafusion::physical_expr::create_physical_expr;
use deltalake::DeltaTable;
use deltalake::{ObjectStore, Path};
use futures::FutureExt;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use object_store::ObjectStoreExt;
use strata_lake::TableName;

use crate::catalog::Latest;

/// Tables with more data files than this are looked up by the general path (whose file
/// pruning reads the statistics in the Delta log rather than every file's footer).
pub const MAX_LOOKUP_FILES: usize = 256;

/// Footers kept in memory; beyond this the cache starts over.
const MAX_FOOTERS: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// The data files of one version of a lake table, as a lookup reads them.
#[derive(Debug)]
pub(crate) struct TableFiles {
    /// The table version these are the files of.
    version: Option<u64>,
    /// `None` when a lookup cannot read this version's files directly.
    files: Option<Vec<DataFile>>,
}

#[derive(Debug)]
struct DataFile {
    /// Relative to the lake's root store.
    path: Path,
    size: u64,
}

impl TableFiles {
    /// The files of `table` (the lake table `t`) at the version it was opened at.
    pub(crate) fn of(t: &TableName, table: &DeltaTable) -> Self {
        Self {
            version: table.version(),
            files: Self::readable(t, table),
        }
    }

    fn readable(t: &TableName, table: &DeltaTable) -> Option<Vec<DataFile>> {
        let state = table.snapshot().ok()?;
        let meta = state.metadata();
        let mapped = meta
            .configuration()
            .get("delta.columnMapping.mode")
            .is_some_and(|mode| mode != "none");
        if mapped || !meta.partition_columns().is_empty() {
            return None;
        }
        let log = state.log_data();
        if log.num_files() > MAX_LOOKUP_FILES {
            return None;
        }
        let base = Path::from(t.namespace.as_str()).join(t.name.as_str());
        let mut files = Vec::with_capacity(log.num_files());
        for f in log.iter() {
            if f.deletion_vector_descriptor().is_some() || f.path().contains("://") {
                return None;
            }
            let path = f
                .object_store_path()
                .parts()
                .fold(base.clone(), |p, part| p.join(part));
            files.push(DataFile {
                path,
                size: u64::try_from(f.size()).ok()?,
            });
        }
        Some(files)
    }
}

/// Parquet footers (with their page indexes) of the files lookups read, by path.
#[derive(Debug, Default)]
pub(crate) struct Footers {
    files: Mutex<HashMap<Path, Arc<Footer>>>,
    /// The number the next file read gets ([`Footer::id`]).
    next_id: AtomicU64,
}

/// A data file as lookups know it.
#[derive(Debug)]
struct Footer {
    size: u64,
    meta: ArrowReaderMetadata,
    /// Names the file in the page cache (hashing a number, not a path, per column read).
    id: u64,
    /// The index of each key column looked up in the file (`None`: the file has no such
    /// column).
    keys: Mutex<Vec<(String, Option<Arc<KeyIndex>>)>>,
}

impl Footers {
    async fn get(&self, store: &Store, f: &DataFile) -> Result<Arc<Footer>, DataFusionError> {
        if let Some(footer) = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&f.path)
            && footer.size == f.size
        {
            return Ok(Arc::clone(footer));
        }
        let mut reader = FileReader::new(store, f);
        let meta = ArrowReaderMetadata::load_async(
            &mut reader,
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
        )
        .await?;
        let footer = Arc::new(Footer {
            size: f.size,
            meta,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            keys: Mutex::default(),
        });
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if files.len() >= MAX_FOOTERS {
            files.clear();
        }
        files.insert(f.path.clone(), Arc::clone(&footer));
        Ok(footer)
    }
}

impl Footer {
    /// The index of key column `column` in this file, built on first use.
    fn key_index(&self, column: &str) -> Result<Option<Arc<KeyIndex>>, DataFusionError> {
        if let Some((_, index)) = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(c, _)| c == column)
        {
            return Ok(index.clone());
        }
        let index = KeyIndex::of(&self.meta, column)?.map(Arc::new);
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((column.to_string(), index.clone()));
        Ok(index)
    }
}

/// What a lookup reads of a file's key column from the footer and page index, once per
/// file: the bounds of each row group, and of each of its pages with the rows they span.
#[derive(Debug)]
struct KeyIndex {
    /// The key's column in the file's Arrow schema.
    column: usize,
    group_mins: ArrayRef,
    group_maxes: ArrayRef,
    /// Per row group: its pages, or `None` when the page index does not describe them.
    groups: Vec<Option<GroupPages>>,
}

/// A page of the key column: (row group, first row in the group, rows).
type PageSpan = (usize, u64, u64);

#[derive(Debug)]
struct GroupPages {
    mins: ArrayRef,
    maxes: ArrayRef,
    /// (first row, rows) of each page, in the group.
    spans: Vec<(u64, u64)>,
}

impl KeyIndex {
    fn of(meta: &ArrowReaderMetadata, key_column: &str) -> Result<Option<Self>, DataFusionError> {
        let file_schema = meta.schema();
        let Some((column, _)) = file_schema.column_with_name(key_column) else {
            return Ok(None);
        };
        let md = meta.metadata();
        let stats = StatisticsConverter::try_new(key_column, file_schema, meta.parquet_schema())?;
        let row_groups = md.row_groups();
        let groups: Vec<Option<GroupPages>> = (0..row_groups.len())
            .map(|g| GroupPages::of(md, &stats, g))
            .collect::<Result<_, DataFusionError>>()?;
        Ok(Some(Self {
            column,
            group_mins: stats.row_group_mins(row_groups.iter())?,
            group_maxes: stats.row_group_maxes(row_groups.iter())?,
            groups,
        }))
    }

    /// The pages of the row groups admitting `key` that may hold it, as (row group, first
    /// row, rows); `Ok(None)` when some such group has no page index.
    fn pages(
        &self,
        key: &dyn datafusion::arrow::array::Datum,
    ) -> Result<Option<Vec<PageSpan>>, DataFusionError> {
        let admitted = admits(&self.group_mins, &self.group_maxes, key)?;
        let mut out = Vec::new();
        for g in admitted.set_indices() {
            let Some(Some(pages)) = self.groups.get(g) else {
                return Ok(None);
            };
            let keep = admits(&pages.mins, &pages.maxes, key)?;
            out.extend(keep.set_indices().filter_map(|p| {
                let &(first, rows) = pages.spans.get(p)?;
                Some((g, first, rows))
            }));
        }
        Ok(Some(out))
    }

    /// The row groups admitting `key`.
    fn groups(
        &self,
        key: &dyn datafusion::arrow::array::Datum,
    ) -> Result<Vec<usize>, DataFusionError> {
        Ok(admits(&self.group_mins, &self.group_maxes, key)?
            .set_indices()
            .collect())
    }
}

impl GroupPages {
    /// The pages of row group `g`, from the page index.
    fn of(
        md: &ParquetMetaData,
        stats: &StatisticsConverter<'_>,
        g: usize,
    ) -> Result<Option<Self>, DataFusionError> {
        let (Some(columns), Some(offsets), Some(leaf)) = (
            md.column_index(),
            md.offset_index(),
            stats.parquet_column_index(),
        ) else {
            return Ok(None);
        };
        let Some(locations) = offsets.get(g).and_then(|o| o.get(leaf)) else {
            return Ok(None);
        };
        let locations = locations.page_locations();
        let Ok(group_rows) = u64::try_from(md.row_group(g).num_rows()) else {
            return Ok(None);
        };
        let mut spans = Vec::with_capacity(locations.len());
        for (i, page) in locations.iter().enumerate() {
            let end = match locations.get(i + 1) {
                Some(next) => next.first_row_index,
                None => i64::try_from(group_rows).unwrap_or(i64::MAX),
            };
            let (Ok(first), Ok(end)) = (u64::try_from(page.first_row_index), u64::try_from(end))
            else {
                return Ok(None);
            };
            let Some(rows) = end.checked_sub(first) else {
                return Ok(None);
            };
            spans.push((first, rows));
        }
        let mins = stats.data_page_mins(columns, offsets, [g].iter())?;
        let maxes = stats.data_page_maxes(columns, offsets, [g].iter())?;
        if mins.len() != spans.len() || maxes.len() != spans.len() {
            return Ok(None);
        }
        Ok(Some(Self { mins, maxes, spans }))
    }
}

/// What lookups keep of the files they read: footers, and decoded pages.
#[derive(Debug, Default)]
pub(crate) struct FileCache {
    footers: Footers,
    pages: Pages,
}

/// Decoded pages of the files lookups read, within [`MAX_PAGE_BYTES`]: the rows of one page
/// of a key column (by file, row group and first row), one Arrow array per column. Data files
/// never change, so an entry is never stale; the least recently used go first.
#[derive(Debug, Default)]
struct Pages {
    /// Lookups read under the read lock, side by side; only a put writes.
    inner: RwLock<PagesInner>,
    /// Advances on every use; an entry's second field is the tick it was last used at.
    tick: AtomicU64,
}

#[derive(Debug, Default)]
struct PagesInner {
    entries: HashMap<PageKey, (ArrayRef, AtomicU64)>,
    bytes: usize,
}

/// Bytes of decoded pages kept for lookups (about a 1.5 M-row table of nine columns).
const MAX_PAGE_BYTES: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PageKey {
    /// The file's [`Footer::id`].
    file: u64,
    group: usize,
    first_row: u64,
    column: usize,
}

impl Pages {
    /// The kept arrays of `keys`, in order (`None`: not kept).
    fn get(&self, keys: &[PageKey]) -> Vec<Option<ArrayRef>> {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .map(|k| {
                inner.entries.get(k).map(|(array, used)| {
                    used.fetch_max(tick, Ordering::Relaxed);
                    Arc::clone(array)
                })
            })
            .collect()
    }

    fn put(&self, entries: impl IntoIterator<Item = (PageKey, ArrayRef)>) {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for (k, array) in entries {
            let size = array.get_array_memory_size();
            if let Some((old, _)) = inner.entries.insert(k, (array, AtomicU64::new(tick))) {
                inner.bytes -= old.get_array_memory_size();
            }
            inner.bytes += size;
        }
        if inner.bytes > MAX_PAGE_BYTES {
            // Down to three quarters of the budget, least recently used first.
            let mut by_use: Vec<(u64, usize)> = inner
                .entries
                .values()
                .map(|(a, t)| (t.load(Ordering::Relaxed), a.get_array_memory_size()))
                .collect();
            by_use.sort_unstable_by_key(|(t, _)| *t);
            let mut bytes = inner.bytes;
            let mut cut = 0;
            for (t, size) in by_use {
                if bytes <= MAX_PAGE_BYTES / 4 * 3 {
                    break;
                }
                bytes -= size;
                cut = t;
            }
            inner
                .entries
                .retain(|_, (_, t)| t.load(Ordering::Relaxed) > cut);
            inner.bytes = inner
                .entries
                .values()
                .map(|(a, _)| a.get_array_memory_size())
                .sum();
        }
    }
}

/// Where a lookup reads data files: the lake's store, and the lake's folder when it is on
/// the local file system.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) local_root: Option<std::path::PathBuf>,
}

/// Reads byte ranges of one data file from the lake's store.
struct FileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    /// The file on the local file system: a lookup's few small reads are made in place
    /// (from the page cache, microseconds) rather than handed to a blocking thread.
    local: Option<std::path::PathBuf>,
}

impl FileReader {
    fn new(store: &Store, f: &DataFile) -> Self {
        // Paths of data files are plain (identifiers and Delta's file names); one that is
        // not goes through the store, which decodes it.
        let local = store
            .local_root
            .as_ref()
            .filter(|_| !f.path.as_ref().contains('%'))
            .map(|root| root.join(f.path.as_ref()));
        Self {
            store: Arc::clone(&store.store),
            path: f.path.clone(),
            size: f.size,
            local,
        }
    }
}

fn store_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

/// `ranges` of the local file `path`.
fn read_local(
    path: &std::path::Path,
    ranges: &[std::ops::Range<u64>],
) -> datafusion::parquet::errors::Result<Vec<bytes::Bytes>> {
    use std::os::unix::fs::FileExt;
    let io = |e: std::io::Error| {
        ParquetError::External(format!("reading {}: {e}", path.display()).into())
    };
    let file = std::fs::File::open(path).map_err(io)?;
    ranges
        .iter()
        .map(|r| {
            let len = usize::try_from(r.end.saturating_sub(r.start))
                .map_err(|e| ParquetError::External(Box::new(e)))?;
            let mut buf = vec![0; len];
            file.read_exact_at(&mut buf, r.start).map_err(io)?;
            Ok(bytes::Bytes::from(buf))
        })
        .collect()
}

impl AsyncFileReader for FileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<bytes::Bytes>> {
        if let Some(path) = &self.local {
            let read = read_local(path, std::slice::from_ref(&range))
                .map(|mut v| v.pop().unwrap_or_default());
            return futures::future::ready(read).boxed();
        }
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<bytes::Bytes>>> {
        if let Some(path) = &self.local {
            return futures::future::ready(read_local(path, &ranges)).boxed();
        }
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(store_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// The kept plan
// ---------------------------------------------------------------------------------------------

/// A statement that reads one lake table by key, optimized once and run many times.
#[derive(Debug)]
pub struct KeyLookup {
    /// The scan's table (a [`Latest`]), resolved at its latest version on each run.
    provider: Arc<dyn TableProvider>,
    /// Columns the scan produces.
    scan_schema: DFSchemaRef,
    scan_arrow: SchemaRef,
    /// Filters pushed into the scan, applied again to the rows read (but for the key's own
    /// condition, which the reader applies exactly).
    scan_filters: Vec<Expr>,
    /// The key column and the value it is compared with (a parameter or a constant).
    key_column: String,
    key: Expr,
    /// The plan above the scan, bottom up.
    steps: Vec<Step>,
    /// The filters and steps ready to evaluate, when no parameter but the key's is in them.
    ready: Option<ScanRun>,
    schema: DFSchemaRef,
    store: Store,
    cache: Arc<FileCache>,
}

#[derive(Debug)]
enum Step {
    Filter {
        predicate: Expr,
        input: DFSchemaRef,
    },
    Project {
        exprs: Vec<Expr>,
        input: DFSchemaRef,
        output: DFSchemaRef,
    },
}

impl KeyLookup {
    /// The lookup that answers `plan` (not yet analyzed nor optimized; parameters may be
    /// unbound) in the session whose state is `state`, if it is one.
    pub(crate) fn of(
        plan: &LogicalPlan,
        state: &SessionState,
        store: Store,
        cache: Arc<FileCache>,
    ) -> Option<Self> {
        // Cheap refusal before analyzing: the shape.
        let (steps, _) = chain(plan)?;
        if !steps.iter().any(|s| matches!(s, Step::Filter { .. })) {
            return None;
        }
        let analyzed = state
            .analyzer()
            .execute_and_check(plan.clone(), &state.options(), |_, _| {})
            .ok()?;
        // Functions whose value the optimizer would fold into the kept plan (`now()`,
        // `random()`), in the statement or in a policy the analysis added.
        if !immutable(&analyzed) {
            return None;
        }
        let optimized = state
            .optimizer()
            .optimize(analyzed, state, |_, _| {})
            .ok()?;
        let (steps, scan) = chain(&optimized)?;
        if scan.fetch.is_some() {
            return None;
        }
        let provider = source_as_provider(&scan.source).ok()?;
        provider.downcast_ref::<Latest>()?;
        let scan_schema = Arc::clone(&scan.projected_schema);
        // Every pushed filter is applied again, so its columns must be among those read.
        let readable = scan
            .filters
            .iter()
            .all(|f| f.column_refs().iter().all(|c| scan_schema.has_column(c)));
        if !readable {
            return None;
        }
        let (key_column, key) = scan.filters.iter().find_map(|f| {
            split_conjunction(f).into_iter().find_map(|e| {
                let (column, value) = column_equals(e)?;
                let valued = matches!(value, Expr::Placeholder(_) | Expr::Literal(..));
                let field = scan_schema.field_with_unqualified_name(&column.name).ok()?;
                (valued && keyable(field.data_type())).then(|| (column.name.clone(), value.clone()))
            })
        })?;
        // The rows read hold exactly the key (the reader compares it, see `read`), so its
        // condition is not evaluated again; without it, a chain with no other parameter is
        // made ready to evaluate here, once, instead of on every run.
        let is_key = |e: &Expr| is_key_condition(e, &key_column, &key);
        let scan_filters: Vec<Expr> = scan
            .filters
            .iter()
            .filter_map(|f| without(f, &is_key))
            .collect();
        let mut steps = steps;
        let mut over_scan = true;
        steps.retain_mut(|step| match step {
            Step::Project { .. } => {
                over_scan = false;
                true
            }
            Step::Filter { predicate, .. } if over_scan => match without(predicate, &is_key) {
                Some(rest) => {
                    *predicate = rest;
                    true
                }
                None => false,
            },
            Step::Filter { .. } => true,
        });
        let parameters = scan_filters.iter().any(has_placeholder)
            || steps.iter().any(|step| match step {
                Step::Filter { predicate, .. } => has_placeholder(predicate),
                Step::Project { exprs, .. } => exprs.iter().any(has_placeholder),
            });
        let ready = if parameters {
            None
        } else {
            ScanRun::new(&scan_filters, &scan_schema, &steps, None).ok()
        };
        Some(Self {
            provider,
            scan_arrow: Arc::new(scan_schema.as_arrow().clone()),
            scan_schema,
            scan_filters,
            key_column,
            key,
            steps,
            ready,
            schema: Arc::clone(optimized.schema()),
            store,
            cache,
        })
    }

    /// Columns of the result.
    pub fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    /// The rows of the statement with `params` bound, or `None` when the table at its latest
    /// version cannot be read this way (the caller runs the statement's plan instead).
    pub async fn run(
        &self,
        params: Option<&ParamValues>,
    ) -> Result<Option<Vec<RecordBatch>>, DataFusionError> {
        Ok(self.run_versioned(params).await?.map(|(_, rows)| rows))
    }

    /// As [`KeyLookup::run`], with the table version the rows were read from.
    pub async fn run_versioned(
        &self,
        params: Option<&ParamValues>,
    ) -> Result<Option<(Option<u64>, Vec<RecordBatch>)>, DataFusionError> {
        let key = match &self.key {
            Expr::Literal(v, _) => v.clone(),
            Expr::Placeholder(p) => match params {
                Some(params) => params.get_placeholders_with_values(&p.id)?.value,
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        let Some(latest) = self.provider.downcast_ref::<Latest>() else {
            return Ok(None);
        };
        let (_, table) = latest.resolve_with_files().await?;
        let Some(files) = &table.files else {
            return Ok(None);
        };
        let mut out = Vec::new();
        if key.is_null() {
            // `column = NULL` holds for no row.
            return Ok(Some((table.version, out)));
        }
        let built;
        let scan = match &self.ready {
            Some(ready) => ready,
            None => {
                built = ScanRun::new(&self.scan_filters, &self.scan_schema, &self.steps, params)?;
                &built
            }
        };
        for f in files {
            match self.read(f, &key).await? {
                Read::Rows(batches) => {
                    for b in batches {
                        let b = scan.apply(self.scan_batch(b)?)?;
                        if b.num_rows() > 0 {
                            out.push(b);
                        }
                    }
                }
                Read::None => {}
                Read::Unreadable => return Ok(None),
            }
        }
        Ok(Some((table.version, out)))
    }

    /// The rows of `f` whose key column equals `key`, with the columns the scan reads.
    async fn read(&self, f: &DataFile, key: &ScalarValue) -> Result<Read, DataFusionError> {
        let footer = self.cache.footers.get(&self.store, f).await?;
        let index = match footer.key_index(&self.key_column) {
            Ok(Some(index)) => index,
            // A file written before the column existed: its key is NULL in every row.
            Ok(None) => return Ok(Read::None),
            // Statistics of a type this reader cannot compare: the general path reads it.
            Err(_) => return Ok(Read::Unreadable),
        };
        let meta = &footer.meta;
        let file_schema = meta.schema();
        let key_index = index.column;
        let planned = self
            .scan_schema
            .field_with_unqualified_name(&self.key_column)?
            .data_type();
        let file_type = file_schema.field(key_index).data_type();
        if !same_values(file_type, planned) {
            return Ok(Read::Unreadable);
        }
        let Ok(key) = key.cast_to(file_type) else {
            return Ok(Read::Unreadable);
        };
        let key = key.to_scalar()?;
        let mut columns: Vec<usize> = self
            .scan_schema
            .fields()
            .iter()
            .filter_map(|field| file_schema.index_of(field.name()).ok())
            .collect();
        if let Some(wanted) = index.pages(&key)? {
            if !columns.contains(&key_index) {
                columns.push(key_index);
            }
            columns.sort_unstable();
            let at = columns.binary_search(&key_index).unwrap_or_default();
            let schema = Arc::new(file_schema.project(&columns)?);
            let mut out = Vec::with_capacity(wanted.len());
            for span in wanted {
                let page = self.page(f, &footer, span, &columns, &schema).await?;
                let keep = cmp::eq(page.column(at), &key)?;
                let n = keep.true_count();
                if n == 0 {
                    continue;
                }
                // The matching rows are one, or a run (pages ordered by the key): a slice
                // shares the kept page's buffers instead of copying every column.
                let first = keep.values().set_indices().next().unwrap_or_default();
                let run = keep.null_count() == 0
                    && first + n <= keep.len()
                    && keep.values().slice(first, n).count_set_bits() == n;
                out.push(if run {
                    page.slice(first, n)
                } else {
                    filter_record_batch(&page, &keep)?
                });
            }
            return Ok(Read::Rows(out));
        }
        // No page index to keep pages by: the reader compares the key before it decodes
        // the other columns (a row filter) in the row groups whose bounds admit it.
        let groups = index.groups(&key)?;
        if groups.is_empty() {
            return Ok(Read::None);
        }
        let parquet_schema = meta.parquet_schema();
        let predicate = ArrowPredicateFn::new(
            ProjectionMask::roots(parquet_schema, [key_index]),
            move |batch: RecordBatch| cmp::eq(batch.column(0), &key),
        );
        let reader = FileReader::new(&self.store, f);
        let batches: Vec<RecordBatch> =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta.clone())
                .with_row_groups(groups)
                .with_projection(ProjectionMask::roots(parquet_schema, columns))
                .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
                .build()?
                .try_collect()
                .await?;
        Ok(Read::Rows(batches))
    }

    /// Rows `first_row ..+ rows` of row group `group` of `f` (one page of the key column),
    /// with the file's `columns` (ascending; `schema` is the file's schema of them), from the
    /// cache or decoded and kept.
    async fn page(
        &self,
        f: &DataFile,
        footer: &Footer,
        (group, first_row, rows): PageSpan,
        columns: &[usize],
        schema: &SchemaRef,
    ) -> Result<RecordBatch, DataFusionError> {
        let meta = &footer.meta;
        let key = |column: usize| PageKey {
            file: footer.id,
            group,
            first_row,
            column,
        };
        let keys: Vec<PageKey> = columns.iter().map(|c| key(*c)).collect();
        let mut arrays = self.cache.pages.get(&keys);
        let missing: Vec<usize> = columns
            .iter()
            .zip(&arrays)
            .filter(|(_, a)| a.is_none())
            .map(|(c, _)| *c)
            .collect();
        if !missing.is_empty() {
            let group_rows =
                u64::try_from(meta.metadata().row_group(group).num_rows()).unwrap_or_default();
            let as_len = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
            let selection = RowSelection::from(vec![
                RowSelector::skip(as_len(first_row)),
                RowSelector::select(as_len(rows)),
                RowSelector::skip(as_len(group_rows.saturating_sub(first_row + rows))),
            ]);
            let reader = FileReader::new(&self.store, f);
            let batches: Vec<RecordBatch> =
                ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta.clone())
                    .with_row_groups(vec![group])
                    .with_projection(ProjectionMask::roots(
                        meta.parquet_schema(),
                        missing.clone(),
                    ))
                    .with_row_selection(selection)
                    .with_batch_size(as_len(rows).max(1))
                    .build()?
                    .try_collect()
                    .await?;
            let read = Arc::new(meta.schema().project(&missing)?);
            let decoded = concat_batches(&read, &batches)?;
            if decoded.num_rows() as u64 != rows {
                return Err(DataFusionError::Internal(format!(
                    "a page of {} read {} rows, not {rows}",
                    f.path,
                    decoded.num_rows()
                )));
            }
            let mut fresh = Vec::with_capacity(missing.len());
            for (i, c) in missing.iter().enumerate() {
                let array = Arc::clone(decoded.column(i));
                if let Some(at) = columns.iter().position(|x| x == c) {
                    arrays[at] = Some(Arc::clone(&array));
                }
                fresh.push((key(*c), array));
            }
            self.cache.pages.put(fresh);
        }
        let arrays: Vec<ArrayRef> = arrays.into_iter().flatten().collect();
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(usize::try_from(rows).unwrap_or(0))),
        )?)
    }

    /// `batch` (columns of a file) as the scan produces it: the scan's columns in its order
    /// and types, NULL for columns the file predates.
    fn scan_batch(&self, batch: RecordBatch) -> Result<RecordBatch, DataFusionError> {
        let rows = batch.num_rows();
        let schema = Arc::clone(&self.scan_arrow);
        let columns = schema
            .fields()
            .iter()
            .map(|field| match batch.column_by_name(field.name()) {
                Some(c) if c.data_type() == field.data_type() => Ok(Arc::clone(c)),
                Some(c) => Ok(cast(c, field.data_type())?),
                None => Ok(datafusion::arrow::array::new_null_array(
                    field.data_type(),
                    rows,
                )),
            })
            .collect::<Result<Vec<ArrayRef>, DataFusionError>>()?;
        Ok(RecordBatch::try_new_with_options(
            schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

enum Read {
    Rows(Vec<RecordBatch>),
    /// No row of the file can hold the key.
    None,
    /// The file cannot be read exactly this way.
    Unreadable,
}

/// The chain's expressions with one run's parameters bound, ready to evaluate.
#[derive(Debug)]
struct ScanRun {
    steps: Vec<PhysicalStep>,
}

#[derive(Debug)]
enum PhysicalStep {
    Filter(Arc<dyn datafusion::physical_expr::PhysicalExpr>),
    Project(
        Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
        datafusion::arrow::datatypes::SchemaRef,
    ),
}

impl ScanRun {
    fn new(
        scan_filters: &[Expr],
        scan_schema: &DFSchemaRef,
        chain: &[Step],
        params: Option<&ParamValues>,
    ) -> Result<Self, DataFusionError> {
        let props = ExecutionProps::new();
        let planning = PhysicalPlanningContext::default();
        let physical = |e: &Expr, schema: &DFSchemaRef| {
            create_physical_expr(&bind(e.clone(), params)?, schema, &props, &planning)
        };
        let mut steps = Vec::with_capacity(scan_filters.len() + chain.len());
        for f in scan_filters {
            steps.push(PhysicalStep::Filter(physical(f, scan_schema)?));
        }
        for step in chain {
            steps.push(match step {
                Step::Filter { predicate, input } => {
                    PhysicalStep::Filter(physical(predicate, input)?)
                }
                Step::Project {
                    exprs,
                    input,
                    output,
                } => PhysicalStep::Project(
                    exprs
                        .iter()
                        .map(|e| physical(e, input))
                        .collect::<Result<_, _>>()?,
                    Arc::new(output.as_arrow().clone()),
                ),
            });
        }
        Ok(Self { steps })
    }

    fn apply(&self, mut batch: RecordBatch) -> Result<RecordBatch, DataFusionError> {
        for step in &self.steps {
            let rows = batch.num_rows();
            batch = match step {
                PhysicalStep::Filter(predicate) => {
                    let keep = predicate.evaluate(&batch)?.into_array(rows)?;
                    let keep = keep
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| {
                            DataFusionError::Internal("a filter that is not boolean".into())
                        })?;
                    filter_record_batch(&batch, keep)?
                }
                PhysicalStep::Project(exprs, schema) => {
                    let columns = exprs
                        .iter()
                        .map(|e| e.evaluate(&batch)?.into_array(rows))
                        .collect::<Result<Vec<_>, _>>()?;
                    RecordBatch::try_new_with_options(
                        Arc::clone(schema),
                        columns,
                        &RecordBatchOptions::new().with_row_count(Some(rows)),
                    )?
                }
            };
        }
        Ok(batch)
    }
}

/// `e` with its parameters replaced by their values.
fn bind(e: Expr, params: Option<&ParamValues>) -> Result<Expr, DataFusionError> {
    e.transform(|e| match e {
        Expr::Placeholder(p) => {
            let params = params
                .ok_or_else(|| DataFusionError::Plan(format!("no value for parameter {}", p.id)))?;
            let mut value = params.get_placeholders_with_values(&p.id)?.value;
            if let Some(field) = &p.field
                && value.data_type() != *field.data_type()
            {
                value = value.cast_to(field.data_type())?;
            }
            Ok(Transformed::yes(Expr::Literal(value, None)))
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

/// `(column, value)` when `e` is `column = value`, either way round.
fn column_equals(e: &Expr) -> Option<(&datafusion::common::Column, &Expr)> {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = e
    else {
        return None;
    };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), v) | (v, Expr::Column(c)) => Some((c, v)),
        _ => None,
    }
}

/// Whether `e` is the lookup's key condition: `key_column = key` (either way round).
fn is_key_condition(e: &Expr, key_column: &str, key: &Expr) -> bool {
    column_equals(e).is_some_and(|(c, v)| c.name == key_column && v == key)
}

/// `predicate` without its top-level conditions that `drop` picks; `None` when none is left.
fn without(predicate: &Expr, drop: &impl Fn(&Expr) -> bool) -> Option<Expr> {
    conjunction(
        split_conjunction(predicate)
            .into_iter()
            .filter(|e| !drop(e))
            .cloned(),
    )
}

fn has_placeholder(e: &Expr) -> bool {
    e.exists(|e| Ok(matches!(e, Expr::Placeholder(_))))
        .unwrap_or(true)
}

/// The nodes above the scan (bottom up) and the scan, when `plan` is a chain of projections,
/// filters and aliases over one table scan.
fn chain(plan: &LogicalPlan) -> Option<(Vec<Step>, &datafusion::logical_expr::TableScan)> {
    let mut steps = Vec::new();
    let mut node = plan;
    let scan = loop {
        match node {
            LogicalPlan::Projection(p) => {
                steps.push(Step::Project {
                    exprs: p.expr.clone(),
                    input: Arc::clone(p.input.schema()),
                    output: Arc::clone(&p.schema),
                });
                node = &p.input;
            }
            LogicalPlan::Filter(f) => {
                steps.push(Step::Filter {
                    predicate: f.predicate.clone(),
                    input: Arc::clone(f.input.schema()),
                });
                node = &f.input;
            }
            // Renames qualifiers only; the columns are the same.
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::TableScan(scan) => break scan,
            _ => return None,
        }
    };
    steps.reverse();
    Some((steps, scan))
}

/// Whether every function `plan` calls gives the same answer each time (the kept plan is
/// optimized once, and the optimizer folds `now()` into a constant).
fn immutable(plan: &LogicalPlan) -> bool {
    let mut pure = true;
    let _ = plan.apply(|node| {
        let _ = node.apply_expressions(|e| {
            e.apply(|e| {
                let volatile = match e {
                    Expr::ScalarFunction(f) => {
                        f.func.signature().volatility != Volatility::Immutable
                    }
                    Expr::ScalarVariable(..)
                    | Expr::ScalarSubquery(_)
                    | Expr::Exists(_)
                    | Expr::InSubquery(_) => true,
                    _ => false,
                };
                pure &= !volatile;
                Ok(if pure {
                    TreeNodeRecursion::Continue
                } else {
                    TreeNodeRecursion::Stop
                })
            })
        });
        Ok(if pure {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    pure
}

/// Types a lookup compares keys of (exactly, as the file stores them).
fn keyable(t: &DataType) -> bool {
    t.is_integer()
        || matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Date32
                | DataType::Date64
                | DataType::Decimal128(..)
                | DataType::Timestamp(..)
        )
}

/// Whether a file's column type holds the same values as the scan's: equal, or strings in
/// another layout, or timestamps of the same unit in another zone spelling.
fn same_values(file: &DataType, scan: &DataType) -> bool {
    use DataType::*;
    match (file, scan) {
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Timestamp(a, za), Timestamp(b, zb)) => a == b && za.is_some() == zb.is_some(),
        (a, b) => a == b,
    }
}

/// For each (min, max) pair, whether `key` may lie within it (unknown bounds admit it), as
/// bits: a lookup visits only the set ones.
fn admits(
    mins: &ArrayRef,
    maxes: &ArrayRef,
    key: &dyn datafusion::arrow::array::Datum,
) -> Result<BooleanBuffer, DataFusionError> {
    // A null comparison (an unknown bound) counts as true.
    let open = |b: BooleanArray| -> BooleanBuffer {
        match b.nulls() {
            Some(valid) => b.values() | &!valid.inner(),
            None => b.values().clone(),
        }
    };
    let low = open(cmp::lt_eq(mins, key)?);
    let high = open(cmp::gt_eq(maxes, key)?);
    Ok(&low & &high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    #[test]
    fn unknown_bounds_admit_the_key() {
        let mins: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(10)]));
        let maxes: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), Some(3), None]));
        let admitted = |key: i64| -> Vec<bool> {
            let key = Int64Array::new_scalar(key);
            admits(&mins, &maxes, &key).unwrap().iter().collect()
        };
        assert_eq!(admitted(4), vec![true, false, false]);
        assert_eq!(admitted(12), vec![false, false, true]);
    }

    #[test]
    fn kept_pages_stay_within_their_budget_least_recently_used_out_first() {
        let key = |first_row: u64| PageKey {
            file: 1,
            group: 0,
            first_row,
            column: 0,
        };
        // A little over 1/11 of the budget each: the eleventh page overflows it.
        let page = || -> ArrayRef { Arc::new(Int64Array::from(vec![7; MAX_PAGE_BYTES / 88])) };
        let pages = Pages::default();
        for i in 0..10 {
            pages.put([(key(i), page())]);
        }
        // Page 0 used again: the oldest is now page 1.
        assert!(pages.get(&[key(0)])[0].is_some());
        pages.put([(key(10), page())]);
        let kept: Vec<bool> = (0..=10)
            .map(|i| pages.get(&[key(i)])[0].is_some())
            .collect();
        assert!(kept[0] && kept[10], "{kept:?}");
        assert!(!kept[1] && !kept[2], "{kept:?}");
        let inner = pages.inner.read().unwrap();
        assert!(inner.bytes <= MAX_PAGE_BYTES, "{}", inner.bytes);
        assert_eq!(
            inner.bytes,
            inner
                .entries
                .values()
                .map(|(a, _)| a.get_array_memory_size())
                .sum::<usize>()
        );
    }

    #[test]
    fn key_indexes_give_the_pages_that_admit_a_key() {
        use datafusion::parquet::arrow::ArrowWriter;
        use datafusion::parquet::file::properties::WriterProperties;
        let batch = RecordBatch::try_from_iter([(
            "k",
            Arc::new(Int64Array::from_iter_values(0..10)) as ArrayRef,
        )])
        .unwrap();
        let props = WriterProperties::builder()
            .set_data_page_row_count_limit(4)
            .set_write_batch_size(4)
            .build();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let meta = ArrowReaderMetadata::load(
            &bytes::Bytes::from(buf),
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
        )
        .unwrap();
        let index = KeyIndex::of(&meta, "k").unwrap().unwrap();
        let pages = |k: i64| index.pages(&Int64Array::new_scalar(k)).unwrap();
        // Pages of rows 0..4, 4..8 and 8..10.
        assert_eq!(pages(5), Some(vec![(0, 4, 4)]));
        assert_eq!(pages(9), Some(vec![(0, 8, 2)]));
        assert_eq!(pages(42), Some(vec![]));
        assert_eq!(index.groups(&Int64Array::new_scalar(3)).unwrap(), vec![0]);
        assert!(KeyIndex::of(&meta, "other").unwrap().is_none());
    }

    #[test]
    fn keys_compare_within_a_value_family() {
        assert!(same_values(&DataType::Utf8, &DataType::Utf8View));
        assert!(!same_values(&DataType::Int32, &DataType::Int64));
        assert!(keyable(&DataType::Int32));
        assert!(!keyable(&DataType::Float64));
    }
}
