#!/usr/bin/env python3
"""Ingestion benchmark driver: Strata and peer tools extract the same database table to files.

  ingest_bench.py gen    --pg URL --rows N                 create/reuse bench_ingest.orders
  ingest_bench.py gen    --mysql URL --rows N              the same table in MariaDB/MySQL
  ingest_bench.py run    --bin B --db pg|mysql --uri URL --tools a,b --work DIR --out JSON
  ingest_bench.py report RESULTS                           table + ratios, RESULTS/report.md

Every tool runs as its own child process, timed from fork to wait4's return. Peak RSS is the
larger of wait4's ru_maxrss and the peak of the process tree's summed RSS sampled every
0.1 s (a tool that forks workers is counted whole). Each output is read back afterwards
(outside the timing) and checked against the source: row count, sum(id), sum(amount).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
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


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loadavg() -> float:
    return os.getloadavg()[0]


# --- generation -------------------------------------------------------------------------------


def expected_sql(table: str) -> str:
    return f"SELECT count(*), coalesce(sum(id), 0), coalesce(sum(amount), 0) FROM {table}"


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
        "db": "postgres", "table": f"{SCHEMA}.{TABLE}", "rows": count, "sum_id": int(sum_id),
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
        "db": "mysql", "table": f"{SCHEMA}.{TABLE}", "rows": count, "sum_id": int(sum_id),
        "sum_amount": float(sum_amount), "table_bytes": heap, "total_bytes": total,
        "generated": n != rows, "gen_s": time.perf_counter() - t0,
    }


def cmd_gen(a) -> None:
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
    return Child(p.returncode, wall, max(ru.ru_maxrss * 1024, peak[0]),
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


def checksum(path: Path, fmt: str) -> dict:
    """count, sum(id), sum(amount) of a Delta table or a folder of Parquet files."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if fmt == "delta":
        from deltalake import DeltaTable

        dataset = DeltaTable(str(path)).to_pyarrow_dataset()
    else:
        files = sorted(str(p) for p in Path(path).rglob("*.parquet"))
        dataset = ds.dataset(files, format="parquet")
    count, sum_id, sum_amount = 0, 0, 0.0
    for batch in dataset.to_batches(columns=["id", "amount"]):
        count += batch.num_rows
        sum_id += int(pc.sum(batch.column(0)).as_py() or 0)
        s = pc.sum(batch.column(1).cast("float64")).as_py()
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


def strata_project(bin_: str, dir_: Path, db: str, uri: str, table: str, parallel: str | None) -> None:
    if dir_.exists():
        shutil.rmtree(dir_)
    c = run_child([bin_, "--quiet", "init", str(dir_), "--name", "ingest_bench"])
    if c.rc != 0:
        raise RuntimeError(f"strata init failed: {c.stderr.strip()}")
    src = f"type: {db}\nurl: {uri}\nstreams:\n  - name: orders\n    table: {table}\n"
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
    py = sys.executable
    env = dict(os.environ)
    fmt, out_dir, skip = "parquet", work / "out", ()
    if tool.startswith("strata"):
        # strata (auto parallelism), strata-1 / strata-4 (parallel_reads fixed)
        parallel = tool.split("-", 1)[1] if "-" in tool else None
        strata_project(a.bin, work / "project", a.db, a.uri, table, parallel)
        argv = [a.bin, "--project", str(work / "project"), "ingest", "bench"]
        fmt, out_dir = "delta", work / "project" / ".strata" / "lake" / "raw" / "bench_orders"
    elif tool.startswith("connectorx"):
        parts = tool.split("-", 1)[1] if "-" in tool else "1"
        argv = [py, str(HERE / "peers.py"), "connectorx", "--uri", a.uri, "--table", table,
                "--out", str(out_dir), "--partitions", parts]
    elif tool in ("polars", "duckdb"):
        argv = [py, str(HERE / "peers.py"), tool, "--uri", a.uri, "--table", table, "--out", str(out_dir)]
        if tool == "duckdb":
            if not a.duckdb_path:
                return {"tool": tool, "skipped": "the DuckDB postgres_scanner extension package is not installed"}
            env["PYTHONPATH"] = a.duckdb_path
    elif tool.startswith("dlt"):
        f = "parquet" if tool == "dlt-parquet" else "delta"
        argv = [py, str(HERE / "peers.py"), "dlt", "--uri", a.uri, "--table", table, "--out", str(out_dir),
                "--format", f]
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
        lines = [ln for ln in c.stderr.strip().splitlines() if ln.strip()]
        res["error"] = "\n".join(lines[-8:]) or f"exit {c.rc}"
        log(f"[{a.db}] {tool}: FAILED\n{res['error']}")
        return res
    if not tool.startswith("strata"):
        try:
            res["detail"] = json.loads(c.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            pass
    if tool.startswith("dlt"):
        # dlt writes its table under <bucket>/<dataset>/<table>.
        found = [p for p in (out_dir / "lake").rglob(TABLE) if p.is_dir()]
        out_dir = found[0] if found else out_dir
    res["output_bytes"] = dir_bytes(out_dir, skip)
    try:
        got = checksum(out_dir, fmt)
        res["checksum"] = got
        res["verified"] = verify(got, expected)
    except Exception as e:  # a broken output is a result, not a crash of the benchmark
        res["verified"] = f"could not read the output: {e}"
    res["rows_per_s"] = expected["rows"] / c.wall
    log(f"[{a.db}] {tool}: {c.wall:.2f}s, {expected['rows'] / c.wall:,.0f} rows/s, "
        f"peak RSS {c.peak_rss / 2**20:.0f} MiB, output {res['output_bytes'] / 2**20:.0f} MiB, "
        f"{res['verified']}")
    return res


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


def report(results_dir: Path) -> str:
    machine = json.loads((results_dir / "machine.json").read_text())
    lines = [f"# Ingestion benchmark, {machine['date']}", ""]
    lines.append(f"Machine: {machine['nproc']} cores ({machine['cpu']}), {machine['mem']} RAM, "
                 f"kernel {machine['kernel']}. Versions: "
                 + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()) + ".")
    for db in ("postgres", "mysql"):
        f = results_dir / f"{db}.json"
        if not f.exists():
            continue
        data = json.loads(f.read_text())
        exp = data["expected"]
        res = data["results"]
        lines += ["", f"## {'PostgreSQL' if db == 'postgres' else 'MariaDB'}: {exp['table']}, "
                      f"{exp['rows']:,} rows ({exp['table_bytes'] / 2**20:,.0f} MiB heap)", ""]
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
    lines += ["", "Ratios above 1 mean the tool took longer (or more memory) than Strata's default "
                  "(`strata`). Walls are the best of the runs; every run's wall is in the JSON."]
    text = "\n".join(lines) + "\n"
    (results_dir / "report.md").write_text(text)
    return text


def cmd_report(a) -> None:
    print(report(Path(a.results)))


def cmd_machine(a) -> None:
    import platform
    import importlib.metadata as m

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()[1].split()[1]
    versions = {"strata": subprocess.run([a.bin, "--version"], capture_output=True, text=True).stdout.strip()}
    for pkg in ("connectorx", "dlt", "polars", "pyarrow", "deltalake"):
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
    g.add_argument("--rows", type=int, required=True)
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
    rep = sub.add_parser("report")
    rep.add_argument("results")
    rep.set_defaults(fn=cmd_report)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
