//! Files: CSV/TSV, Excel, JSON/NDJSON and Parquet from a local folder or object storage, selected by
//! glob, loaded incrementally by new files.
//!
//! ```yaml
//! # sources/drops.yml
//! type: files
//! url: ./landing            # a folder (relative to the project) or s3://bucket/prefix
//! options:                  # object store options, as for the lake (aws_endpoint, …)
//!   aws_region: eu-west-1
//! streams:
//!   - name: orders
//!     mode: incremental     # only files not loaded before (changed files load again)
//!     primary_key: [order_id]   # optional: merge on it instead of appending
//!     options:
//!       path: "orders/**/*.csv"   # glob under `url`: `*` within a folder, `**` across
//!       delimiter: ";"
//!       encoding: latin1
//!       column_types: "zip=text, amount=decimal(12,2)"
//! ```
//!
//! Stream options:
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `path` | glob of the files, relative to `url` (required) | |
//! | `format` | `csv`, `tsv`, `xlsx`, `json`, `ndjson` (`jsonl`), `parquet` | from the extension |
//! | `delimiter` | one character; `\t` for tab | `,` (`\t` for tsv) |
//! | `header` | the first row holds column names | `true` |
//! | `quote` / `escape` | quote character / escape character | `"` / doubled quotes |
//! | `comment` | lines starting with it are skipped | none |
//! | `encoding` | `utf-8`, `latin1`, `windows-1252`, any WHATWG label | `utf-8` |
//! | `skip_rows` | rows above the header to skip | `0` |
//! | `null_values` | comma-separated strings read as NULL (empty is always NULL) | |
//! | `column_types` | `name=type, …` overriding inference (`text`, `bigint`, `double`, `boolean`, `date`, `timestamp`, `timestamptz`, `decimal(p,s)`) | inferred |
//! | `sample_rows` | rows per file used to infer types | `10000`; JSON: the whole file |
//! | `sheet` | Excel sheet | the first |
//!
//! CSV and Excel column names are normalized to `snake_case` (`Order Date` → `order_date`),
//! as dlt does; JSON fields keep their names, nested objects flattened to `parent__child`
//! ([`crate::json`]). Every row carries `_file`, the path it came from. Files ending in `.gz` are
//! decompressed. A line that does not fit (wrong field count, a value that is not its
//! column's type, invalid text in the encoding) goes to `<destination>__rejected` with the
//! file, line and reason, or stops the stream with `on_bad_rows: fail`.
//!
//! The files loaded (path, size and version tag) are the stream's state, committed with
//! the rows: a run killed midway loads the same files again, never half of them twice.

mod csv;
mod ndjson;
mod values;
mod xlsx;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use strata_lake::deltalake::logstore::ObjectStoreRef;
use strata_project::{SourceDef, StreamDef, SyncMode};
use url::Url;

use self::csv::CsvFormat;
use self::values::{Builder, Value, parse_type_name};
use self::xlsx::XlsxFormat;
use crate::{
    BatchStream, DiscoveredStream, Error, ReadContext, ReadReport, RejectedRow, Result, Source,
};

/// Rows per batch handed to the writer.
pub(crate) const BATCH_ROWS: usize = 8192;

/// The column holding each row's file.
pub const FILE_COLUMN: &str = "_file";

const OPTIONS: &[&str] = &[
    "path",
    "format",
    "delimiter",
    "header",
    "quote",
    "escape",
    "comment",
    "encoding",
    "skip_rows",
    "null_values",
    "column_types",
    "sample_rows",
    "sheet",
];

/// Files under a folder or object storage prefix.
pub struct FilesSource {
    name: String,
    streams: Vec<StreamDef>,
    base: Url,
    store_options: HashMap<String, String>,
}

/// An error inside one file: fatal for the stream, reported with the file's name.
#[derive(Debug)]
pub(crate) struct FileError {
    pub line: Option<u64>,
    pub message: String,
}

/// Column names and inferred types of a file.
#[derive(Debug, Default, Clone)]
pub(crate) struct Columns {
    pub names: Vec<String>,
    pub types: Vec<Option<DataType>>,
}

