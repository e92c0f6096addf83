//! Files: CSV (Latin-1, bad lines), gzip, globs, incremental by new files, Excel, Parquet,
//! the rejected-rows table and its exactly-once bookkeeping.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_lake::{Lake, TableName, WriteMode, WriteOptions};
use strata_project::{Redactor, load_source};
use strata_sources::ingest::{IngestOptions, StreamReport};

use crate::rows;

struct Project {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    lake: Lake,
}

impl Project {
    async fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("sources")).unwrap();
        std::fs::create_dir_all(root.join("landing")).unwrap();
        let lake = crate::lake_in(&root).await;
        Self {
            _tmp: tmp,
            root,
            lake,
        }
    }

    fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let p = self.root.join("landing").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn landing(&self) -> PathBuf {
        self.root.join("landing")
    }

    /// Loads every stream of `sources/drops.yml`; the first error is returned.
    async fn ingest(&self, yml: &str) -> Result<Vec<StreamReport>, String> {
        let p = self.root.join("sources/drops.yml");
        std::fs::write(&p, yml).unwrap();
        let def = load_source(&p, &Redactor::new()).map_err(|e| e.to_string())?;
        crate::ingest_all(&self.lake, &def, &IngestOptions::default())
            .await
            .map_err(|e| e.to_string())
    }

    async fn exists(&self, t: &str) -> bool {
        self.lake
            .table_exists(&t.parse::<TableName>().unwrap())
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_types_encodings_and_rejected_lines() {
    let p = Project::new().await;
    // Latin-1 bytes (é = 0xE9), a semicolon delimiter, a quoted field with the delimiter
    // and a newline inside (so later records start one line further down), a line with a
    // missing field and a value that is not a number.
    let mut latin1 = b"Order ID;Customer Name;Amount;Ordered On;Zip;Paid\n".to_vec();
    latin1.extend_from_slice(b"1;Jos\xe9;10.50;2024-01-02;01234;true\n");
    latin1.extend_from_slice(b"2;\"Smith; \"\"Jr\"\"\nII\";7;2024-01-03;99999;false\n");
    latin1.extend_from_slice(b"3;Ana;12\n");
    latin1.extend_from_slice(b"4;Bea;lots;2024-01-05;11111;true\n");
    latin1.extend_from_slice(b"5;;;;;\n");
    p.write("orders/2024-01.csv", &latin1);
    p.write("orders/notes.txt", "not matched by the glob");
    let reports = p
        .ingest(
            "type: files\nurl: landing\nstreams:\n  - name: orders\n    options:\n      path: orders/*.csv\n      delimiter: \";\"\n      encoding: latin1\n      sample_rows: \"2\"\n",
        )
        .await
        .unwrap();
    assert_eq!(reports[0].rows, 3);
    assert_eq!(reports[0].rejected, 2);
    assert_eq!(
        rows(
            &p.lake,
            "raw.drops_orders",
            "order_id, customer_name, amount, ordered_on, zip, paid, _file"
        )
        .await,
        vec![
            "1|José|10.5|2024-01-02|01234|true|orders/2024-01.csv",
            "2|Smith; \"Jr\"\nII|7.0|2024-01-03|99999|false|orders/2024-01.csv",
            "5|NULL|NULL|NULL|NULL|NULL|orders/2024-01.csv",
        ]
    );
    assert_eq!(
        rows(
            &p.lake,
            "raw.drops_orders__rejected",
            "line, location, reason, raw, source, stream, run"
        )
        .await,
        vec![
            "5|orders/2024-01.csv|expected 6 fields, found 3|3;Ana;12|drops|orders|1",
            "6|orders/2024-01.csv|column `amount`: `lots` is not a number|4;Bea;lots;2024-01-05;11111;true|drops|orders|1",
        ]
    );
    // The inferred types are real types, not text.
    let info = p
        .lake
        .table_info(&"raw.drops_orders".parse().unwrap())
        .await
        .unwrap();
    let ty = |n: &str| {
        info.schema
            .field_with_name(n)
            .unwrap()
            .data_type()
            .to_string()
    };
    assert_eq!(ty("order_id"), "Int64");
    assert_eq!(ty("amount"), "Float64");
    assert_eq!(ty("ordered_on"), "Date32");
    assert_eq!(ty("zip"), "Utf8");
    assert_eq!(ty("paid"), "Boolean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_can_stop_the_load_before_anything_is_written() {
    let p = Project::new().await;
    p.write("a.csv", "id,n\n1,2\n2,x\n");
    let e = p
        .ingest(
            "type: files\nurl: landing\nstreams:\n  - name: a\n    on_bad_rows: fail\n    options:\n      path: a.csv\n      column_types: n=bigint\n",
        )
        .await
        .unwrap_err();
    assert!(
        e.contains(
            "1 row(s) could not be read, the first at a.csv:3: column `n`: `x` is not an integer"
        ) && e.contains("nothing was written"),
        "{e}"
    );
    assert!(!p.exists("raw.drops_a").await);
    assert!(!p.exists("raw.drops_a__rejected").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_loads_new_and_changed_files_once() {
    let p = Project::new().await;
    let yml = "type: files\nurl: landing\nstreams:\n  - name: events\n    mode: incremental\n    primary_key: [id]\n    options:\n      path: \"**/*.csv*\"\n      column_types: \"amount=decimal(10,2)\"\n";
    p.write("2024/01/a.csv", "id,amount\n1,1.10\n2,2.20\n");
    let r = p.ingest(yml).await.unwrap();
    assert_eq!((r[0].rows, r[0].version), (2, Some(0)));

    // Nothing new: no commit at all.
    let r = p.ingest(yml).await.unwrap();
    assert_eq!((r[0].rows, r[0].version), (0, None));

    // A new gzip file in another folder, and a changed file.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b"id,amount\n3,3.30\n").unwrap();
    p.write("2024/02/b.csv.gz", gz.finish().unwrap());
    p.write("2024/01/a.csv", "id,amount\n1,1.15\n2,2.20\n4,4.40\n");
    let r = p.ingest(yml).await.unwrap();
    assert_eq!(r[0].rows, 4);
    assert_eq!(
        rows(&p.lake, "raw.drops_events", "id, amount, _file").await,
        vec![
            "1|1.15|2024/01/a.csv",
            "2|2.20|2024/01/a.csv",
            "3|3.30|2024/02/b.csv.gz",
            "4|4.40|2024/01/a.csv",
        ]
    );
    let r = p.ingest(yml).await.unwrap();
    assert_eq!(r[0].rows, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_rows_of_a_run_that_never_committed_are_not_kept() {
    let p = Project::new().await;
    let yml = "type: files\nurl: landing\nstreams:\n  - name: a\n    mode: append\n    options:\n      path: \"*.tsv\"\n";
    p.write("1.tsv", "id\tname\n1\tx\n2\n");
    let r = p.ingest(yml).await.unwrap();
    assert_eq!((r[0].rows, r[0].rejected), (1, 1));
    // A rejected row tagged with run 2, as a process killed between writing the rejected
    // rows and committing run 2 would leave it.
    let rejects: TableName = "raw.drops_a__rejected".parse().unwrap();
    let table = p.lake.open_table(&rejects).await.unwrap();
    let ctx = strata_lake::deltalake::datafusion::prelude::SessionContext::new();
    ctx.register_table("r", table.table_provider().await.unwrap())
        .unwrap();
    let orphan = ctx
        .sql("SELECT source, stream, CAST(2 AS BIGINT) AS run, 'crashed' AS run_id, location, line, 'orphan' AS reason, raw, rejected_at FROM r")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    p.lake
        .write_batches(
            &rejects,
            orphan,
            WriteMode::Append,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    p.write("2.tsv", "id\tname\n3\ty\n4\tz\textra\n");
    let r = p.ingest(yml).await.unwrap();
    assert_eq!((r[0].rows, r[0].rejected), (1, 1));
    assert_eq!(
        rows(
            &p.lake,
            "raw.drops_a__rejected",
            "run, location, line, reason"
        )
        .await,
        vec![
            "1|1.tsv|3|expected 2 fields, found 1",
            "2|2.tsv|3|expected 2 fields, found 3"
        ]
    );
    assert_eq!(
        rows(&p.lake, "raw.drops_a", "id, name, _file").await,
        vec!["1|x|1.tsv", "3|y|2.tsv"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excel_sheets_load_with_types_and_error_cells_rejected() {
    use rust_xlsxwriter::{ExcelDateTime, Format, Formula, Workbook};
    let p = Project::new().await;
    let mut wb = Workbook::new();
    wb.add_worksheet()
        .set_name("Cover")
        .unwrap()
        .write(0, 0, "Quarterly sales")
        .unwrap();
    let ws = wb.add_worksheet().set_name("Sales").unwrap();
    let date = Format::new().set_num_format("yyyy-mm-dd");
    ws.write_row(0, 0, ["Region", "Units", "Price", "Day", "Active"])
        .unwrap();
    ws.write(1, 0, "North").unwrap();
    ws.write(1, 1, 10).unwrap();
    ws.write(1, 2, 2.5).unwrap();
    ws.write_datetime_with_format(
        1,
        3,
        ExcelDateTime::parse_from_str("2024-03-01").unwrap(),
        &date,
    )
    .unwrap();
    ws.write(1, 4, true).unwrap();
    ws.write(2, 0, "South").unwrap();
    ws.write(2, 1, 7).unwrap();
    ws.write_formula(2, 2, Formula::new("=1/0").set_result("#DIV/0!"))
        .unwrap();
    ws.write(3, 0, "East").unwrap();
    ws.write(3, 1, 3).unwrap();
    ws.write(3, 2, 4).unwrap();
    ws.write_datetime_with_format(
        3,
        3,
        ExcelDateTime::parse_from_str("2024-03-02").unwrap(),
        &date,
    )
    .unwrap();
    ws.write(3, 4, false).unwrap();
    let bytes = wb.save_to_buffer().unwrap();
    p.write("sales.xlsx", bytes);
    let r = p
        .ingest("type: files\nurl: landing\nstreams:\n  - name: sales\n    options:\n      path: sales.xlsx\n      sheet: Sales\n")
        .await
        .unwrap();
    // The division by zero rejects its row, named by its Excel row number.
    assert_eq!((r[0].rows, r[0].rejected), (2, 1));
    assert_eq!(
        rows(
            &p.lake,
            "raw.drops_sales",
            "region, units, price, day, active"
        )
        .await,
        vec![
            "East|3|4.0|2024-03-02|false",
            "North|10|2.5|2024-03-01|true"
        ]
    );
    let rejected = rows(&p.lake, "raw.drops_sales__rejected", "line, reason").await;
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].starts_with("3|") && rejected[0].contains("#DIV/0!"),
        "{rejected:?}"
    );
    let e = p
        .ingest("type: files\nurl: landing\nstreams:\n  - name: sales\n    options:\n      path: sales.xlsx\n      sheet: Totals\n")
        .await
        .unwrap_err();
    assert!(
        e.contains("sales.xlsx: the workbook has no sheet `Totals`; its sheets are: Cover, Sales"),
        "{e}"
    );
}

fn write_parquet(path: &Path, batch: arrow::array::RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_with_differing_columns_are_aligned_by_name() {
    use arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
    let p = Project::new().await;
    let a = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2])) as _),
        ("name", Arc::new(StringArray::from(vec!["a", "b"])) as _),
    ])
    .unwrap();
    // The second file has no `name`, an extra column, and `id` as a narrower integer.
    let b = RecordBatch::try_from_iter(vec![
        ("score", Arc::new(Int64Array::from(vec![9])) as _),
        ("id", Arc::new(Int32Array::from(vec![3])) as _),
    ])
    .unwrap();
    write_parquet(&p.landing().join("pq/part-0.parquet"), a);
    write_parquet(&p.landing().join("pq/part-1.parquet"), b);
    let r = p
        .ingest("type: files\nurl: landing\nstreams:\n  - name: pq\n    options:\n      path: pq/*.parquet\n")
        .await
        .unwrap();
    assert_eq!(r[0].rows, 3);
    assert_eq!(
        rows(&p.lake, "raw.drops_pq", "id, name, score, _file").await,
        vec![
            "1|a|NULL|pq/part-0.parquet",
            "2|b|NULL|pq/part-0.parquet",
            "3|NULL|9|pq/part-1.parquet",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_mistakes_are_explained() {
    let p = Project::new().await;
    let e = p
        .ingest("type: files\nurl: landing\nstreams:\n  - name: x\n    options:\n      path: \"*.csv\"\n")
        .await
        .unwrap_err();
    assert!(e.contains("no file matches `*.csv`"), "{e}");
    let e = p
        .ingest(
            "type: files\nurl: landing\nstreams:\n  - name: x\n    options:\n      path: data\n",
        )
        .await
        .unwrap_err();
    assert!(e.contains("set `format:`"), "{e}");
    let e = p
        .ingest("type: files\nurl: landing\nstreams:\n  - name: x\n    options:\n      path: a.csv\n      delimeter: \";\"\n")
        .await
        .unwrap_err();
    assert!(e.contains("unknown option `delimeter`"), "{e}");
    let e = p
        .ingest("type: files\nurl: landing\nstreams:\n  - name: x\n    options:\n      path: a.csv\n      encoding: klingon\n")
        .await
        .unwrap_err();
    assert!(e.contains("unknown `encoding: klingon`"), "{e}");
    let e = p
        .ingest(
            "type: files\nurl: nowhere\nstreams:\n  - name: x\n    options:\n      path: a.csv\n",
        )
        .await
        .unwrap_err();
    assert!(
        e.contains("nowhere") && e.contains("cannot be opened"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_documents_and_lines_flatten_and_reject_bad_records() {
    let p = Project::new().await;
    // NDJSON: a late field still gets its column (the schema is read from the whole file),
    // a broken line and a record of the wrong shape are rejected with their lines.
    let mut lines = String::new();
    for i in 1..=3000 {
        lines.push_str(&format!(
            "{{\"id\": {i}, \"user\": {{\"name\": \"u{i}\", \"tier\": {}}}}}\n",
            i % 3
        ));
    }
    lines.push_str("{\"id\": 3001, \"tags\": [\"a\", \"b\"], \"late\": true}\n");
    lines.push_str("{\"id\": 3002, \"user\": \n");
    lines.push_str("[1, 2]\n");
    p.write("events/day1.jsonl", &lines);
    // A JSON document: an array of records.
    p.write(
        "events/day2.json",
        r#"[{"id": 4001, "user": {"name": "z", "tier": 2.5}}, {"id": 4002}]"#,
    );
    let yml = "type: files\nurl: landing\nstreams:\n  - name: lines\n    options:\n      path: events/*.jsonl\n  - name: doc\n    exclude: [user__tier]\n    options:\n      path: events/*.json\n";
    let r = p.ingest(yml).await.unwrap();
    assert_eq!((r[0].rows, r[0].rejected), (3001, 2));
    assert_eq!((r[1].rows, r[1].rejected), (2, 0));
    let got = rows(
        &p.lake,
        "raw.drops_lines",
        "id, user__name, user__tier, tags, late",
    )
    .await;
    assert_eq!(got.len(), 3001);
    assert_eq!(got[0], "1|u1|1|NULL|NULL");
    assert_eq!(got[3000], "3001|NULL|NULL|[\"a\",\"b\"]|true");
    assert_eq!(
        rows(&p.lake, "raw.drops_lines__rejected", "line, reason").await,
        vec![
            "3002|not valid JSON (EOF while parsing a value at line 1 column 20)",
            "3003|the record is an array, not a JSON object",
        ]
    );
    assert_eq!(
        rows(&p.lake, "raw.drops_doc", "*").await,
        vec!["4001|z|events/day2.json", "4002|NULL|events/day2.json"]
    );
}

/// Creates a bucket on the S3-compatible server (object_store has no call for it).
fn create_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read, Write};
    let url = url::Url::parse(endpoint).unwrap();
    let addr = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    );
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_on_object_storage_load_by_glob() {
    use object_store::ObjectStoreExt;
    let Ok(endpoint) = std::env::var("STRATA_IT_S3_ENDPOINT") else {
        eprintln!("SKIP files_on_object_storage_load_by_glob: STRATA_IT_S3_ENDPOINT is not set");
        return;
    };
    let bucket = format!("files-{}", uuid::Uuid::new_v4().simple());
    create_bucket(&endpoint, &bucket);
    let options: std::collections::HashMap<String, String> = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "testing"),
        ("aws_secret_access_key", "testing"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let store = strata_lake::open_store(
        &url::Url::parse(&format!("s3://{bucket}/")).unwrap(),
        &options,
    )
    .unwrap();
    for (key, body) in [
        ("landing/2024/a.csv", "id,v\n1,x\n"),
        ("landing/2024/b.csv", "id,v\n2,y\n"),
        ("landing/other/c.csv", "id,v\n3,z\n"),
    ] {
        store
            .put(
                &object_store::path::Path::from(key),
                body.as_bytes().to_vec().into(),
            )
            .await
            .unwrap();
    }
    let p = Project::new().await;
    let opts: String = options
        .iter()
        .map(|(k, v)| format!("  {k}: \"{v}\"\n"))
        .collect();
    let yml = format!(
        "type: files\nurl: s3://{bucket}/landing\noptions:\n{opts}streams:\n  - name: s3\n    mode: append\n    options:\n      path: \"2024/*.csv\"\n"
    );
    let r = p.ingest(&yml).await.unwrap();
    assert_eq!(r[0].rows, 2);
    store
        .put(
            &object_store::path::Path::from("landing/2024/d.csv"),
            b"id,v\n4,w\n".to_vec().into(),
        )
        .await
        .unwrap();
    let r = p.ingest(&yml).await.unwrap();
    assert_eq!(r[0].rows, 1);
    assert_eq!(
        rows(&p.lake, "raw.drops_s3", "id, v, _file").await,
        vec!["1|x|2024/a.csv", "2|y|2024/b.csv", "4|w|2024/d.csv"]
    );
}
