//! Result formats of the REST API, chosen by `Accept` (or `?format=`), each written batch
//! by batch so large results stream.

use std::sync::Arc;

use bytes::Bytes;
use strata_engine::datafusion::arrow::array::RecordBatch;
use strata_engine::datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use strata_engine::datafusion::arrow::datatypes::SchemaRef;
use strata_engine::datafusion::arrow::ipc::writer::StreamWriter;
use strata_engine::datafusion::arrow::json::WriterBuilder as JsonWriterBuilder;
use strata_engine::datafusion::arrow::json::writer::LineDelimited;
use strata_engine::datafusion::parquet::arrow::ArrowWriter;

/// A result format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"columns": […], "rows": [{…}, …], …}`
    Json,
    /// One JSON object per line.
    NdJson,
    /// CSV with a header line.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
    /// A Parquet file.
    Parquet,
}

impl Format {
    /// The MIME type sent back.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::NdJson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    fn by_name(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "json" | "application/json" => Format::Json,
            "ndjson" | "jsonl" | "application/x-ndjson" | "application/jsonl" => Format::NdJson,
            "csv" | "text/csv" => Format::Csv,
            "arrow" | "application/vnd.apache.arrow.stream" => Format::Arrow,
            "parquet" | "application/vnd.apache.parquet" | "application/x-parquet" => {
                Format::Parquet
            }
            _ => return None,
        })
    }

    /// The format asked for by `?format=` (first) or the `Accept` header; JSON when
    /// neither says. `Err` lists what is offered.
    pub fn negotiate(
        format: Option<&str>,
        accept: Option<&str>,
    ) -> std::result::Result<Self, String> {
        const OFFERED: &str = "application/json, application/x-ndjson, text/csv, application/vnd.apache.arrow.stream, application/vnd.apache.parquet";
        if let Some(f) = format {
            return Self::by_name(f).ok_or_else(|| {
                format!("unknown format `{f}`; use json, ndjson, csv, arrow or parquet")
            });
        }
        let Some(accept) = accept else {
            return Ok(Format::Json);
        };
        let mut any = false;
        for item in accept.split(',') {
            let mime = item.split(';').next().unwrap_or_default().trim();
            if let Some(f) = Self::by_name(mime) {
                return Ok(f);
            }
            if matches!(mime, "*/*" | "application/*" | "") {
                any = true;
            }
        }
        if any {
            Ok(Format::Json)
        } else {
            Err(format!("cannot answer `{accept}`; offered: {OFFERED}"))
        }
    }
}

/// What is known when a result ends.
#[derive(Debug, Default, Clone)]
pub struct Trailer {
    /// Rows sent.
    pub rows: u64,
    /// Whether rows were left out by the row limit.
    pub truncated: bool,
    /// The cursor of the next page (table endpoints).
    pub next_cursor: Option<String>,
}

/// Writes one result in one format.
pub struct Encoder {
    format: Format,
    schema: SchemaRef,
    first: bool,
    ipc: Option<StreamWriter<Vec<u8>>>,
    parquet: Option<ArrowWriter<Vec<u8>>>,
}

type Result<T> = std::result::Result<T, String>;

impl Encoder {
    /// An encoder for rows of `schema`.
    pub fn new(format: Format, schema: SchemaRef) -> Self {
        Self {
            format,
            schema,
            first: true,
            ipc: None,
            parquet: None,
        }
    }

