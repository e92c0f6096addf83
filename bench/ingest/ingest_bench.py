#!/usr/bin/env python3
"""Ingestion benchmark driver: Strata and peer tools extract the same database table to files.

  ingest_bench.py gen    --pg URL --rows N                 create/reuse bench_ingest.orders
  ingest_bench.py gen    --pg URL --dataset lineitem --parquet F   TPC-H lineitem loaded by COPY
  ingest_bench.py gen    --pg URL --dataset wide --rows N  a 30-column text-heavy table
  ingest_bench.py gen    --mysql URL --rows N              the same orders table in MariaDB/MySQL
  ingest_bench.py run    --bin B --db pg|mysql --uri URL --tools a,b --work DIR --out JSON
  ingest_bench.py report RESULTS                           table + ratios, RESULTS/report.md

Every tool runs as its own child process, timed from fork to wait4's return. Peak RSS is the
larger of wait4's ru_maxrss (when above this driver's own peak, which Linux carries into a
child's ru_maxrss at exec) and the peak of the process tree's summed RSS sampled every 0.1 s
(a tool that forks workers is counted whole). Each output is read back afterwards
(outside the timing) and checked against the source: row count, sum(key), sum(amount), where
key/amount are the dataset's columns (orders and wide: id, amount; lineitem: l_orderkey,
l_extendedprice). The `copy-binary` run writes nothing: it is the ceiling, PostgreSQL's
binary COPY of the table drained to /dev/null by psql.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMA = "bench_ingest"
TABLE = "orders"

# An orders table: ids with a few gaps, ints, numeric(12,2), short and long text, a
# timestamptz, a date, a bool, NULLs in several columns. Deterministic (no random()), so the
# checksums are the same on every machine.
PG_DDL = f"""
DROP TABLE IF EXISTS {SCHEMA}.{TABLE};
CREATE TABLE {SCHEMA}.{TABLE} (
  id bigint PRIMARY KEY,
  customer_id int NOT NULL,
  quantity int,
  amount numeric(12,2),
  status text NOT NULL,
  note text,
  created_at timestamptz NOT NULL,
  ship_date date,
  is_paid boolean NOT NULL
);
"""
PG_INSERT = f"""
INSERT INTO {SCHEMA}.{TABLE}
SELECT g,
       (g * 7919) % 100000,
       CASE WHEN g % 17 = 0 THEN NULL ELSE 1 + g % 9 END,
       CASE WHEN g % 23 = 0 THEN NULL ELSE ((g * 104729) % 1000000) / 100.0 END,
       (ARRAY['new','paid','shipped','delivered','cancelled'])[1 + g % 5],
       CASE WHEN g % 10 = 0 THEN NULL
            ELSE left(md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text), (4 + (g * 31) % 90)::int) END,
       timestamptz '2023-01-01 00:00:00+00' + g * interval '6 seconds',
       CASE WHEN g % 7 = 0 THEN NULL ELSE date '2023-01-01' + (g % 900)::int END,
       g % 3 <> 0
FROM generate_series({{lo}}::bigint, {{hi}}::bigint) AS g
WHERE g % 1000 <> 999
"""
MY_DDL = [
    f"CREATE DATABASE IF NOT EXISTS {SCHEMA}",
    f"DROP TABLE IF EXISTS {SCHEMA}.{TABLE}",
    f"""CREATE TABLE {SCHEMA}.{TABLE} (
  id bigint PRIMARY KEY,
  customer_id int NOT NULL,
  quantity int,
  amount decimal(12,2),
  status varchar(16) NOT NULL,
  note text,
  created_at datetime(6) NOT NULL,
  ship_date date,
  is_paid boolean NOT NULL
) ENGINE=InnoDB""",
]
MY_INSERT = f"""
INSERT INTO {SCHEMA}.{TABLE}
SELECT seq,
       (seq * 7919) % 100000,
       CASE WHEN seq % 17 = 0 THEN NULL ELSE 1 + seq % 9 END,
       CASE WHEN seq % 23 = 0 THEN NULL ELSE ((seq * 104729) % 1000000) / 100.0 END,
       ELT(1 + seq % 5, 'new','paid','shipped','delivered','cancelled'),
       CASE WHEN seq % 10 = 0 THEN NULL
            ELSE left(concat(md5(seq), md5(seq + 1), md5(seq + 2)), 4 + (seq * 31) % 90) END,
       timestamp '2023-01-01 00:00:00' + interval seq * 6 second,
       CASE WHEN seq % 7 = 0 THEN NULL ELSE date '2023-01-01' + interval (seq % 900) day END,
       seq % 3 <> 0
