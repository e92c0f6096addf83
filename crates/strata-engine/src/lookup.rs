//! Point lookups: a kept statement such as `SELECT … FROM t WHERE key = $1` answered by
//! reading only the Parquet pages that can hold the key, without planning it again.
//!
//! ```text
//!   plan (parameters unbound) ──optimize once──▶ Projection / Filter chain over one lake scan
//!                                                 with `column = $n` among the scan's filters
//!   run($n = 42): latest version's files ─▶ footers (cached) ─▶ row groups and pages whose
//!                 min/max admit 42 ─▶ rows whose key is 42 (late materialization)
//!                 ─▶ the chain's filters and projections, evaluated on those rows
//! ```
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
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::kernels::cmp;
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, DataFusionError, ParamValues, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::execution::SessionState;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::split_conjunction;
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
pub(crate) struct Footers(Mutex<HashMap<Path, (u64, ArrowReaderMetadata)>>);

impl Footers {
    async fn get(
        &self,
        store: &Arc<dyn ObjectStore>,
        f: &DataFile,
    ) -> Result<ArrowReaderMetadata, DataFusionError> {
        if let Some((size, meta)) = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&f.path)
            && *size == f.size
        {
            return Ok(meta.clone());
        }
        let mut reader = FileReader::new(store, f);
        let meta = ArrowReaderMetadata::load_async(
            &mut reader,
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
        )
        .await?;
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_FOOTERS {
            cache.clear();
        }
        cache.insert(f.path.clone(), (f.size, meta.clone()));
        Ok(meta)
    }
}

/// Reads byte ranges of one data file from the lake's store.
struct FileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl FileReader {
    fn new(store: &Arc<dyn ObjectStore>, f: &DataFile) -> Self {
        Self {
            store: Arc::clone(store),
            path: f.path.clone(),
            size: f.size,
        }
    }
}