    /// The bytes before any row.
    pub fn begin(&mut self) -> Result<Bytes> {
        Ok(match self.format {
            Format::Json => {
                let columns: Vec<serde_json::Value> = self
                    .schema
                    .fields()
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "name": f.name(),
                            "type": crate::rest::type_name(f.data_type()),
                            "nullable": f.is_nullable(),
                        })
                    })
                    .collect();
                let head = serde_json::to_string(&columns).map_err(|e| e.to_string())?;
                Bytes::from(format!("{{\"columns\":{head},\"rows\":["))
            }
            Format::Arrow => {
                let w =
                    StreamWriter::try_new(Vec::new(), &self.schema).map_err(|e| e.to_string())?;
                self.ipc = Some(w);
                self.drain()
            }
            Format::Parquet => {
                let w = ArrowWriter::try_new(Vec::new(), Arc::clone(&self.schema), None)
                    .map_err(|e| e.to_string())?;
                self.parquet = Some(w);
                Bytes::new()
            }
            Format::Csv if self.schema.fields().is_empty() => Bytes::new(),
            Format::Csv => {
                // The header, even when no row follows.
                let empty = RecordBatch::new_empty(Arc::clone(&self.schema));
                let mut buf = Vec::new();
                CsvWriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf)
                    .write(&empty)
                    .map_err(|e| e.to_string())?;
                Bytes::from(buf)
            }
            Format::NdJson => Bytes::new(),
        })
    }

    /// The bytes of one batch.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes> {
        if batch.num_rows() == 0 {
            return Ok(Bytes::new());
        }
        match self.format {
            Format::Json | Format::NdJson => {
                let mut buf = Vec::new();
                let mut w = JsonWriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(&mut buf);
                w.write(batch).map_err(|e| e.to_string())?;
                w.finish().map_err(|e| e.to_string())?;
                drop(w);
                if self.format == Format::NdJson {
                    return Ok(Bytes::from(buf));
                }
                // JSON text holds no raw newline, so lines are rows: join them with commas.
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                for b in buf.iter_mut() {
                    if *b == b'\n' {
                        *b = b',';
                    }
                }
                if !self.first {
                    buf.insert(0, b',');
                }
                self.first = false;
                Ok(Bytes::from(buf))
            }
            Format::Csv => {
                let mut buf = Vec::new();
                CsvWriterBuilder::new()
                    .with_header(false)
                    .build(&mut buf)
                    .write(batch)
                    .map_err(|e| e.to_string())?;
                Ok(Bytes::from(buf))
            }
            Format::Arrow => {
                if let Some(w) = self.ipc.as_mut() {
                    w.write(batch).map_err(|e| e.to_string())?;
                }
                Ok(self.drain())
            }
            Format::Parquet => {
                if let Some(w) = self.parquet.as_mut() {
                    w.write(batch).map_err(|e| e.to_string())?;
                }
                Ok(self.drain())
            }
        }
    }

    /// The bytes after the last row.
    pub fn end(&mut self, trailer: &Trailer) -> Result<Bytes> {
        Ok(match self.format {
            Format::Json => {
                let mut tail = serde_json::json!({
                    "row_count": trailer.rows,
                    "truncated": trailer.truncated,
                });
                if let Some(c) = &trailer.next_cursor {
                    tail["next_cursor"] = serde_json::Value::String(c.clone());
                }
                let tail = serde_json::to_string(&tail).map_err(|e| e.to_string())?;
                // `{"row_count":…}` → `],"row_count":…}`
                Bytes::from(format!("],{}", &tail[1..]))
            }
            Format::Arrow => {
                if let Some(w) = self.ipc.as_mut() {
                    w.finish().map_err(|e| e.to_string())?;
                }
                self.drain()
            }
            Format::Parquet => match self.parquet.take() {
                Some(w) => Bytes::from(w.into_inner().map_err(|e| e.to_string())?),
                None => Bytes::new(),
            },
            Format::Csv | Format::NdJson => Bytes::new(),
        })
    }

    /// What the IPC or Parquet writer has produced so far.
    fn drain(&mut self) -> Bytes {
        if let Some(w) = self.ipc.as_mut() {
            return Bytes::from(std::mem::take(w.get_mut()));
        }
        if let Some(w) = self.parquet.as_mut() {
            return Bytes::from(std::mem::take(w.inner_mut()));
        }
        Bytes::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_engine::datafusion::arrow::array::{Int64Array, StringArray};
    use strata_engine::datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a\nb"), None])),
            ],
        )
        .unwrap()
    }

    fn run(format: Format) -> Vec<u8> {
        let b = batch();
        let mut e = Encoder::new(format, b.schema());
        let mut out = e.begin().unwrap().to_vec();
        out.extend_from_slice(&e.batch(&b).unwrap());
        out.extend_from_slice(&e.batch(&b).unwrap());
        out.extend_from_slice(
            &e.end(&Trailer {
                rows: 4,
                ..Trailer::default()
            })
            .unwrap(),
        );
        out
    }

    #[test]
    fn json_is_one_document_with_typed_columns() {
        let v: serde_json::Value = serde_json::from_slice(&run(Format::Json)).unwrap();
        assert_eq!(v["columns"][0]["name"], "id");
        assert_eq!(v["columns"][0]["type"], "bigint");
        assert_eq!(v["rows"].as_array().unwrap().len(), 4);
        assert_eq!(v["rows"][0]["name"], "a\nb");
        assert!(v["rows"][1]["name"].is_null());
        assert_eq!(v["row_count"], 4);
    }

    #[test]
    fn arrow_and_parquet_read_back() {
        use strata_engine::datafusion::arrow::ipc::reader::StreamReader;
        let ipc = run(Format::Arrow);
        let rows: usize = StreamReader::try_new(std::io::Cursor::new(ipc), None)
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum();
        assert_eq!(rows, 4);
        let pq = Bytes::from(run(Format::Parquet));
        let reader =
            strata_engine::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(pq, 1024)
                .unwrap();
        assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 4);
    }

    #[test]
    fn csv_has_one_header() {
        let text = String::from_utf8(run(Format::Csv)).unwrap();
        assert!(text.starts_with("id,name\n1,\"a\nb\"\n2,\n1,"), "{text}");
    }

    #[test]
    fn negotiation() {
        assert_eq!(Format::negotiate(None, None), Ok(Format::Json));
        assert_eq!(
            Format::negotiate(None, Some("text/csv;q=0.9, */*")),
            Ok(Format::Csv)
        );
        assert_eq!(
            Format::negotiate(Some("parquet"), Some("text/csv")),
            Ok(Format::Parquet)
        );
        assert_eq!(Format::negotiate(None, Some("*/*")), Ok(Format::Json));
        assert!(Format::negotiate(None, Some("image/png")).is_err());
    }
}