FROM seq_{{lo}}_to_{{hi}}
WHERE seq % 1000 <> 999
"""
# Ids are 1..N·1000/999 minus every 1000th, so exactly N rows (rounded) with gaps.


def ids_for(rows: int) -> int:
    """The top id such that 1..hi minus every id ≡ 999 (mod 1000) holds `rows` rows."""
    full, rest = divmod(rows, 999)
    return full * 1000 + rest


# Per dataset: the table, the key (connectorx-4's partition column; the checksum's sum) and the
# numeric column whose sum the checksum compares.
DATASETS = {
    "orders": {"table": "orders", "key": "id", "amount": "amount"},
    "lineitem": {"table": "lineitem", "key": "l_orderkey", "amount": "l_extendedprice"},
    "wide": {"table": "wide", "key": "id", "amount": "amount"},
}

# TPC-H lineitem with the specification's types (decimal(15,2), char(n), varchar(44)); loaded
# from tpchgen-cli's Parquet by COPY FROM STDIN (CSV), then a primary key and VACUUM.
LINEITEM_DDL = f"""
DROP TABLE IF EXISTS {SCHEMA}.lineitem;
CREATE TABLE {SCHEMA}.lineitem (
  l_orderkey bigint NOT NULL,
  l_partkey bigint NOT NULL,
  l_suppkey bigint NOT NULL,
  l_linenumber int NOT NULL,
  l_quantity numeric(15,2) NOT NULL,
  l_extendedprice numeric(15,2) NOT NULL,
  l_discount numeric(15,2) NOT NULL,
  l_tax numeric(15,2) NOT NULL,
  l_returnflag char(1) NOT NULL,
  l_linestatus char(1) NOT NULL,
  l_shipdate date NOT NULL,
  l_commitdate date NOT NULL,
  l_receiptdate date NOT NULL,
  l_shipinstruct char(25) NOT NULL,
  l_shipmode char(10) NOT NULL,
  l_comment varchar(44) NOT NULL
);
"""

# A wide, text-heavy table: id, 3 ints, a numeric, 2 timestamps/dates, a bool and 22 text
# columns of 10-120 characters (mean ~65; every 13th value NULL), ~1.4 KiB of text a row, so
# rows stay under the TOAST threshold. Deterministic: substrings of md5 chains of the id.
WIDE_TEXT = 22
WIDE_DDL = (
    f"DROP TABLE IF EXISTS {SCHEMA}.wide;\nCREATE TABLE {SCHEMA}.wide (\n  id bigint PRIMARY KEY,\n"
    "  k1 int NOT NULL,\n  k2 int,\n  k3 bigint,\n  amount numeric(14,2),\n"
    "  created_at timestamptz NOT NULL,\n  updated_at timestamp,\n  flag boolean NOT NULL,\n"
    + ",\n".join(f"  t{i:02d} text" for i in range(1, WIDE_TEXT + 1))
    + "\n);\n"
)
WIDE_INSERT = (
    f"INSERT INTO {SCHEMA}.wide\nSELECT g, (g * 7919) % 100000, CASE WHEN g % 11 = 0 THEN NULL ELSE g % 1000 END,\n"
    "       g * 31, CASE WHEN g % 19 = 0 THEN NULL ELSE ((g * 104729) % 10000000) / 100.0 END,\n"
    "       timestamptz '2022-01-01 00:00:00+00' + g * interval '7 seconds',\n"
    "       timestamp '2022-06-01 00:00:00' + g * interval '11 seconds', g % 4 <> 0,\n"
    + ",\n".join(
        f"       CASE WHEN (g + {i}) % 13 = 0 THEN NULL "
        f"ELSE substr(h, {1 + (i * 7) % 64}, (10 + (g * {i + 2} + {i * 17}) % 111)::int) END"
        for i in range(1, WIDE_TEXT + 1)
    )
    + "\nFROM generate_series({lo}::bigint, {hi}::bigint) AS g,\n"
    "     LATERAL (SELECT md5(g::text) || md5((g + 7)::text) || md5((g + 13)::text) || md5((g + 29)::text)"
    " || md5((g + 31)::text) AS h) AS x\n"
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loadavg() -> float:
    return os.getloadavg()[0]


# --- generation -------------------------------------------------------------------------------


def expected_sql(table: str, key: str = "id", amount: str = "amount") -> str:
    return f"SELECT count(*), coalesce(sum({key}), 0), coalesce(sum({amount}), 0) FROM {table}"


def copy_parquet_into(cur, parquet: str, table: str) -> None:
    """COPY a Parquet file into a table as CSV, streamed through a pipe (no temporary file)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    r, w = os.pipe()
    err: list[BaseException] = []

    def writer():
        try:
            with os.fdopen(w, "wb") as f:
                pf = pq.ParquetFile(parquet)
                out = None
                # tpchgen-cli writes string_view, which Arrow's CSV writer does not take.
                schema = pa.schema([pa.field(f.name, pa.string() if f.type == pa.string_view() else f.type)
                                    for f in pf.schema_arrow])
                for batch in pf.iter_batches(batch_size=200_000):
                    batch = batch.cast(schema)
                    if out is None:
                        out = pacsv.CSVWriter(f, batch.schema, write_options=pacsv.WriteOptions(include_header=False))
                    out.write_batch(batch)
                if out is not None:
                    out.close()
        except BaseException as e:  # surfaced after the COPY
            err.append(e)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    with os.fdopen(r, "rb") as f:
        cur.copy_expert(f"COPY {table} FROM STDIN (FORMAT csv)", f, size=1 << 20)
    t.join()
    if err:
        raise err[0]


