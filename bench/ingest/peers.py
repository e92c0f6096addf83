#!/usr/bin/env python3
"""One extraction by a peer tool, from a database table to files; prints JSON on stdout.

  peers.py connectorx --uri postgresql://… --table s.t --out DIR [--partitions 4 --key id]
  peers.py polars     --uri … --table s.t --out DIR
  peers.py dlt        --uri … --table s.t --out DIR [--format delta|parquet] [--backend pyarrow|connectorx]
  peers.py adbc       --uri postgresql://… --table s.t --out DIR
  peers.py sling      --uri postgresql://… --table s.t --out DIR  (SLING_BINARY: the sling binary)
  peers.py copy       --uri postgresql://… --table s.t --out DIR  (binary COPY, drained; no output)
  peers.py duckdb     --uri … --table s.t --out DIR       (PostgreSQL only; needs the
                                                           postgres_scanner extension package)

What each does (the whole table, every column, no transformation):
  connectorx  connectorx.read_sql(return_type="arrow") into one Arrow table in memory, then
              pyarrow.parquet.write_table (Snappy). With --partitions K: K range queries on
              the key over K connections (connectorx's partition_on/partition_num).
  polars      polars.read_database_uri(engine="connectorx") into a DataFrame, then
              DataFrame.write_parquet (Polars' default: zstd).
  dlt         a dlt pipeline: sql_database source (backend="pyarrow", SQLAlchemy cursor read
              in chunks into Arrow; or backend="connectorx", one connectorx.read_sql of the
              whole table into Arrow) to the filesystem destination, as a Delta table
              (table_format="delta") or Parquet files; extract, normalize and load steps.
  adbc        adbc_driver_postgresql.dbapi: cursor.execute + fetch_arrow_table() (binary COPY
              under the hood) into one Arrow table in memory, then pyarrow.parquet.write_table
              (Snappy). numeric arrives as an opaque string extension type and is written so.
  sling       the sling CLI (Go): `sling run --src-conn PG --src-stream s.t --tgt-object
              file://DIR/data.parquet`, SLING_DUCKDB_COMPUTE=false (its own Parquet writer, no
              DuckDB), telemetry off.
  copy        psycopg2 copy_expert("COPY (SELECT * FROM s.t) TO STDOUT (FORMAT binary)") into a
              sink that drops the bytes: the ceiling when psql is missing (run.sh prefers psql).
  duckdb      DuckDB ATTACH … (TYPE postgres) and COPY (SELECT * FROM pg.s.t) TO out.parquet
              (postgres_scanner: parallel ctid-range reads under one exported snapshot).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time


def out_file(a) -> str:
    os.makedirs(a.out, exist_ok=True)
    return os.path.join(a.out, "data.parquet")


def run_connectorx(a) -> dict:
    import connectorx as cx
    import pyarrow.parquet as pq

    kw = {}
    if a.partitions > 1:
        kw = {"partition_on": a.key, "partition_num": a.partitions}
    t0 = time.perf_counter()
    table = cx.read_sql(a.uri, f"SELECT * FROM {a.table}", return_type="arrow", **kw)
    t1 = time.perf_counter()
    pq.write_table(table, out_file(a), compression="snappy")
    return {"rows": table.num_rows, "read_s": t1 - t0, "write_s": time.perf_counter() - t1}


def run_polars(a) -> dict:
    import polars as pl

    t0 = time.perf_counter()
    df = pl.read_database_uri(f"SELECT * FROM {a.table}", a.uri, engine="connectorx")
    t1 = time.perf_counter()
    df.write_parquet(out_file(a))
    return {"rows": df.height, "read_s": t1 - t0, "write_s": time.perf_counter() - t1}


def run_adbc(a) -> dict:
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow.parquet as pq

    uri = a.uri.replace("postgres://", "postgresql://", 1)
    t0 = time.perf_counter()
    with adbc.connect(uri) as con, con.cursor() as cur:
        cur.execute(f"SELECT * FROM {a.table}")
        table = cur.fetch_arrow_table()
    t1 = time.perf_counter()
    pq.write_table(table, out_file(a), compression="snappy")
    return {"rows": table.num_rows, "read_s": t1 - t0, "write_s": time.perf_counter() - t1}


def run_sling(a) -> dict:
    import subprocess

    binary = os.environ.get("SLING_BINARY")
    if not binary:
        raise SystemExit("SLING_BINARY is not set")
    env = dict(os.environ)
    env.setdefault("SLING_DUCKDB_COMPUTE", "false")
    env.setdefault("SLING_DISABLE_TELEMETRY", "true")
    uri = a.uri
    if "sslmode=" not in uri:
        uri += ("&" if "?" in uri else "?") + "sslmode=disable"
    env["BENCH_PG"] = uri
    path = out_file(a)
    t0 = time.perf_counter()
    r = subprocess.run([binary, "run", "--src-conn", "BENCH_PG", "--src-stream", a.table,
                        "--tgt-object", "file://" + path], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit(r.returncode)
    wrote = [ln for ln in (r.stdout + r.stderr).splitlines() if "wrote" in ln]
    return {"run_s": time.perf_counter() - t0, "log": wrote[-1][-120:] if wrote else ""}


def run_copy(a) -> dict:
    import psycopg2

    class Sink:
        n = 0

        def write(self, b):
            Sink.n += len(b)
            return len(b)

    con = psycopg2.connect(a.uri)
    t0 = time.perf_counter()
    con.cursor().copy_expert(f"COPY (SELECT * FROM {a.table}) TO STDOUT (FORMAT binary)", Sink())
    return {"bytes": Sink.n, "copy_s": time.perf_counter() - t0}


def run_dlt(a) -> dict:
    import dlt
    from dlt.sources.sql_database import sql_database

    schema, table = a.table.split(".", 1)
    os.makedirs(a.out, exist_ok=True)
    os.environ["DLT_DATA_DIR"] = os.path.join(a.out, "_dlt_data")
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    uri = a.uri
    # SQLAlchemy drivers: psycopg2 for PostgreSQL, PyMySQL for MySQL/MariaDB.
    for plain, driver in (("postgresql://", "postgresql+psycopg2://"), ("postgres://", "postgresql+psycopg2://"),
                          ("mysql://", "mysql+pymysql://")):
        if uri.startswith(plain):
            uri = driver + uri[len(plain):]
    src_kw = {}
    if a.backend == "connectorx":
        # connectorx wants the plain URL, not SQLAlchemy's driver-qualified one.
        src_kw["backend_kwargs"] = {"conn": a.uri.replace("postgres://", "postgresql://", 1)}
    source = sql_database(uri, schema=schema, table_names=[table], backend=a.backend, **src_kw)
    pipeline = dlt.pipeline(
        pipeline_name="bench_ingest",
        pipelines_dir=os.path.join(a.out, "_dlt_pipelines"),
        destination=dlt.destinations.filesystem(bucket_url="file://" + os.path.join(a.out, "lake")),
        dataset_name="bench",
    )
    kw = {"loader_file_format": "parquet"}
    if a.format == "delta":
        kw["table_format"] = "delta"
    info = pipeline.run(source, write_disposition="replace", **kw)
    info.raise_on_failed_jobs()
    steps = {}
    trace = pipeline.last_trace
    if trace:
        for s in trace.steps:
            if s.started_at and s.finished_at:
                steps[f"{s.step}_s"] = (s.finished_at - s.started_at).total_seconds()
    rows = pipeline.last_trace.last_normalize_info.row_counts.get(table) if trace else None
    return {"rows": rows, **steps}


def run_duckdb(a) -> dict:
    import duckdb

    ext = None
    try:
        import duckdb_extension_postgres_scanner as e

        found = glob.glob(os.path.join(e.__path__[0], "extensions", "**", "*.duckdb_extension"), recursive=True)
        ext = found[0] if found else None
    except ImportError:
        pass
    con = duckdb.connect()
    con.execute(f"LOAD '{ext}'" if ext else "LOAD postgres")
    con.execute(f"ATTACH '{a.uri}' AS pg (TYPE postgres, READ_ONLY)")
    path = out_file(a)
    t0 = time.perf_counter()
    con.execute(f"COPY (SELECT * FROM pg.{a.table}) TO '{path}' (FORMAT parquet)")
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()[0]
    return {"rows": rows, "copy_s": time.perf_counter() - t0, "threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("tool", choices=["connectorx", "polars", "dlt", "duckdb", "adbc", "sling", "copy"])
    p.add_argument("--uri", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--key", default="id")
    p.add_argument("--format", default="delta", choices=["delta", "parquet"])
    p.add_argument("--backend", default="pyarrow", choices=["pyarrow", "connectorx"])
    a = p.parse_args()
    res = {"connectorx": run_connectorx, "polars": run_polars, "dlt": run_dlt, "duckdb": run_duckdb,
           "adbc": run_adbc, "sling": run_sling, "copy": run_copy}[a.tool](a)
    print(json.dumps(res))


if __name__ == "__main__":
    sys.exit(main())