#[derive(Debug, Clone)]
enum Format {
    Csv(CsvFormat),
    Xlsx(XlsxFormat),
    Json(ndjson::Layout),
    Parquet,
}

/// A stream's validated options.
#[derive(Debug, Clone)]
struct Plan {
    pattern: glob::Pattern,
    /// The literal folder the glob starts in.
    prefix: String,
    format: Format,
    column_types: Vec<(String, DataType)>,
    sample_rows: usize,
}

#[derive(Debug, Clone)]
struct FileEntry {
    location: Path,
    /// Path relative to the source's `url`; what `_file` holds.
    rel: String,
    size: u64,
    /// Size and version tag: a file whose tag changes is loaded again.
    tag: String,
}

impl FilesSource {
    /// Validates the definition. A relative `url` is taken from the project's root.
    pub fn new(def: &SourceDef) -> Result<Self> {
        let raw = def.url.clone().unwrap_or_else(|| ".".to_string());
        let base = match Url::parse(&raw) {
            Ok(mut u) if u.scheme().len() > 1 => {
                if !u.path().ends_with('/') {
                    let p = format!("{}/", u.path());
                    u.set_path(&p);
                }
                u
            }
            _ => {
                let p = PathBuf::from(&raw);
                let abs = if p.is_absolute() {
                    p
                } else {
                    project_root(&def.file).join(p)
                };
                let abs = std::fs::canonicalize(&abs).map_err(|e| {
                    Error::config(
                        &def.name,
                        &format!("folder `{}` cannot be opened: {e}", abs.display()),
                    )
                })?;
                Url::from_directory_path(&abs).map_err(|_| {
                    Error::config(
                        &def.name,
                        &format!("`{}` is not a folder path", abs.display()),
                    )
                })?
            }
        };
        for s in &def.streams {
            plan(&def.name, s)?;
        }
        Ok(Self {
            name: def.name.clone(),
            streams: def.streams.clone(),
            base,
            store_options: def.options.clone().into_iter().collect(),
        })
    }

    fn store(&self) -> Result<ObjectStoreRef> {
        strata_lake::open_store(&self.base, &self.store_options).map_err(|e| Error::Connect {
            source_name: self.name.clone(),
            message: e.to_string(),
            retryable: false,
        })
    }

    fn read_err(&self, stream: &StreamDef, message: String) -> Error {
        Error::Read {
            source_name: self.name.clone(),
            stream: Some(stream.name.clone()),
            message,
        }
    }

    /// The stream's schema over `files`: inferred (CSV, Excel, JSON) or declared (Parquet),
    /// merged across files by column name.
    async fn infer(
        &self,
        store: &ObjectStoreRef,
        plan: &Plan,
        stream: &StreamDef,
        files: &[FileEntry],
    ) -> Result<SchemaRef> {
        let mut columns = Columns::default();
        for f in files {
            let c = sample_file(store, plan, f)
                .await
                .map_err(|e| file_error(&self.name, &stream.name, f, e))?;
            if let Format::Parquet = plan.format {
                // Parquet types are declared, not inferred: the first file's type of a
                // column stands, later files are cast to it (or fail naming the column).
                for (n, t) in c.names.into_iter().zip(c.types) {
                    if !columns.names.contains(&n) {
                        columns.names.push(n);
                        columns.types.push(t);
                    }
                }
            } else {
                merge_columns(&mut columns, c);
            }
        }
        Ok(stream_schema(stream, plan, columns))
    }

    async fn list(&self, store: &ObjectStoreRef, plan: &Plan) -> Result<Vec<FileEntry>> {
        let prefix = (!plan.prefix.is_empty()).then(|| Path::from(plan.prefix.as_str()));
        let found: Vec<object_store::ObjectMeta> = store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| Error::Connect {
                source_name: self.name.clone(),
                message: format!(
                    "cannot list `{}{}`: {e}",
                    strata_types::redact_url_password(self.base.as_str()),
                    plan.prefix
                ),
                retryable: true,
            })?;
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        let mut files: Vec<FileEntry> = found
            .into_iter()
            .filter(|m| plan.pattern.matches_with(m.location.as_ref(), opts))
            .map(|m| FileEntry {
                rel: m.location.to_string(),
                tag: format!(
                    "{}:{}",
                    m.size,
                    m.e_tag
                        .clone()
                        .unwrap_or_else(|| m.last_modified.to_rfc3339())
                ),
                size: m.size,
                location: m.location,
            })
            .collect();
        files.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(files)
    }
}

