#!/usr/bin/env python3
"""Drives the `strata` binary for the warehouse benchmark and prints JSON.

  strata_bench.py load     --bin B --project P --data D         load TPC-H Parquet into the lake
  strata_bench.py queries  --bin B --project P --runs N         the 22 queries, two ways (below)
  strata_bench.py startup  --bin B --project P                  `strata sql "select 1"`, idle RSS
  strata_bench.py spill    --bin B --dir D --limit 256MB        sort a table 5x the memory limit
  strata_bench.py lakefiles --project P --out DIR               symlink farm of the lake's live
                                                                Parquet files (for raw DataFusion)

Strata has no in-process timer, so queries are measured two ways:
  per-process  each query in its own `strata sql` process (what a CLI user sees: process start,
               project and lake open, table load, planning, execution, CSV output); best of N.
               `select 1` in the same project is measured too and subtracted (startup-adjusted).
  in-process   all queries in ONE `strata sql -` process reading a script from stdin, each
               followed by a marker statement `select 'bench:qNN:i'`; the time between the
               arrival of consecutive markers on stdout is the query's time (planning, execution,
               output; plus the ~1 ms marker statement). Best of N repetitions, which run
               back to back in the same process as the peers' repetitions do.
Peak RSS of every child comes from wait4(2) (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TABLES, load_queries, loadavg, median, qualify, summarize_csv  # noqa: E402

SCHEMA = "tpch"


class Child:
    """Result of one child process."""

    def __init__(self, rc, wall, maxrss, stdout, stderr, timed_out=False, samples=None):
        self.rc = rc
        self.wall = wall
        self.maxrss = maxrss
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out
        self.samples = samples or {}

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out


def run_child(argv, cwd=None, timeout=None, stdin_text=None, on_chunk=None, watch=None, env=None) -> Child:
    """Runs argv; wall time from just before fork to wait4's return; ru_maxrss from wait4.

    on_chunk(bytes, t) is called with stdout as it arrives (then stdout is not kept);
    watch(pid) -> dict is sampled every 0.2 s while the child runs (max of each key kept)."""
    out_f = tempfile.TemporaryFile()
    err_f = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE if on_chunk else out_f,
        stderr=err_f,
    )
    timed_out = threading.Event()
    done = threading.Event()

    def killer():
        if not done.wait(timeout):
            timed_out.set()
            try:
                p.kill()
            except ProcessLookupError:
                pass

    threads = []
    if timeout:
        threads.append(threading.Thread(target=killer, daemon=True))
    samples: dict = {}
    if watch:

        def sampler():
            while not done.wait(0.2):
                try:
                    for k, v in watch(p.pid).items():
                        samples[k] = max(samples.get(k, 0), v)
                except Exception:
                    pass

        threads.append(threading.Thread(target=sampler, daemon=True))
    if stdin_text is not None:

        def feeder():
            try:
                p.stdin.write(stdin_text.encode())
                p.stdin.close()
            except BrokenPipeError:
                pass

        threads.append(threading.Thread(target=feeder, daemon=True))
    for t in threads:
        t.start()
    if on_chunk:
        fd = p.stdout.fileno()
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            on_chunk(b, time.perf_counter())
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    p.returncode = os.waitstatus_to_exitcode(status)  # keeps Popen from waiting again
    out_f.seek(0)
    err_f.seek(0)
    stdout = out_f.read().decode(errors="replace")
    stderr = err_f.read().decode(errors="replace")
    out_f.close()
    err_f.close()
    return Child(p.returncode, wall, ru.ru_maxrss * 1024, stdout, stderr, timed_out.is_set(), samples)


def strata(bin_: str, project: Path, *args: str) -> list[str]:
    return [bin_, "--project", str(project), *args]


def dump(obj, out: Path | None):
    text = json.dumps(obj, indent=1)
    if out:
        out.write_text(text)
    else:
        print(text)


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def first_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return "\n".join(lines[:6])


# --- load -------------------------------------------------------------------------------------


def cmd_load(a):
    import pyarrow.parquet as pq

    project = a.project.resolve()
    if a.fresh and project.exists():
        shutil.rmtree(project)
    if not (project / "strata.yml").exists():
        c = run_child([a.bin, "--quiet", "init", str(project), "--name", "tpch_bench"])
        if not c.ok:
            sys.exit(f"strata init failed: {c.stderr}")
    res = {"project": str(project), "tables": {}, "loadavg_start": loadavg()}
    total_rows = 0
    total_wall = 0.0
    total_stmt = 0.0
    data = a.data.resolve()
    for t in TABLES:
        path = data / f"{t}.parquet"
        rows = pq.ParquetFile(path).metadata.num_rows
        sql = f"create table {SCHEMA}.{t} as select * from '{path}'"
        c = run_child(strata(a.bin, project, "sql", sql), timeout=a.timeout)
        m = re.search(r"\(([\d.]+)(ms|s|µs)\)", c.stderr)
        stmt_s = None
        if m:
            stmt_s = float(m.group(1)) * {"s": 1, "ms": 1e-3, "µs": 1e-6}[m.group(2)]
        entry = {
            "rows": rows,
            "parquet_bytes": path.stat().st_size,
            "wall_s": c.wall,
            "statement_s": stmt_s,
            "peak_rss_bytes": c.maxrss,
            "ok": c.ok,
        }
        if not c.ok:
            entry["error"] = first_error_line(c.stderr) or f"exit {c.rc}"
        else:
            total_rows += rows
            total_wall += c.wall
            total_stmt += stmt_s or c.wall
        res["tables"][t] = entry
        print(
            f"[load] {t}: {rows} rows in {c.wall:.2f}s"
            + (f" (statement {stmt_s:.2f}s)" if stmt_s else "")
            + ("" if c.ok else f"  FAILED: {entry['error']}"),
            file=sys.stderr,
            flush=True,
        )
    # Row counts as the lake sees them.
    counts = " union all ".join(f"select '{t}' as t, count(*) as n from {SCHEMA}.{t}" for t in TABLES)
    c = run_child(strata(a.bin, project, "sql", counts, "--format", "csv"))
    if c.ok:
        for line in c.stdout.strip().splitlines()[1:]:
            t, n = line.split(",")
            res["tables"][t]["lake_rows"] = int(n)
    res.update(
        total_rows=total_rows,
        total_wall_s=total_wall,
        total_statement_s=total_stmt,
        rows_per_s=total_rows / total_wall if total_wall else None,
        rows_per_s_statement=total_rows / total_stmt if total_stmt else None,
        lake_bytes=dir_bytes(project / ".strata" / "lake"),
        parquet_bytes=sum(e["parquet_bytes"] for e in res["tables"].values()),
        peak_rss_bytes=max(e["peak_rss_bytes"] for e in res["tables"].values()),
    )
    dump(res, a.out)


# --- queries ----------------------------------------------------------------------------------


def cmd_queries(a):
    project = a.project.resolve()
    queries = {q: qualify(sql, SCHEMA) for q, sql in load_queries(a.only).items()}
    res: dict = {"engine": "strata", "runs": a.runs, "loadavg_start": loadavg(), "queries": {}}

    # Startup baseline in this project.
    base = []
    for _ in range(a.baseline_runs):
        c = run_child(strata(a.bin, project, "sql", "select 1", "--format", "csv"))
        if c.ok:
            base.append(c.wall)
    startup = median(base) if base else 0.0
    res["startup_select1_s"] = startup
    res["startup_select1_all_s"] = base
    print(f"[strata] select 1 in this project: median {startup * 1000:.0f} ms", file=sys.stderr, flush=True)

    # 1. Per-process.
    for q, sql in queries.items():
        e: dict = {"process_times": [], "process_peak_rss_bytes": 0}
        for i in range(a.runs):
            c = run_child(strata(a.bin, project, "sql", sql, "--format", "csv"), timeout=a.timeout)
            if not c.ok:
                e["error"] = ("timed out after %ss" % a.timeout) if c.timed_out else first_error_line(c.stderr)
                e["exit_code"] = c.rc
                break
            e["process_times"].append(c.wall)
            e["process_peak_rss_bytes"] = max(e["process_peak_rss_bytes"], c.maxrss)
            if i == 0:
                e["summary"] = summarize_csv(c.stdout)
        if e["process_times"]:
            e["process_best"] = min(e["process_times"])
            e["process_adjusted"] = max(e["process_best"] - startup, 0.0)
        res["queries"][q] = e
        msg = f"{e['process_best']:.3f}s" if "process_best" in e else "ERROR " + e["error"]
        print(f"[strata per-process] {q}: {msg}", file=sys.stderr, flush=True)

    # 2. In-process: the queries that ran, N times each, markers after each statement.
    good = [q for q in queries if "error" not in res["queries"][q]]
    script = ["select 'bench:start' as bench_mark"]
    for q in good:
        for i in range(a.runs):
            script.append(queries[q])
            script.append(f"select 'bench:{q}:{i}' as bench_mark")
    marks: list[tuple[str, float]] = []
    pending = [b""]
    pat = re.compile(rb"^bench:(start|q\d\d:\d+)\r?$", re.M)

    def on_chunk(b: bytes, t: float):
        buf = pending[0] + b
        cut = buf.rfind(b"\n") + 1
        for m in pat.finditer(buf[:cut]):
            marks.append((m.group(1).decode(), t))
        pending[0] = buf[cut:]

    c = run_child(
        strata(a.bin, project, "sql", "-", "--format", "csv"),
        stdin_text=";\n".join(script) + ";\n",
        on_chunk=on_chunk,
        timeout=a.timeout * max(1, len(good)) * a.runs,
    )
    res["inprocess_wall_s"] = c.wall
    res["inprocess_peak_rss_bytes"] = c.maxrss
    if not c.ok:
        res["inprocess_error"] = ("timed out" if c.timed_out else first_error_line(c.stderr)) or f"exit {c.rc}"
    prev = None
    for name, t in marks:
        if name != "start" and prev is not None:
            q, i = name.split(":")
            res["queries"][q].setdefault("inprocess_times", []).append(t - prev)
        prev = t
    for q in good:
        ts = res["queries"][q].get("inprocess_times")
        if ts:
            res["queries"][q]["best"] = min(ts)
            print(f"[strata in-process] {q}: {min(ts):.3f}s", file=sys.stderr, flush=True)
    res["loadavg_end"] = loadavg()
    dump(res, a.out)


# --- startup ----------------------------------------------------------------------------------


def proc_status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def cmd_startup(a):
    res: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty"
        c = run_child([a.bin, "--quiet", "init", str(empty)])
        projects = {"empty_project": empty}
        if a.project:
            projects["tpch_project"] = a.project.resolve()
        for label, proj in projects.items():
            walls, rss = [], []
            for _ in range(a.n):
                c = run_child(strata(a.bin, proj, "sql", "select 1", "--format", "csv"))
                if not c.ok:
                    res[label] = {"error": first_error_line(c.stderr)}
                    break
                walls.append(c.wall)
                rss.append(c.maxrss)
            else:
                res[label] = {
                    "first_s": walls[0],
                    "median_s": median(walls),
                    "min_s": min(walls),
                    "all_s": walls,
                    "peak_rss_bytes_median": median(rss),
                }
                print(
                    f"[startup] {label}: select 1 median {median(walls) * 1000:.0f} ms, "
                    f"first {walls[0] * 1000:.0f} ms, peak RSS {median(rss) / 2**20:.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
        # Idle RSS: an interactive shell, started and left waiting for input.
        proj = projects.get("tpch_project", empty)
        p = subprocess.Popen(
            strata(a.bin, proj, "shell"),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(a.idle_wait)
            if p.poll() is None:
                st = proc_status(p.pid)
                res["idle_shell"] = {"rss_bytes": st.get("VmRSS"), "hwm_bytes": st.get("VmHWM"), "after_s": a.idle_wait}
                print(f"[startup] idle `strata shell`: RSS {st.get('VmRSS', 0) / 2**20:.0f} MB", file=sys.stderr)
            else:
                res["idle_shell"] = {"error": f"shell exited with {p.returncode} on a non-tty stdin"}
        finally:
            if p.poll() is None:
                p.stdin.close()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    dump(res, a.out)


# --- spill ------------------------------------------------------------------------------------


def parse_bytes(s: str) -> int:
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)B?\s*", s, re.I)
    if not m:
        raise ValueError(s)
    return int(float(m.group(1)) * 1024 ** "_KMGT".index(m.group(2).upper() or "_"))


def cmd_spill(a):
    d = a.dir.resolve()
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    limit = parse_bytes(a.limit)
    (d / "strata.yml").write_text(
        f"# Spill benchmark: a sort of a table {a.factor}x the memory limit.\n"
        f"name: spill_bench\nengine:\n  memory_limit: {a.limit}\n  spill_dir: .strata/spill\n"
    )
    payload_len = 100
    # Arrow in memory: id (8) + r (8) + payload as Utf8View (16-byte view + the bytes).
    per_row = 8 + 8 + 16 + payload_len
    rows = a.rows or int(a.factor * limit / per_row)
    res: dict = {"memory_limit": a.limit, "memory_limit_bytes": limit, "rows": rows, "loadavg_start": loadavg()}
    create = (
        "create table bench.big as select value as id, random() as r, "
        f"rpad(concat('row-', cast(value as varchar), '-'), {payload_len}, 'x') as payload "
        f"from generate_series(1, {rows})"
    )
    res["create_sql"] = create
    c = run_child(strata(a.bin, d, "sql", create), timeout=a.timeout)
    res["create"] = {"ok": c.ok, "wall_s": c.wall, "peak_rss_bytes": c.maxrss}
    if not c.ok:
        res["create"]["error"] = first_error_line(c.stderr)
        print(f"[spill] create failed: {res['create']['error']}", file=sys.stderr)
        dump(res, a.out)
        return
    size_sql = "select count(*) as n, sum(octet_length(payload)) as payload_bytes from bench.big"
    c = run_child(strata(a.bin, d, "sql", size_sql, "--format", "csv"))
    n, pb = c.stdout.strip().splitlines()[1].split(",")
    data_bytes = int(n) * (8 + 8) + int(pb)  # the values themselves
    arrow_bytes = data_bytes + int(n) * 16  # as Utf8View batches in memory
    res.update(
        table_rows=int(n),
        table_value_bytes=data_bytes,
        table_arrow_bytes=arrow_bytes,
        table_parquet_bytes=dir_bytes(d / ".strata" / "lake" / "bench" / "big"),
        factor_of_limit=arrow_bytes / limit,
    )
    print(
        f"[spill] table: {int(n)} rows, ~{arrow_bytes / 2**20:.0f} MB in Arrow "
        f"({arrow_bytes / limit:.1f}x the {a.limit} limit)",
        file=sys.stderr,
        flush=True,
    )
    spill_dir = d / ".strata" / "spill"

    def watch(pid):
        return {"spill_bytes": dir_bytes(spill_dir), **{k: v for k, v in proc_status(pid).items() if k == "VmRSS"}}

    target = 2 * limit + 200 * 2**20
    res["target_rss_bytes"] = target
    out_file = d / "sorted.parquet"
    variants = [
        # The headline: an ORDER BY over the whole table, written to a Parquet file.
        (
            "to_parquet",
            strata(a.bin, d, "sql", "select * from bench.big order by r", "--format", "parquet", "--output", str(out_file)),
        ),
        # The same sort streamed out as CSV and thrown away: no Parquet writer buffering.
        ("to_csv_devnull", strata(a.bin, d, "sql", "select * from bench.big order by r", "--format", "csv", "--output", "/dev/null")),
        # The workaround for DataFusion's unbounded spill-merge fan-in (see bench/README.md).
        (
            "to_parquet_fanin4",
            strata(
                a.bin,
                d,
                "sql",
                "set datafusion.runtime.max_spill_merge_fan_in = '4'; select * from bench.big order by r",
                "--format",
                "parquet",
                "--output",
                str(out_file),
            ),
        ),
        # CREATE TABLE AS ... ORDER BY: the lake write path.
        ("ctas", strata(a.bin, d, "sql", "create table bench.sorted as select * from bench.big order by r")),
    ]
    res["sorts"] = {}
    for name, argv in variants:
        c = run_child(argv, timeout=a.timeout, watch=watch)
        e = {
            "argv": argv[3:],
            "ok": c.ok,
            "wall_s": c.wall,
            "peak_rss_bytes": c.maxrss,
            "peak_spill_bytes_sampled": c.samples.get("spill_bytes"),
            "within_target": c.ok and c.maxrss <= target,
        }
        if not c.ok:
            e["error"] = ("timed out" if c.timed_out else first_error_line(c.stderr)) or f"exit {c.rc}"
        elif name.startswith("to_parquet"):
            e.update(check_sorted([out_file]))
            out_file.unlink(missing_ok=True)
        elif name == "ctas":
            e.update(check_sorted(live_files(d / ".strata" / "lake" / "bench" / "sorted")))
        res["sorts"][name] = e
        print(
            f"[spill] {name}: {'ok' if c.ok else 'FAILED ' + e.get('error', '')} in {c.wall:.1f}s, "
            f"peak RSS {c.maxrss / 2**20:.0f} MB (target <= {target / 2**20:.0f} MB), "
            f"spill seen {(c.samples.get('spill_bytes') or 0) / 2**20:.0f} MB"
            + (f", rows {e.get('sorted_rows')}, sorted: {e.get('sorted')}" if "sorted" in e else ""),
            file=sys.stderr,
            flush=True,
        )
    res["sort"] = res["sorts"]["to_parquet"]
    if not a.keep:
        shutil.rmtree(d, ignore_errors=True)
    dump(res, a.out)


def check_sorted(files: list[Path]) -> dict:
    """Row count and whether column r is ascending through the files in order."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows = 0
    inversions = 0
    last = None
    for f in files:
        pf = pq.ParquetFile(f)
        for i in range(pf.metadata.num_row_groups):
            r = pf.read_row_group(i, columns=["r"]).column("r").combine_chunks()
            rows += len(r)
            if len(r) == 0:
                continue
            inversions += pc.sum(pc.less(r[1:], r[:-1])).as_py() or 0
            if last is not None and r[0].as_py() < last:
                inversions += 1
            last = r[-1].as_py()
    return {"sorted_rows": rows, "sorted": inversions == 0, "inversions": inversions}


