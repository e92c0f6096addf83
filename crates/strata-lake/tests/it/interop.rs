//! Tables written by Strata are read by the Python `deltalake` package (and the reverse).

use std::process::Command;
use std::sync::Arc;

use strata_lake::deltalake::arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use strata_lake::{WriteMode, WriteOptions};

use crate::common::{Ctx, TestResult, batch, both_backends, query_latest, tn};

/// Ends a script without interpreter teardown. The Python `deltalake` package (1.6 with
/// pyarrow 26) sometimes aborts at exit after an S3 read ("terminate called without an active
/// exception", SIGABRT, about 1 run in 30), after its work and output are complete.
const EXIT: &str = "\nsys.stdout.flush()\nos._exit(0)\n";

/// Reads a Delta table with Python and prints it as JSON: version, partition columns,
/// Arrow types and rows ordered by `id`.
const READ: &str = r#"
import json, os, sys, deltalake
uri, opts = sys.argv[1], json.loads(sys.argv[2])
dt = deltalake.DeltaTable(uri, storage_options=opts or None)
tbl = dt.to_pyarrow_table()
rows = sorted(tbl.to_pylist(), key=lambda r: r["id"])
print(json.dumps({
    "version": dt.version(),
    "partition_columns": list(dt.metadata().partition_columns),
    "types": {f.name: str(f.type) for f in tbl.schema},
    "rows": rows,
}, default=str))
"#;

/// Appends one row with Python's writer.
const APPEND: &str = r#"
import datetime, decimal, json, os, sys, deltalake, pyarrow as pa
uri, opts = sys.argv[1], json.loads(sys.argv[2])
dt = deltalake.DeltaTable(uri, storage_options=opts or None)
schema = dt.schema().to_arrow()
schema = pa.schema(schema)
row = {
    "id": [4], "qty": [None], "name": ["from python"],
    "price": [decimal.Decimal("0.01")], "day": [datetime.date(1999, 12, 31)],
    "at": [datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)], "region": ["us"],
}
tbl = pa.Table.from_pydict(row, schema=schema)
deltalake.write_deltalake(uri, tbl, mode="append", storage_options=opts or None)
print(deltalake.DeltaTable(uri, storage_options=opts or None).version())
"#;

/// Runs a script with the test venv's Python and returns its standard output.
fn python(python: &str, script: &str, args: &[&str]) -> TestResult<String> {
    let out = Command::new(python)
        .arg("-c")
        .arg(format!("{script}{EXIT}"))
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "{python} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

async fn python_reads_what_strata_writes(ctx: Ctx) -> TestResult {
    let Ok(py) = std::env::var("STRATA_PYTHON") else {
        eprintln!(
            "SKIP interop [{:?}]: STRATA_PYTHON is not set (scripts/test.sh sets it)",
            ctx.backend
        );
        return Ok(());
    };
    let lake = &ctx.lake;
    let t = tn("marts.sales");
    // 2024-03-01 = day 19783; 2024-03-01T12:34:56.789Z in microseconds.
    let at = 1_709_296_496_789_000_i64;
    let rows = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
        (
            "qty",
            Arc::new(Int32Array::from(vec![Some(5), None, Some(-7)])) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from(vec![
                Some("näme, \"quoted\""),
                Some("b"),
                None,
            ])) as ArrayRef,
        ),
        (
            "price",
            Arc::new(
                Decimal128Array::from(vec![Some(1234), Some(-5), None])
                    .with_precision_and_scale(12, 2)?,
            ) as ArrayRef,
        ),
        (
            "day",
            Arc::new(Date32Array::from(vec![Some(19783), None, Some(0)])) as ArrayRef,
        ),
        (
            "at",
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(at), Some(0), None]).with_timezone("UTC"),
            ) as ArrayRef,
        ),
        (
            "region",
            Arc::new(StringArray::from(vec![Some("eu"), Some("us"), None])) as ArrayRef,
        ),
    ]);
    lake.write_batches(
        &t,
        vec![rows],
        WriteMode::Create,
        &WriteOptions {
            partition_by: vec!["region".into()],
            ..Default::default()
        },
    )
    .await?;

    let (uri, opts) = ctx.python_location(&t);
    let opts = opts.to_string();
    let out = python(&py, READ, &[&uri, &opts])?;
    let got: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(got["version"], 0);
    assert_eq!(got["partition_columns"], serde_json::json!(["region"]));
    let types = &got["types"];
    assert_eq!(types["id"], "int64");
    assert_eq!(types["qty"], "int32");
    assert_eq!(types["price"], "decimal128(12, 2)");
    assert_eq!(types["day"], "date32[day]");
    assert_eq!(types["at"], "timestamp[us, tz=UTC]");
    assert_eq!(
        got["rows"],
        serde_json::json!([
            {"id": 1, "qty": 5, "name": "näme, \"quoted\"", "price": "12.34",
             "day": "2024-03-01", "at": "2024-03-01 12:34:56.789000+00:00", "region": "eu"},
            {"id": 2, "qty": null, "name": "b", "price": "-0.05",
             "day": null, "at": "1970-01-01 00:00:00+00:00", "region": "us"},
            {"id": 3, "qty": -7, "name": null, "price": null,
             "day": "1970-01-01", "at": null, "region": null},
        ])
    );

    // The other way round: Python appends, Strata reads every type back.
    let mut py_opts = ctx.python_location(&t).1;
    if let Some(o) = py_opts.as_object_mut().filter(|o| !o.is_empty()) {
        // Python's writer commits on S3 only with conditional puts (or an unsafe opt-in).
        o.insert("conditional_put".into(), "etag".into());
    }
    let version = python(&py, APPEND, &[&uri, &py_opts.to_string()])?;
    assert_eq!(version.trim(), "1");
    assert_eq!(lake.table_info(&t).await?.version, 1);
    assert_eq!(
        query_latest(
            lake,
            &t,
            "select id, qty, name, price, day, at, region from t order by id"
        )
        .await?,
        [
            "1, 5, näme, \"quoted\", 12.34, 2024-03-01, 2024-03-01T12:34:56.789Z, eu",
            "2, NULL, b, -0.05, NULL, 1970-01-01T00:00:00Z, us",
            "3, -7, NULL, NULL, 1970-01-01, NULL, NULL",
            "4, NULL, from python, 0.01, 1999-12-31, 2000-01-01T00:00:00Z, us",
        ]
    );
    Ok(())
}

both_backends!(python_reads_what_strata_writes);