fn project_root(source_file: &FsPath) -> PathBuf {
    // sources/<name>.yml → the project folder.
    source_file
        .parent()
        .and_then(|p| p.parent())
        .map(FsPath::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn one_char(source: &str, stream: &str, key: &str, v: &str) -> Result<u8> {
    let v = match v {
        "\\t" | "tab" => "\t",
        other => other,
    };
    match v.as_bytes() {
        [b] => Ok(*b),
        _ => Err(Error::config(
            source,
            &format!("stream `{stream}`: `{key}` must be one ASCII character, not `{v}`"),
        )),
    }
}

fn plan(source: &str, stream: &StreamDef) -> Result<Plan> {
    let cfg = |m: String| Error::config(source, &format!("stream `{}`: {m}", stream.name));
    for k in stream.options.keys() {
        if !OPTIONS.contains(&k.as_str()) {
            return Err(cfg(format!(
                "unknown option `{k}`; files streams take: {}",
                OPTIONS.join(", ")
            )));
        }
    }
    if stream.filter.is_some() {
        return Err(cfg(
            "`filter:` is not available for files; load every row and filter in a model".into(),
        ));
    }
    let path = stream
        .options
        .get("path")
        .ok_or_else(|| {
            cfg("needs `options: {path: \"folder/*.csv\"}`, a glob of the files to load".into())
        })?
        .trim_start_matches("./")
        .trim_start_matches('/')
        .to_string();
    let pattern =
        glob::Pattern::new(&path).map_err(|e| cfg(format!("`path` is not a valid glob: {e}")))?;
    let prefix: Vec<&str> = path
        .split('/')
        .take_while(|seg| !seg.contains(['*', '?', '[']))
        .collect();
    // The last segment is a file name unless the glob continues below it.
    let prefix = if prefix.len() == path.split('/').count() {
        prefix[..prefix.len().saturating_sub(1)].join("/")
    } else {
        prefix.join("/")
    };
    let ext = path
        .trim_end_matches('*')
        .trim_end_matches(".gz")
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .filter(|e| !e.contains(['*', '/', '?']));
    let kind = stream
        .options
        .get("format")
        .map(|f| f.to_ascii_lowercase())
        .or(ext)
        .ok_or_else(|| {
            cfg(
                "cannot tell the format from `path`; set `format:` (csv, tsv, xlsx or parquet)"
                    .into(),
            )
        })?;
    let get = |k: &str| stream.options.get(k).map(String::as_str);
    let bool_opt = |k: &str, default: bool| -> Result<bool> {
        match get(k) {
            None => Ok(default),
            Some("true" | "yes") => Ok(true),
            Some("false" | "no") => Ok(false),
            Some(v) => Err(cfg(format!("`{k}` must be true or false, not `{v}`"))),
        }
    };
    let usize_opt = |k: &str, default: usize| -> Result<usize> {
        get(k)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| cfg(format!("`{k}` must be a whole number, not `{v}`")))
            })
            .unwrap_or(Ok(default))
    };
    let format = match kind.as_str() {
        "csv" | "tsv" | "tab" | "txt" => {
            let default_delim = if kind == "csv" || kind == "txt" {
                b','
            } else {
                b'\t'
            };
            let mut f = CsvFormat::new(match get("delimiter") {
                Some(d) => one_char(source, &stream.name, "delimiter", d)?,
                None => default_delim,
            });
            f.header = bool_opt("header", true)?;
            if let Some(q) = get("quote") {
                f.quote = one_char(source, &stream.name, "quote", q)?;
            }
            if let Some(q) = get("escape") {
                f.escape = Some(one_char(source, &stream.name, "escape", q)?);
            }
            if let Some(q) = get("comment") {
                f.comment = Some(one_char(source, &stream.name, "comment", q)?);
            }
            if let Some(e) = get("encoding") {
                let label = match e.to_ascii_lowercase().as_str() {
                    "latin-1" => "latin1".to_string(),
                    other => other.to_string(),
                };
                f.encoding = encoding_rs::Encoding::for_label(label.as_bytes()).ok_or_else(|| {
                    cfg(format!(
                        "unknown `encoding: {e}`; use utf-8, latin1, windows-1252 or another WHATWG encoding label"
                    ))
                })?;
            }
            f.skip_rows = usize_opt("skip_rows", 0)?;
            f.null_values = get("null_values")
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default();
            Format::Csv(f)
        }
        "xlsx" | "xlsm" | "xlsb" | "xls" | "ods" => Format::Xlsx(XlsxFormat {
            sheet: get("sheet").map(str::to_string),
            skip_rows: usize_opt("skip_rows", 0)?,
            header: bool_opt("header", true)?,
        }),
        "parquet" | "pq" => Format::Parquet,
        "json" => Format::Json(ndjson::Layout::Document),
        "ndjson" | "jsonl" => Format::Json(ndjson::Layout::Lines),
        other => {
            return Err(cfg(format!(
                "unknown format `{other}`; set `format:` to csv, tsv, xlsx or parquet"
            )));
        }
    };
    let mut column_types = Vec::new();
    if let (Some(_), Format::Json(_) | Format::Parquet) = (get("column_types"), &format) {
        return Err(cfg(
            "`column_types` applies to csv and xlsx files; JSON and Parquet carry their own types"
                .into(),
        ));
    }
    if let Some(spec) = get("column_types") {
        // Split on commas outside parentheses: `a=decimal(12,2), b=text`.
        let mut depth = 0;
        let mut parts = vec![String::new()];
        for ch in spec.chars() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(String::new());
                    continue;
                }
                _ => {}
            }
            parts.last_mut().expect("never empty").push(ch);
        }
        for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let (name, ty) = part.split_once('=').ok_or_else(|| {
                cfg(format!(
                    "`column_types` entry `{part}` must be `column=type`"
                ))
            })?;
            let dt = parse_type_name(ty).ok_or_else(|| {
                cfg(format!(
                    "`column_types`: unknown type `{}` for `{}`; use text, bigint, double, boolean, date, timestamp, timestamptz or decimal(p,s)",
                    ty.trim(),
                    name.trim()
                ))
            })?;
            column_types.push((normalize_name(name.trim()), dt));
        }
    }
    Ok(Plan {
        pattern,
        prefix,
        column_types,
        // JSON schemas come from the whole file unless told otherwise: a field first seen
        // late would otherwise have no column.
        sample_rows: usize_opt(
            "sample_rows",
            if matches!(format, Format::Json(_)) {
                usize::MAX
            } else {
                10_000
            },
        )?
        .max(1),
        format,
    })
}