# --- lake files ---------------------------------------------------------------------------------


def live_files(table_dir: Path) -> list[Path]:
    """Data files of a Delta table's latest version, from its JSON commits."""
    live: dict[str, bool] = {}
    log = table_dir / "_delta_log"
    for f in sorted(log.glob("*.json")):
        for line in f.read_text().splitlines():
            if not line.strip():
                continue
            act = json.loads(line)
            if "add" in act:
                live[act["add"]["path"]] = True
            elif "remove" in act:
                live.pop(act["remove"]["path"], None)
    from urllib.parse import unquote

    return [table_dir / unquote(p) for p in live]


def cmd_lakefiles(a):
    lake = a.project.resolve() / ".strata" / "lake" / SCHEMA
    out = a.out_dir.resolve()
    if out.exists():
        shutil.rmtree(out)
    res = {}
    for t in TABLES:
        files = live_files(lake / t)
        (out / t).mkdir(parents=True)
        for i, f in enumerate(files):
            os.symlink(f, out / t / f"{i:05d}.parquet")
        res[t] = {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("load")
    p.add_argument("--bin", required=True)
    p.add_argument("--project", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--fresh", action="store_true", help="delete the project first")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", type=Path)
    p.set_defaults(fn=cmd_load)

    p = sub.add_parser("queries")
    p.add_argument("--bin", required=True)
    p.add_argument("--project", required=True, type=Path)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--baseline-runs", type=int, default=5)
    p.add_argument("--only")
    p.add_argument("--timeout", type=float, default=600, help="seconds per query process")
    p.add_argument("--out", type=Path)
    p.set_defaults(fn=cmd_queries)

    p = sub.add_parser("startup")
    p.add_argument("--bin", required=True)
    p.add_argument("--project", type=Path, help="also measure in this (loaded) project")
    p.add_argument("-n", type=int, default=10)
    p.add_argument("--idle-wait", type=float, default=2.0)
    p.add_argument("--out", type=Path)
    p.set_defaults(fn=cmd_startup)

    p = sub.add_parser("spill")
    p.add_argument("--bin", required=True)
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--limit", default="256MB")
    p.add_argument("--factor", type=float, default=5.0)
    p.add_argument("--rows", type=int, help="override the computed row count")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--keep", action="store_true", help="keep the spill project")
    p.add_argument("--out", type=Path)
    p.set_defaults(fn=cmd_spill)

    p = sub.add_parser("lakefiles")
    p.add_argument("--project", required=True, type=Path)
    p.add_argument("--out-dir", required=True, type=Path)
    p.set_defaults(fn=cmd_lakefiles)

    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