fn store_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for FileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<bytes::Bytes>> {
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
    /// Filters pushed into the scan, applied again to the rows read.
    scan_filters: Vec<Expr>,
    /// The key column and the value it is compared with (a parameter or a constant).
    key_column: String,
    key: Expr,
    /// The plan above the scan, bottom up.
    steps: Vec<Step>,
    schema: DFSchemaRef,
    store: Arc<dyn ObjectStore>,
    footers: Arc<Footers>,
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
        store: Arc<dyn ObjectStore>,
        footers: Arc<Footers>,
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
                let Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: Operator::Eq,
                    right,
                }) = e
                else {
                    return None;
                };
                let (column, value) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), v) | (v, Expr::Column(c)) => (c, v),
                    _ => return None,
                };
                let valued = matches!(value, Expr::Placeholder(_) | Expr::Literal(..));
                let field = scan_schema.field_with_unqualified_name(&column.name).ok()?;
                (valued && keyable(field.data_type())).then(|| (column.name.clone(), value.clone()))
            })
        })?;
        Some(Self {
            provider,
            scan_schema,
            scan_filters: scan.filters.clone(),
            key_column,
            key,
            steps,
            schema: Arc::clone(optimized.schema()),
            store,
            footers,
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
        let scan = ScanRun::new(self, params)?;
        let mut out = Vec::new();
        if key.is_null() {
            // `column = NULL` holds for no row.
            return Ok(Some((table.version, out)));
        }
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
        let meta = self.footers.get(&self.store, f).await?;
        let file_schema = Arc::clone(meta.schema());
        let Some((key_index, key_field)) = file_schema.column_with_name(&self.key_column) else {
            // A file written before the column existed: its key is NULL in every row.
            return Ok(Read::None);
        };
        let planned = self
            .scan_schema
            .field_with_unqualified_name(&self.key_column)?
            .data_type();
        if !same_values(key_field.data_type(), planned) {
            return Ok(Read::Unreadable);
        }
        let Ok(key) = key.cast_to(key_field.data_type()) else {
            return Ok(Read::Unreadable);
        };
        let key = key.to_scalar()?;
        let md = meta.metadata();
        let parquet_schema = meta.parquet_schema();
        let stats = StatisticsConverter::try_new(&self.key_column, &file_schema, parquet_schema)?;
        let row_groups = md.row_groups();
        let admitted = admits(
            &stats.row_group_mins(row_groups.iter())?,
            &stats.row_group_maxes(row_groups.iter())?,
            &key,
        )?;
        let groups: Vec<usize> = (0..row_groups.len()).filter(|i| admitted[*i]).collect();
        if groups.is_empty() {
            return Ok(Read::None);
        }
        let mut selection = None;
        if let (Some(columns), Some(offsets)) = (md.column_index(), md.offset_index())
            && let Some(counts) = stats.data_page_row_counts(offsets, row_groups, &groups)?
        {
            let pages = admits(
                &stats.data_page_mins(columns, offsets, &groups)?,
                &stats.data_page_maxes(columns, offsets, &groups)?,
                &key,
            )?;
            if counts.len() == pages.len() {
                if !pages.iter().any(|p| *p) {
                    return Ok(Read::None);
                }
                let mut selectors: Vec<RowSelector> = Vec::new();
                for (rows, take) in counts.values().iter().zip(pages) {
                    let rows = usize::try_from(*rows).unwrap_or(usize::MAX);
                    match selectors.last_mut() {
                        Some(s) if s.skip != take => s.row_count += rows,
                        _ if take => selectors.push(RowSelector::select(rows)),
                        _ => selectors.push(RowSelector::skip(rows)),
                    }
                }
                selection = Some(RowSelection::from(selectors));
            }
        }
        let columns: Vec<usize> = self
            .scan_schema
            .fields()
            .iter()
            .filter_map(|field| file_schema.index_of(field.name()).ok())
            .collect();
        let predicate = ArrowPredicateFn::new(
            ProjectionMask::roots(parquet_schema, [key_index]),
            move |batch: RecordBatch| cmp::eq(batch.column(0), &key),
        );
        let reader = FileReader::new(&self.store, f);
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta.clone())
            .with_row_groups(groups)
            .with_projection(ProjectionMask::roots(parquet_schema, columns))
            .with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
        if let Some(selection) = selection {
            builder = builder.with_row_selection(selection);
        }
        let batches: Vec<RecordBatch> = builder.build()?.try_collect().await?;
        Ok(Read::Rows(batches))
    }

    /// `batch` (columns of a file) as the scan produces it: the scan's columns in its order
    /// and types, NULL for columns the file predates.
    fn scan_batch(&self, batch: RecordBatch) -> Result<RecordBatch, DataFusionError> {
        let rows = batch.num_rows();
        let schema = Arc::new(self.scan_schema.as_arrow().clone());
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
struct ScanRun {
    steps: Vec<PhysicalStep>,
}

enum PhysicalStep {
    Filter(Arc<dyn datafusion::physical_expr::PhysicalExpr>),
    Project(
        Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
        datafusion::arrow::datatypes::SchemaRef,
    ),
}

impl ScanRun {
    fn new(lookup: &KeyLookup, params: Option<&ParamValues>) -> Result<Self, DataFusionError> {
        let props = ExecutionProps::new();
        let planning = PhysicalPlanningContext::default();
        let physical = |e: &Expr, schema: &DFSchemaRef| {
            create_physical_expr(&bind(e.clone(), params)?, schema, &props, &planning)
        };
        let mut steps = Vec::with_capacity(lookup.scan_filters.len() + lookup.steps.len());
        for f in &lookup.scan_filters {
            steps.push(PhysicalStep::Filter(physical(f, &lookup.scan_schema)?));
        }
        for step in &lookup.steps {
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

/// For each (min, max) pair, whether `key` may lie within it (unknown bounds admit it).
fn admits(
    mins: &ArrayRef,
    maxes: &ArrayRef,
    key: &dyn datafusion::arrow::array::Datum,
) -> Result<Vec<bool>, DataFusionError> {
    let low = cmp::lt_eq(mins, key)?;
    let high = cmp::gt_eq(maxes, key)?;
    Ok(low
        .iter()
        .zip(high.iter())
        .map(|(l, h)| l.unwrap_or(true) && h.unwrap_or(true))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    #[test]
    fn unknown_bounds_admit_the_key() {
        let mins: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(10)]));
        let maxes: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), Some(3), None]));
        let key = Int64Array::new_scalar(4);
        assert_eq!(
            admits(&mins, &maxes, &key).unwrap(),
            vec![true, false, false]
        );
        let key = Int64Array::new_scalar(12);
        assert_eq!(
            admits(&mins, &maxes, &key).unwrap(),
            vec![false, false, true]
        );
    }

    #[test]
    fn keys_compare_within_a_value_family() {
        assert!(same_values(&DataType::Utf8, &DataType::Utf8View));
        assert!(!same_values(&DataType::Int32, &DataType::Int64));
        assert!(keyable(&DataType::Int32));
        assert!(!keyable(&DataType::Float64));
    }
}