/// `Order Date` → `order_date`; names that end up empty become `column_<n>` later.
pub(crate) fn normalize_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut last_sep = true;
    for ch in raw.trim().chars() {
        if ch.is_alphanumeric() {
            out.extend(ch.to_lowercase());
            last_sep = false;
        } else if !last_sep {
            out.push('_');
            last_sep = true;
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Normalized, unique column names: duplicates get `_2`, `_3`; blanks `column_<n>`.
pub(crate) fn unique_names(raw: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let mut n = normalize_name(r);
        if n.is_empty() {
            n = format!("column_{}", i + 1);
        }
        let base = n.clone();
        let mut k = 2;
        while out.contains(&n) {
            n = format!("{base}_{k}");
            k += 1;
        }
        out.push(n);
    }
    out
}

/// Collects typed rows of one file into batches with the stream's schema.
pub(crate) struct BatchBuilder<'a> {
    schema: SchemaRef,
    /// Index of each data column by name.
    index: HashMap<String, usize>,
    builders: Vec<Builder>,
    filled: Vec<bool>,
    rows: usize,
    /// The file's path relative to the source's `url`.
    pub file: &'a str,
    send: &'a mut dyn FnMut(RecordBatch) -> Result<(), FileError>,
    report: &'a ReadReport,
}