def gen_pg_dataset(url: str, dataset: str, rows: int, parquet: str | None) -> dict:
    """lineitem (from TPC-H Parquet) or wide (generate_series); reused when the count matches."""
    import psycopg2

    d = DATASETS[dataset]
    name = f"{SCHEMA}.{d['table']}"
    con = psycopg2.connect(url)
    con.autocommit = True
    cur = con.cursor()
    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    if dataset == "lineitem":
        import pyarrow.parquet as pq

        if not parquet or not Path(parquet).exists():
            raise SystemExit(f"lineitem needs TPC-H Parquet (--parquet); {parquet!r} does not exist")
        rows = pq.ParquetFile(parquet).metadata.num_rows
    cur.execute(f"SELECT to_regclass('{name}') IS NOT NULL")
    n = None
    if cur.fetchone()[0]:
        cur.execute(f"SELECT count(*) FROM {name}")
        n = cur.fetchone()[0]
    t0 = time.perf_counter()
    if n != rows:
        log(f"[gen] PostgreSQL {name}: generating {rows} rows")
        if dataset == "lineitem":
            cur.execute(LINEITEM_DDL)
            copy_parquet_into(cur, parquet, name)
            cur.execute(f"ALTER TABLE {name} ADD PRIMARY KEY (l_orderkey, l_linenumber)")
        else:
            cur.execute(WIDE_DDL)
            step = 200_000
            for lo in range(1, rows + 1, step):
                cur.execute(WIDE_INSERT.format(lo=lo, hi=min(rows, lo + step - 1)))
        cur.execute(f"VACUUM (FREEZE, ANALYZE) {name}")
    else:
        log(f"[gen] PostgreSQL {name}: reusing {rows} rows")
    cur.execute(expected_sql(name, d["key"], d["amount"]))
    count, sum_id, sum_amount = cur.fetchone()
    cur.execute(f"SELECT pg_total_relation_size('{name}'), pg_relation_size('{name}')")
    total, heap = cur.fetchone()
    cur.execute(f"SELECT count(*) FROM information_schema.columns WHERE table_schema = '{SCHEMA}' "
                f"AND table_name = '{d['table']}'")
    ncols = cur.fetchone()[0]
    return {
        "db": "postgres", "dataset": dataset, "table": name, "key": d["key"], "amount": d["amount"],
        "columns": ncols, "rows": count, "sum_id": int(sum_id), "sum_amount": float(sum_amount),
        "table_bytes": heap, "total_bytes": total, "generated": n != rows, "gen_s": time.perf_counter() - t0,
    }


