#!/usr/bin/env python3
"""Runs the TPC-H queries with a peer engine over Parquet files and prints JSON timings.

Engines:
  duckdb              DuckDB (Python `duckdb`), default settings, views over read_parquet().
  datafusion          raw DataFusion (Python `datafusion`) with the settings Strata uses:
                      target_partitions = max(4, cores), batch_size 8192, view types on,
                      hash-join IN-list pushdown off, and (--memory-limit) a fair spill
                      pool the size of the project's engine.memory_limit.
  datafusion-default  raw DataFusion with its own defaults (target_partitions = cores).

Each query runs --runs times in one process (tables registered once); the best time is the
figure of merit, all times are kept. Peak RSS is the process's ru_maxrss (includes Python).

  peers.py --engine duckdb --data ~/.cache/strata-bench/tpch-sf1 --runs 3 --out duckdb.json
  peers.py --engine datafusion --data DIR --layout lake   # DIR/<table>/*.parquet (Delta data files)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TABLES, load_queries, loadavg, summarize  # noqa: E402


def table_paths(data: Path, layout: str) -> dict[str, str]:
    if layout == "flat":
        return {t: str(data / f"{t}.parquet") for t in TABLES}
    # "lake": one directory of Parquet files per table.
    return {t: str(data / t) for t in TABLES}


class DuckDB:
    name = "duckdb"

    def __init__(self, paths: dict[str, str], threads: int | None):
        import duckdb

        self.version = duckdb.__version__
        self.con = duckdb.connect()
        if threads:
            self.con.execute(f"set threads = {threads}")
        self.settings = {"threads": self.con.execute("select current_setting('threads')").fetchone()[0]}
        for t, p in paths.items():
            src = p if p.endswith(".parquet") else f"{p}/*.parquet"
            self.con.execute(f"create view {t} as select * from read_parquet('{src}')")

    def run(self, sql: str) -> list:
        return self.con.execute(sql).fetchall()


class DataFusion:
    def __init__(
        self,
        paths: dict[str, str],
        strata_settings: bool,
        target_partitions: int | None,
        memory_limit: int | None,
        extra: list[str] | None = None,
    ):
        import datafusion
        from datafusion import RuntimeEnvBuilder, SessionConfig, SessionContext

        self.version = datafusion.__version__
        self.name = "datafusion" if strata_settings else "datafusion-default"
        cfg = SessionConfig().with_information_schema(True)
        if strata_settings:
            tp = target_partitions or max(4, os.cpu_count() or 2)
            cfg = (
                cfg.with_target_partitions(tp)
                .with_batch_size(8192)
                .set("datafusion.execution.parquet.schema_force_view_types", "true")
                .set("datafusion.optimizer.hash_join_inlist_pushdown_max_size", "0")
                .set("datafusion.optimizer.hash_join_inlist_pushdown_max_distinct_values", "0")
            )
        elif target_partitions:
            cfg = cfg.with_target_partitions(target_partitions)
        for kv in extra or []:
            k, _, v = kv.partition("=")
            cfg = cfg.set(k.strip(), v.strip())
        runtime = None
        if strata_settings and memory_limit:
            # Strata's engine: a fair spill pool of engine.memory_limit bytes.
            runtime = RuntimeEnvBuilder().with_fair_spill_pool(memory_limit)
        self.ctx = SessionContext(cfg, runtime)
        self.settings = {
            "strata_settings": strata_settings,
            "memory_limit": memory_limit if runtime else None,
            "extra": extra or [],
        }
        for t, p in paths.items():
            self.ctx.register_parquet(t, p, file_extension=".parquet")
        try:
            df = self.ctx.sql("select name, value from information_schema.df_settings")
            for r in df.to_pylist():
                if r["name"] in (
                    "datafusion.execution.target_partitions",
                    "datafusion.execution.batch_size",
                ):
                    self.settings[r["name"].rsplit(".", 1)[1]] = r["value"]
        except Exception:  # information_schema off: settings stay as configured
            pass

    def run(self, sql: str) -> list:
        batches = self.ctx.sql(sql).collect()
        rows = []
        for b in batches:
            cols = [c.to_pylist() for c in b.columns]
            rows.extend(list(r) for r in zip(*cols))
        return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True, choices=["duckdb", "datafusion", "datafusion-default"])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--layout", choices=["flat", "lake"], default="flat")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", help="comma-separated queries, e.g. 1,6,q18")
    ap.add_argument("--threads", type=int, help="DuckDB threads (default: DuckDB's own)")
    ap.add_argument("--target-partitions", type=int, help="DataFusion target_partitions override")
    ap.add_argument(
        "--memory-limit",
        type=int,
        help="bytes; with --engine datafusion, a fair spill pool of this size (as Strata's engine.memory_limit)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra DataFusion setting, e.g. datafusion.execution.parquet.pushdown_filters=true",
    )
    ap.add_argument("--label", help="name in the output (default: the engine)")
    ap.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    args = ap.parse_args()

    paths = table_paths(args.data.resolve(), args.layout)
    load_start = loadavg()
    t0 = time.perf_counter()
    if args.engine == "duckdb":
        eng = DuckDB(paths, args.threads)
    else:
        eng = DataFusion(paths, args.engine == "datafusion", args.target_partitions, args.memory_limit, args.set)
    setup_s = time.perf_counter() - t0

    queries = {}
    for q, sql in load_queries(args.only).items():
        entry: dict = {"times": []}
        for i in range(args.runs):
            t = time.perf_counter()
            try:
                rows = eng.run(sql)
            except Exception as e:  # record and go on with the next query
                entry["error"] = f"{type(e).__name__}: {e}"
                entry["traceback"] = traceback.format_exc(limit=3)
                break
            entry["times"].append(time.perf_counter() - t)
            if i == 0:
                entry["summary"] = summarize(rows)
        if entry["times"]:
            entry["best"] = min(entry["times"])
        queries[q] = entry
        status = f"{entry['best']:.3f}s" if "best" in entry else "ERROR " + entry["error"][:200]
        print(f"[{args.label or eng.name}] {q}: {status}", file=sys.stderr, flush=True)

    out = {
        "engine": args.label or eng.name,
        "version": eng.version,
        "settings": eng.settings,
        "data": str(args.data),
        "layout": args.layout,
        "runs": args.runs,
        "setup_s": setup_s,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "queries": queries,
    }
    text = json.dumps(out, indent=1)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