impl<'a> BatchBuilder<'a> {
    fn new(
        schema: SchemaRef,
        file: &'a str,
        send: &'a mut dyn FnMut(RecordBatch) -> Result<(), FileError>,
        report: &'a ReadReport,
    ) -> Self {
        let data = &schema.fields()[..schema.fields().len() - 1];
        let index = data
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().clone(), i))
            .collect();
        let builders = data
            .iter()
            .map(|f| Builder::new(f.data_type(), BATCH_ROWS))
            .collect();
        let filled = vec![false; data.len()];
        Self {
            schema,
            index,
            builders,
            filled,
            rows: 0,
            file,
            send,
            report,
        }
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub(crate) fn type_of(&self, col: usize) -> &DataType {
        self.schema.field(col).data_type()
    }

    pub(crate) fn name_of(&self, col: usize) -> &str {
        self.schema.field(col).name()
    }

    /// Appends a row; columns it does not mention are NULL.
    pub(crate) fn push_row(&mut self, row: &[(usize, Value<'_>)]) -> Result<(), FileError> {
        self.filled.iter_mut().for_each(|f| *f = false);
        for (col, v) in row {
            self.builders[*col].append(v);
            self.filled[*col] = true;
        }
        for (b, filled) in self.builders.iter_mut().zip(&self.filled) {
            if !filled {
                b.append_null();
            }
        }
        self.rows += 1;
        if self.rows >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// The stream's columns without `_file`.
    pub(crate) fn data_schema(&self) -> SchemaRef {
        let fields = &self.schema.fields()[..self.schema.fields().len() - 1];
        Arc::new(Schema::new(fields.to_vec()))
    }

    /// Sends a batch of the data columns, with `_file` added.
    pub(crate) fn emit(&mut self, batch: RecordBatch) -> Result<(), FileError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut cols = batch.columns().to_vec();
        cols.push(Arc::new(StringArray::from(vec![
            self.file;
            batch.num_rows()
        ])));
        let batch =
            RecordBatch::try_new(Arc::clone(&self.schema), cols).map_err(|e| FileError {
                line: None,
                message: format!("internal error building a batch: {e}"),
            })?;
        (self.send)(batch)
    }

    pub(crate) fn reject(&mut self, row: RejectedRow) -> Result<(), FileError> {
        self.report.reject(row).map_err(|message| FileError {
            line: None,
            message,
        })
    }

    fn flush(&mut self) -> Result<(), FileError> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut cols: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        cols.push(Arc::new(StringArray::from(vec![self.file; self.rows])));
        self.rows = 0;
        let batch =
            RecordBatch::try_new(Arc::clone(&self.schema), cols).map_err(|e| FileError {
                line: None,
                message: format!("internal error building a batch: {e}"),
            })?;
        (self.send)(batch)
    }
}