def gen_pg(url: str, rows: int) -> dict:
    import psycopg2

    con = psycopg2.connect(url)
    con.autocommit = True
    cur = con.cursor()
    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    cur.execute(f"SELECT to_regclass('{SCHEMA}.{TABLE}') IS NOT NULL")
    exists = cur.fetchone()[0]
    n = None
    if exists:
        cur.execute(f"SELECT count(*) FROM {SCHEMA}.{TABLE}")
        n = cur.fetchone()[0]
    t0 = time.perf_counter()
    if n != rows:
        log(f"[gen] PostgreSQL {SCHEMA}.{TABLE}: generating {rows} rows")
        cur.execute(PG_DDL)
        hi = ids_for(rows)
        step = 1_000_000
        for lo in range(1, hi + 1, step):
            cur.execute(PG_INSERT.format(lo=lo, hi=min(hi, lo + step - 1)))
        cur.execute(f"VACUUM (FREEZE, ANALYZE) {SCHEMA}.{TABLE}")
    else:
        log(f"[gen] PostgreSQL {SCHEMA}.{TABLE}: reusing {rows} rows")
    cur.execute(expected_sql(f"{SCHEMA}.{TABLE}"))
    count, sum_id, sum_amount = cur.fetchone()
    cur.execute(f"SELECT pg_total_relation_size('{SCHEMA}.{TABLE}'), pg_relation_size('{SCHEMA}.{TABLE}')")
    total, heap = cur.fetchone()
    return {
        "db": "postgres", "dataset": "orders", "key": "id", "amount": "amount", "columns": 9,
        "table": f"{SCHEMA}.{TABLE}", "rows": count, "sum_id": int(sum_id),
        "sum_amount": float(sum_amount), "table_bytes": heap, "total_bytes": total,
        "generated": n != rows, "gen_s": time.perf_counter() - t0,
    }


def gen_mysql(url: str, rows: int) -> dict:
    import pymysql
    from urllib.parse import urlparse

    u = urlparse(url)
    con = pymysql.connect(host=u.hostname, port=u.port or 3306, user=u.username or "root",
                          password=u.password or "", autocommit=True)
    cur = con.cursor()
    n = None
    try:
        cur.execute(f"SELECT count(*) FROM {SCHEMA}.{TABLE}")
        n = cur.fetchone()[0]
    except pymysql.err.MySQLError:
        pass
    t0 = time.perf_counter()
    if n != rows:
        log(f"[gen] MySQL {SCHEMA}.{TABLE}: generating {rows} rows")
        for s in MY_DDL:
            cur.execute(s)
        cur.execute(f"USE {SCHEMA}")  # the sequence engine's seq_* tables need a database
        hi = ids_for(rows)
        step = 500_000
        for lo in range(1, hi + 1, step):
            cur.execute(MY_INSERT.format(lo=lo, hi=min(hi, lo + step - 1)))
        cur.execute(f"ANALYZE TABLE {SCHEMA}.{TABLE}")
        cur.fetchall()
    else:
        log(f"[gen] MySQL {SCHEMA}.{TABLE}: reusing {rows} rows")
    cur.execute(expected_sql(f"{SCHEMA}.{TABLE}"))
    count, sum_id, sum_amount = cur.fetchone()
    cur.execute(
        "SELECT data_length + index_length, data_length FROM information_schema.tables "
        f"WHERE table_schema = '{SCHEMA}' AND table_name = '{TABLE}'"
    )
    total, heap = cur.fetchone()
    return {
        "db": "mysql", "dataset": "orders", "key": "id", "amount": "amount", "columns": 9,
        "table": f"{SCHEMA}.{TABLE}", "rows": count, "sum_id": int(sum_id),
        "sum_amount": float(sum_amount), "table_bytes": heap, "total_bytes": total,
        "generated": n != rows, "gen_s": time.perf_counter() - t0,
    }


def cmd_gen(a) -> None:
    if a.dataset != "orders":
        if not a.pg:
            raise SystemExit(f"dataset {a.dataset} is PostgreSQL only")
        res = gen_pg_dataset(a.pg, a.dataset, a.rows, a.parquet)
    else:
        res = gen_pg(a.pg, a.rows) if a.pg else gen_mysql(a.mysql, a.rows)
    Path(a.out).write_text(json.dumps(res, indent=1))
    log(f"[gen] {res['rows']} rows, {res['table_bytes'] / 2**20:.0f} MiB heap ({res['gen_s']:.1f}s)")


# --- measuring --------------------------------------------------------------------------------


class Child:
    def __init__(self, rc, wall, peak_rss, stdout, stderr):
        self.rc, self.wall, self.peak_rss, self.stdout, self.stderr = rc, wall, peak_rss, stdout, stderr


def tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_child(argv, cwd=None, env=None, timeout=3600) -> Child:
    out_f, err_f = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f)
    done = threading.Event()
    peak = [0]

    def sampler():
        while not done.wait(0.1):
            peak[0] = max(peak[0], tree_rss(p.pid))

    def killer():
        if not done.wait(timeout):
            p.kill()

    threading.Thread(target=sampler, daemon=True).start()
    threading.Thread(target=killer, daemon=True).start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    p.returncode = os.waitstatus_to_exitcode(status)
    out_f.seek(0)
    err_f.seek(0)
    # Linux carries the exec'ing process's old memory high-water mark into ru_maxrss, and a
    # (v)forked child's old memory is this process's: a child's ru_maxrss is never below this
    # driver's own peak. So it counts only above that; the driver stays small (the output
    # checks run in a subprocess) and the 0.1 s samples cover the rest.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    maxrss = ru.ru_maxrss * 1024 if ru.ru_maxrss * 1024 > own * 1.05 else 0
    return Child(p.returncode, wall, max(maxrss, peak[0]),
                 out_f.read().decode(errors="replace"), err_f.read().decode(errors="replace"))


def dir_bytes(path: Path, skip: tuple[str, ...] = ()) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d not in skip]
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def checksum(path: Path, fmt: str, key: str = "id", amount: str = "amount") -> dict:
    """count, sum(key), sum(amount) of a Delta table or a folder of Parquet files."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if fmt == "delta":
        from deltalake import DeltaTable

        dataset = DeltaTable(str(path)).to_pyarrow_dataset()
    else:
        files = sorted(str(p) for p in Path(path).rglob("*.parquet"))
        dataset = ds.dataset(files, format="parquet")
    count, sum_id, sum_amount = 0, 0, 0.0
    import pyarrow as pa

    def plain(col):
        # Extension types (ADBC's numeric: opaque over string) are summed through their storage.
        if isinstance(col.type, pa.ExtensionType) or hasattr(col, "storage"):
            col = col.storage
        return col

    for batch in dataset.to_batches(columns=[key, amount]):
        count += batch.num_rows
        sum_id += int(pc.sum(plain(batch.column(0)).cast("int64")).as_py() or 0)
        s = pc.sum(plain(batch.column(1)).cast("float64")).as_py()
        sum_amount += float(s or 0)
    return {"rows": count, "sum_id": sum_id, "sum_amount": round(sum_amount, 2)}


def verify(got: dict, want: dict) -> str:
    bad = []
    if got["rows"] != want["rows"]:
        bad.append(f"rows {got['rows']} != {want['rows']}")
    if got["sum_id"] != want["sum_id"]:
        bad.append(f"sum(id) {got['sum_id']} != {want['sum_id']}")
    if abs(got["sum_amount"] - want["sum_amount"]) > 0.5:
        bad.append(f"sum(amount) {got['sum_amount']} != {want['sum_amount']}")
    return "ok" if not bad else "; ".join(bad)


def strata_project(bin_: str, dir_: Path, db: str, uri: str, table: str, stream: str, parallel: str | None) -> None:
    if dir_.exists():
        shutil.rmtree(dir_)
    c = run_child([bin_, "--quiet", "init", str(dir_), "--name", "ingest_bench"])
    if c.rc != 0:
        raise RuntimeError(f"strata init failed: {c.stderr.strip()}")
    src = f"type: {db}\nurl: {uri}\nstreams:\n  - name: {stream}\n    table: {table}\n"
    if parallel is not None:
        src += f"    options:\n      parallel_reads: \"{parallel}\"\n"
    (dir_ / "sources").mkdir(exist_ok=True)
    (dir_ / "sources" / "bench.yml").write_text(src)


def measure(a, tool: str, expected: dict) -> dict:
    """One run of one tool; returns its numbers (and the checksum of its output)."""
    work = Path(a.work) / a.db / tool
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    table = expected["table"]
    short = table.split(".", 1)[1]
    key, amount = expected.get("key", "id"), expected.get("amount", "amount")
    py = sys.executable
    env = dict(os.environ)
    fmt, out_dir, skip = "parquet", work / "out", ()
    peer = [py, str(HERE / "peers.py")]
    if tool.startswith("strata"):
        # strata (auto parallelism), strata-1 / strata-4 (parallel_reads fixed)
        parallel = tool.split("-", 1)[1] if "-" in tool else None
        strata_project(a.bin, work / "project", a.db, a.uri, table, short, parallel)
        argv = [a.bin, "--project", str(work / "project"), "ingest", "bench"]
        fmt, out_dir = "delta", work / "project" / ".strata" / "lake" / "raw" / f"bench_{short}"
    elif tool.startswith("connectorx"):
        parts = tool.split("-", 1)[1] if "-" in tool else "1"
        argv = [*peer, "connectorx", "--uri", a.uri, "--table", table,
                "--out", str(out_dir), "--partitions", parts, "--key", key]
    elif tool in ("polars", "duckdb", "adbc", "sling"):
        if a.db != "postgres" and tool in ("duckdb", "adbc", "sling"):
            return {"tool": tool, "skipped": "PostgreSQL only in this benchmark"}
        argv = [*peer, tool, "--uri", a.uri, "--table", table, "--out", str(out_dir)]
        if tool == "duckdb":
            if not a.duckdb_path:
                return {"tool": tool, "skipped": "the DuckDB postgres_scanner extension package is not installed"}
            env["PYTHONPATH"] = a.duckdb_path
        if tool == "adbc":
            try:
                import adbc_driver_postgresql  # noqa: F401
            except ImportError:
                return {"tool": tool, "skipped": "adbc-driver-postgresql is not installed"}
        if tool == "sling":
            sling = sling_binary()
            if not sling:
                return {"tool": tool, "skipped": "no sling binary (PyPI sling-linux-amd64 not installed)"}
            env.update(SLING_BINARY=sling, SLING_DUCKDB_COMPUTE="false", SLING_DISABLE_TELEMETRY="true",
                       SLING_HOME_DIR=str(work / "sling-home"))
    elif tool == "copy-binary":
        if a.db != "postgres":
            return {"tool": tool, "skipped": "PostgreSQL only"}
        sql = f"COPY (SELECT * FROM {table}) TO STDOUT (FORMAT binary)"
        if shutil.which("psql"):
            # psql's COPY TO STDOUT into /dev/null: the server's binary COPY, the client does nothing.
            argv = ["sh", "-c", 'exec psql -X -q "$1" -c "$2" > /dev/null', "sh", a.uri, sql]
        else:
            argv = [*peer, "copy", "--uri", a.uri, "--table", table, "--out", str(out_dir)]
        fmt = None
    elif tool.startswith("dlt"):
        # dlt (pyarrow backend, Delta), dlt-parquet, dlt-cx (connectorx backend, Delta), dlt-cx-parquet
        f = "parquet" if tool.endswith("-parquet") else "delta"
        backend = "connectorx" if tool.startswith("dlt-cx") else "pyarrow"
        argv = [*peer, "dlt", "--uri", a.uri, "--table", table, "--out", str(out_dir),
                "--format", f, "--backend", backend]
        fmt = f
        skip = ("_dlt_data", "_dlt_pipelines")
    else:
        return {"tool": tool, "skipped": "unknown tool"}
    la0 = loadavg()
    log(f"[{a.db}] {tool}: running")
    c = run_child(argv, env=env)
    res = {"tool": tool, "wall_s": c.wall, "peak_rss_bytes": c.peak_rss, "rc": c.rc,
           "loadavg_start": la0, "loadavg_end": loadavg()}
    if c.rc != 0:
        lines = [ln for ln in (c.stderr + "\n" + c.stdout).strip().splitlines() if ln.strip()]
        res["error"] = "\n".join(lines[-8:]) or f"exit {c.rc}"
        log(f"[{a.db}] {tool}: FAILED\n{res['error']}")
        return res
    if not tool.startswith("strata") and tool != "copy-binary":
        try:
            res["detail"] = json.loads(c.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            pass
    res["rows_per_s"] = expected["rows"] / c.wall
    if fmt is None:
        res["verified"] = "n/a (no output)"
        log(f"[{a.db}] {tool}: {c.wall:.2f}s, {res['rows_per_s']:,.0f} rows/s, peak RSS {c.peak_rss / 2**20:.0f} MiB")
        return res
    if tool.startswith("dlt"):
        # dlt writes its table under <bucket>/<dataset>/<table>.
        found = [p for p in (out_dir / "lake").rglob(short) if p.is_dir()]
        out_dir = found[0] if found else out_dir
    res["output_bytes"] = dir_bytes(out_dir, skip)
    try:
        # In a subprocess, so that reading the output does not raise this driver's peak RSS.
        r = subprocess.run([sys.executable, __file__, "checksum", str(out_dir), fmt, key, amount],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError((r.stderr.strip().splitlines() or ["checksum failed"])[-1])
        got = json.loads(r.stdout)
        res["checksum"] = got
        res["verified"] = verify(got, expected)
    except Exception as e:  # a broken output is a result, not a crash of the benchmark
        res["verified"] = f"could not read the output: {e}"
    log(f"[{a.db}] {tool}: {c.wall:.2f}s, {expected['rows'] / c.wall:,.0f} rows/s, "
        f"peak RSS {c.peak_rss / 2**20:.0f} MiB, output {res['output_bytes'] / 2**20:.0f} MiB, "
        f"{res['verified']}")
    return res


def sling_binary() -> str | None:
    """SLING_BINARY, else the binary shipped in the PyPI package sling-linux-amd64. (The PyPI
    wrapper `sling` downloads a binary of its own version at first run, which fails offline.)"""
    if os.environ.get("SLING_BINARY") and os.access(os.environ["SLING_BINARY"], os.X_OK):
        return os.environ["SLING_BINARY"]
    try:
        import sling_linux_amd64

        b = os.path.join(sling_linux_amd64.__path__[0], "bin", "sling-linux-amd64")
        return b if os.access(b, os.X_OK) else None
    except ImportError:
        return None


def cmd_run(a) -> None:
    expected = json.loads(Path(a.expected).read_text())
    tools = [t for t in a.tools.split(",") if t]
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    for r in range(a.rounds):
        order = tools if r % 2 == 0 else list(reversed(tools))
        for t in order:
            runs[t].append(measure(a, t, expected))
    results = []
    for t in tools:
        ok = [x for x in runs[t] if "wall_s" in x and x.get("rc") == 0]
        best = min(ok, key=lambda x: x["wall_s"]) if ok else runs[t][-1]
        best = dict(best)
        best["all_wall_s"] = [x.get("wall_s") for x in runs[t]]
        results.append(best)
    Path(a.out).write_text(json.dumps({"db": a.db, "expected": expected, "results": results}, indent=1))


# --- report -----------------------------------------------------------------------------------


def fmt_mib(b) -> str:
    return "" if b is None else f"{b / 2**20:,.0f}"


def targets(res: list[dict], rows: int) -> list[str]:
    """The issue's targets for Strata's default run: rows/s, time vs ConnectorX and vs the
    binary COPY ceiling, peak RSS."""
    ok = {r["tool"]: r for r in res if r.get("rc") == 0 and "wall_s" in r}
    s = ok.get("strata")
    if not s:
        return []
    parts = [f"Strata (`strata`) {s['wall_s']:.2f} s = **{rows / s['wall_s']:,.0f} rows/s** (target ≥ 900,000)"]
    cx = ok.get("connectorx")
    if cx:
        parts.append(f"Strata ÷ ConnectorX time **{s['wall_s'] / cx['wall_s']:.2f}** (target ≤ 0.6)")
    cp = ok.get("copy-binary")
    if cp:
        parts.append(f"Strata ÷ binary COPY ceiling ({cp['wall_s']:.2f} s) **{s['wall_s'] / cp['wall_s']:.2f}** "
                     "(target ≤ 1.3)")
    parts.append(f"Strata peak RSS **{s['peak_rss_bytes'] / 1e6:,.0f} MB** (target ≤ 300 MB)")
    return ["", "Targets: " + "; ".join(parts) + "."]


def report(results_dir: Path) -> str:
    machine = json.loads((results_dir / "machine.json").read_text())
    lines = [f"# Ingestion benchmark, {machine['date']}", ""]
    lines.append(f"Machine: {machine['nproc']} cores ({machine['cpu']}), {machine['mem']} RAM, "
                 f"kernel {machine['kernel']}. Versions: "
                 + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()) + ".")
    files = sorted(results_dir.glob("postgres*.json")) + sorted(results_dir.glob("mysql*.json"))
    for f in files:
        if f.name.endswith("-table.json"):
            continue
        data = json.loads(f.read_text())
        db = data["db"]
        exp = data["expected"]
        res = data["results"]
        cols = f", {exp['columns']} columns" if exp.get("columns") else ""
        lines += ["", f"## {'PostgreSQL' if db == 'postgres' else 'MariaDB'}: {exp['table']}, "
                      f"{exp['rows']:,} rows{cols} ({exp['table_bytes'] / 2**20:,.0f} MiB heap)", ""]
        base = next((r for r in res if r["tool"] == "strata" and r.get("rc") == 0), None)
        base1 = next((r for r in res if r["tool"] == "strata-1" and r.get("rc") == 0), None)
        lines.append("| tool | wall s | rows/s | peak RSS MiB | output MiB | tool time / Strata | "
                     "tool RSS / Strata | vs Strata 1 conn | output check | load avg |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for r in res:
            if "skipped" in r:
                lines.append(f"| {r['tool']} | skipped: {r['skipped']} |||||||||")
                continue
            if r.get("rc") != 0:
                err = r.get("error", "").splitlines()[-1:] or ["failed"]
                lines.append(f"| {r['tool']} | failed: {err[0][:120]} |||||||||")
                continue
            ratio = f"{r['wall_s'] / base['wall_s']:.2f}" if base else ""
            rss = f"{r['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}" if base else ""
            ratio1 = f"{r['wall_s'] / base1['wall_s']:.2f}" if base1 else ""
            lines.append(
                f"| {r['tool']} | {r['wall_s']:.2f} | {r['rows_per_s']:,.0f} | {fmt_mib(r['peak_rss_bytes'])} "
                f"| {fmt_mib(r.get('output_bytes'))} | {ratio} | {rss} | {ratio1} | {r.get('verified', '')} "
                f"| {r['loadavg_start']:.1f}→{r['loadavg_end']:.1f} |"
            )
        lines += targets(res, exp["rows"])
    lines += ["", "Ratios above 1 mean the tool took longer (or more memory) than Strata's default "
                  "(`strata`). Walls are the best of the runs; every run's wall is in the JSON. "
                  "`copy-binary` is the ceiling: psql draining the table's binary COPY to /dev/null."]
    text = "\n".join(lines) + "\n"
    (results_dir / "report.md").write_text(text)
    return text


def cmd_checksum(a) -> None:
    print(json.dumps(checksum(Path(a.path), a.fmt, a.key, a.amount)))


def cmd_report(a) -> None:
    print(report(Path(a.results)))


def cmd_machine(a) -> None:
    import platform
    import importlib.metadata as m

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()[1].split()[1]
    versions = {"strata": subprocess.run([a.bin, "--version"], capture_output=True, text=True).stdout.strip()}
    for pkg in ("connectorx", "dlt", "polars", "pyarrow", "deltalake", "adbc-driver-postgresql",
                "sling-linux-amd64", "tpchgen-cli"):
        try:
            versions[pkg] = m.version(pkg)
        except m.PackageNotFoundError:
            pass
    if a.duckdb_path:
        r = subprocess.run([sys.executable, "-c", "import duckdb; print(duckdb.__version__)"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": a.duckdb_path})
        versions["duckdb (postgres_scanner)"] = r.stdout.strip()
    Path(a.out).write_text(json.dumps({
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu, "nproc": os.cpu_count(), "mem": mem, "kernel": platform.release(),
        "versions": versions,
    }, indent=1))


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--pg")
    g.add_argument("--mysql")
    g.add_argument("--rows", type=int, default=0)
    g.add_argument("--dataset", choices=sorted(DATASETS), default="orders")
    g.add_argument("--parquet", help="lineitem: the TPC-H lineitem Parquet file to load")
    g.add_argument("--out", required=True)
    g.set_defaults(fn=cmd_gen)
    r = sub.add_parser("run")
    r.add_argument("--bin", required=True)
    r.add_argument("--db", choices=["postgres", "mysql"], required=True)
    r.add_argument("--uri", required=True)
    r.add_argument("--tools", required=True)
    r.add_argument("--expected", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--rounds", type=int, default=1)
    r.add_argument("--duckdb-path", default="")
    r.add_argument("--out", required=True)
    r.set_defaults(fn=cmd_run)
    m = sub.add_parser("machine")
    m.add_argument("--bin", required=True)
    m.add_argument("--duckdb-path", default="")
    m.add_argument("--out", required=True)
    m.set_defaults(fn=cmd_machine)
    ck = sub.add_parser("checksum")
    for k in ("path", "fmt", "key", "amount"):
        ck.add_argument(k)
    ck.set_defaults(fn=cmd_checksum)
    rep = sub.add_parser("report")
    rep.add_argument("results")
    rep.set_defaults(fn=cmd_report)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