/// The stream's schema: data columns (types overridden by `column_types`, then selected by
/// `columns`/`exclude`) and `_file`.
fn stream_schema(stream: &StreamDef, plan: &Plan, columns: Columns) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::new();
    for (name, ty) in columns.names.into_iter().zip(columns.types) {
        let ty = plan
            .column_types
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.clone())
            .or(ty)
            .unwrap_or(DataType::Utf8);
        if !selected(stream, &name) {
            continue;
        }
        fields.push(Field::new(name, ty, true));
    }
    fields.push(Field::new(FILE_COLUMN, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// Whether `columns:`/`exclude:` keep the column `name` (given as written or normalized).
fn selected(stream: &StreamDef, name: &str) -> bool {
    let is = |c: &String| c == name || normalize_name(c) == name;
    (stream.columns.is_empty() || stream.columns.iter().any(is)) && !stream.exclude.iter().any(is)
}

fn merge_columns(into: &mut Columns, more: Columns) {
    for (name, ty) in more.names.into_iter().zip(more.types) {
        match into.names.iter().position(|n| *n == name) {
            Some(i) => into.types[i] = values::merge_types(into.types[i].take(), ty),
            None => {
                into.names.push(name);
                into.types.push(ty);
            }
        }
    }
}

/// A blocking reader of a file's bytes (see [`gunzip`]).
fn open_read(store: &ObjectStoreRef, file: &FileEntry) -> Box<dyn Read + Send> {
    let store = Arc::clone(store);
    let location = file.location.clone();
    let stream = futures::stream::once(async move { store.get(&location).await })
        .map_ok(|r| r.into_stream())
        .try_flatten()
        .map_err(std::io::Error::other)
        .boxed();
    Box::new(tokio_util::io::SyncIoBridge::new(
        tokio_util::io::StreamReader::new(stream),
    ))
}

/// Decompresses `.gz` files. Call on a blocking thread: the decoder reads at once.
fn gunzip(input: Box<dyn Read + Send>, rel: &str) -> Box<dyn Read + Send> {
    if rel.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else {
        input
    }
}

async fn read_all(
    store: &ObjectStoreRef,
    file: &FileEntry,
) -> std::result::Result<Vec<u8>, FileError> {
    let bytes = store
        .get(&file.location)
        .await
        .map_err(|e| FileError {
            line: None,
            message: format!("cannot read the file: {e}"),
        })?
        .bytes()
        .await
        .map_err(|e| FileError {
            line: None,
            message: format!("cannot read the file: {e}"),
        })?;
    Ok(bytes.to_vec())
}

fn file_error(source: &str, stream: &str, file: &FileEntry, e: FileError) -> Error {
    Error::Read {
        source_name: source.to_string(),
        stream: Some(stream.to_string()),
        message: format!(
            "{}{}: {}",
            file.rel,
            e.line.map(|l| format!(":{l}")).unwrap_or_default(),
            e.message
        ),
    }
}

/// Column names and types of one file.
async fn sample_file(
    store: &ObjectStoreRef,
    plan: &Plan,
    file: &FileEntry,
) -> std::result::Result<Columns, FileError> {
    match &plan.format {
        Format::Csv(fmt) => {
            let input = open_read(store, file);
            let fmt = fmt.clone();
            let rows = plan.sample_rows;
            let rel = file.rel.clone();
            tokio::task::spawn_blocking(move || csv::sample(gunzip(input, &rel), &fmt, rows))
                .await
                .map_err(|e| FileError {
                    line: None,
                    message: format!("internal error: {e}"),
                })?
        }
        Format::Xlsx(fmt) => {
            let bytes = read_all(store, file).await?;
            let fmt = fmt.clone();
            let rows = plan.sample_rows;
            tokio::task::spawn_blocking(move || xlsx::sample(bytes, &fmt, rows))
                .await
                .map_err(|e| FileError {
                    line: None,
                    message: format!("internal error: {e}"),
                })?
        }
        Format::Json(layout) => {
            let input = open_read(store, file);
            let layout = *layout;
            let rows = plan.sample_rows;
            let rel = file.rel.clone();
            let schema = tokio::task::spawn_blocking(move || {
                ndjson::sample(gunzip(input, &rel), layout, rows, None)
            })
            .await
            .map_err(|e| FileError {
                line: None,
                message: format!("internal error: {e}"),
            })??;
            Ok(Columns {
                names: schema.fields().iter().map(|f| f.name().clone()).collect(),
                types: schema
                    .fields()
                    .iter()
                    .map(|f| Some(f.data_type().clone()))
                    .collect(),
            })
        }
        Format::Parquet => {
            let schema = Arc::clone(parquet_builder(store, file).await?.schema());
            Ok(Columns {
                names: schema.fields().iter().map(|f| f.name().clone()).collect(),
                types: schema
                    .fields()
                    .iter()
                    .map(|f| Some(f.data_type().clone()))
                    .collect(),
            })
        }
    }
}

// `ParquetObjectReader` is deprecated in favour of hand-written `AsyncFileReader`s; it is
// still the reader that fetches exactly the ranges the footer names, which is all this needs.
#[allow(deprecated)]
async fn parquet_builder(
    store: &ObjectStoreRef,
    file: &FileEntry,
) -> std::result::Result<
    parquet::arrow::ParquetRecordBatchStreamBuilder<
        parquet::arrow::async_reader::ParquetObjectReader,
    >,
    FileError,
> {
    let reader = parquet::arrow::async_reader::ParquetObjectReader::new(
        Arc::clone(store),
        file.location.clone(),
    )
    .with_file_size(file.size);
    parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| FileError {
            line: None,
            message: format!("not a readable Parquet file: {e}"),
        })
}

/// Parquet keeps its own column names and types; they are matched to the stream's schema
/// by name, cast where a file's type differs, NULL where a file lacks a column.
async fn read_parquet(
    store: &ObjectStoreRef,
    file: &FileEntry,
    schema: &SchemaRef,
    tx: &tokio::sync::mpsc::Sender<Result<RecordBatch>>,
) -> std::result::Result<(), FileError> {
    let mut stream = parquet_builder(store, file)
        .await?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| FileError {
            line: None,
            message: format!("not a readable Parquet file: {e}"),
        })?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| FileError {
            line: None,
            message: format!("cannot read a row group: {e}"),
        })?;
        let n = batch.num_rows();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for f in &schema.fields()[..schema.fields().len() - 1] {
            let col = match batch.schema().index_of(f.name()) {
                Ok(i) => {
                    let c = batch.column(i);
                    if c.data_type() == f.data_type() {
                        Arc::clone(c)
                    } else {
                        arrow::compute::cast(c, f.data_type()).map_err(|e| FileError {
                            line: None,
                            message: format!(
                                "column `{}` is {} here but {} in the stream: {e}",
                                f.name(),
                                c.data_type(),
                                f.data_type()
                            ),
                        })?
                    }
                }
                Err(_) => new_null_array(f.data_type(), n),
            };
            cols.push(col);
        }
        cols.push(Arc::new(StringArray::from(vec![file.rel.as_str(); n])));
        let out = RecordBatch::try_new(Arc::clone(schema), cols).map_err(|e| FileError {
            line: None,
            message: format!("internal error building a batch: {e}"),
        })?;
        if tx.send(Ok(out)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

#[async_trait]
impl Source for FilesSource {
    async fn check(&self) -> Result<()> {
        let store = self.store()?;
        let mut list = store.list(None);
        match list.next().await {
            Some(Err(e)) => Err(Error::Connect {
                source_name: self.name.clone(),
                message: format!(
                    "cannot list `{}`: {e}",
                    strata_types::redact_url_password(self.base.as_str())
                ),
                retryable: true,
            }),
            _ => Ok(()),
        }
    }

    /// Files have no catalog: each declared stream is reported with the columns its files
    /// would load as now.
    async fn discover(&self) -> Result<Vec<DiscoveredStream>> {
        let store = self.store()?;
        let mut out = Vec::new();
        for stream in &self.streams {
            let plan = plan(&self.name, stream)?;
            let files = self.list(&store, &plan).await?;
            if files.is_empty() {
                return Err(self.read_err(
                    stream,
                    format!("no file matches `{}`", plan.pattern.as_str()),
                ));
            }
            let schema = self.infer(&store, &plan, stream, &files).await?;
            let source_types = schema
                .fields()
                .iter()
                .map(|f| f.data_type().to_string())
                .collect();
            out.push(DiscoveredStream {
                table: stream.name.clone(),
                schema,
                source_types,
                primary_key: stream.primary_key.clone(),
                kind: crate::TableKind::Table,
                description: None,
            });
        }
        Ok(out)
    }

    async fn read(
        &self,
        stream: &StreamDef,
        ctx: &ReadContext,
    ) -> Result<(SchemaRef, BatchStream)> {
        let plan = plan(&self.name, stream)?;
        let store = self.store()?;
        let files = self.list(&store, &plan).await?;
        let saved: BTreeMap<String, String> = ctx
            .saved
            .as_ref()
            .and_then(|s| s.get("files"))
            .and_then(|f| serde_json::from_value(f.clone()).ok())
            .unwrap_or_default();
        let reload_all = stream.mode == SyncMode::FullRefresh;
        let todo: Vec<FileEntry> = files
            .iter()
            .filter(|f| reload_all || saved.get(&f.rel) != Some(&f.tag))
            .cloned()
            .collect();
        if files.is_empty() && saved.is_empty() {
            return Err(self.read_err(
                stream,
                format!(
                    "no file matches `{}` under {}",
                    plan.pattern.as_str(),
                    strata_types::redact_url_password(self.base.as_str())
                ),
            ));
        }
        // The files this load covers, committed with its rows.
        let mut state: BTreeMap<String, String> = if stream.mode == SyncMode::FullRefresh {
            BTreeMap::new()
        } else {
            saved
        };
        for f in &files {
            if stream.mode == SyncMode::FullRefresh || todo.iter().any(|t| t.rel == f.rel) {
                state.insert(f.rel.clone(), f.tag.clone());
            }
        }
        ctx.report.set_state(serde_json::json!({ "files": state }));

        if todo.is_empty() {
            let empty: BatchStream = Box::pin(futures::stream::empty());
            return Ok((Arc::new(Schema::empty()), empty));
        }
        let schema = self.infer(&store, &plan, stream, &todo).await?;

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(4);
        let source_name = self.name.clone();
        let stream_name = stream.name.clone();
        let report = Arc::clone(&ctx.report);
        let out_schema = Arc::clone(&schema);
        let stream_def = stream.clone();
        tokio::spawn(async move {
            for f in &todo {
                let result = match &plan.format {
                    Format::Parquet => read_parquet(&store, f, &out_schema, &tx).await,
                    Format::Csv(_) | Format::Xlsx(_) | Format::Json(_) => {
                        let input = match &plan.format {
                            Format::Csv(_) | Format::Json(_) => Ok(open_read(&store, f)),
                            _ => read_all(&store, f)
                                .await
                                .map(|b| Box::new(std::io::Cursor::new(b)) as Box<dyn Read + Send>),
                        };
                        match input {
                            Err(e) => Err(e),
                            Ok(input) => {
                                let format = plan.format.clone();
                                let schema = Arc::clone(&out_schema);
                                let report = Arc::clone(&report);
                                let tx = tx.clone();
                                let file = f.rel.clone();
                                let stream_def = stream_def.clone();
                                tokio::task::spawn_blocking(move || {
                                    let mut send = |b: RecordBatch| {
                                        tx.blocking_send(Ok(b)).map_err(|_| FileError {
                                            line: None,
                                            message: "the load was stopped".into(),
                                        })
                                    };
                                    let mut out =
                                        BatchBuilder::new(schema, &file, &mut send, &report);
                                    let r = match &format {
                                        Format::Csv(fmt) => {
                                            csv::read(gunzip(input, &file), fmt, &mut out)
                                        }
                                        Format::Xlsx(fmt) => {
                                            let mut bytes = Vec::new();
                                            let mut input = input;
                                            match input.read_to_end(&mut bytes) {
                                                Ok(_) => xlsx::read(bytes, fmt, &mut out),
                                                Err(e) => Err(FileError {
                                                    line: None,
                                                    message: format!("cannot read the file: {e}"),
                                                }),
                                            }
                                        }
                                        Format::Json(layout) => {
                                            let ignored = |n: &str| !selected(&stream_def, n);
                                            ndjson::read(
                                                gunzip(input, &file),
                                                *layout,
                                                &ignored,
                                                &mut out,
                                            )
                                        }
                                        Format::Parquet => Ok(()),
                                    };
                                    r.and_then(|()| out.flush())
                                })
                                .await
                                .unwrap_or_else(|e| {
                                    Err(FileError {
                                        line: None,
                                        message: format!("internal error: {e}"),
                                    })
                                })
                            }
                        }
                    }
                };
                if let Err(e) = result {
                    let _ = tx
                        .send(Err(file_error(&source_name, &stream_name, f, e)))
                        .await;
                    return;
                }
            }
        });
        let batches: BatchStream = Box::pin(tokio_stream_from(rx));
        Ok((schema, batches))
    }
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<RecordBatch>>,
) -> impl futures::Stream<Item = Result<RecordBatch>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_and_unique() {
        assert_eq!(normalize_name("Order Date"), "order_date");
        assert_eq!(normalize_name("  Preço (R$) "), "preço_r");
        assert_eq!(normalize_name("1st"), "_1st");
        assert_eq!(
            unique_names(vec!["A".into(), "a".into(), "".into(), "_file".into()]),
            vec!["a", "a_2", "column_3", "file"]
        );
    }
}
