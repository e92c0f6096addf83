#!/usr/bin/env python3
"""Drives the modeling benchmark: Strata vs dbt-core + dbt-duckdb on generated projects.

  models_bench.py machine --bin B --out F
  models_bench.py compile --bin B --work W --sizes 500,2000,10000 --out F
        per size: a generated project (gen_project.py) written twice, one copy per tool.
        Strata: `strata compile` right after the project is written ("cold": new process,
        files just written so in the page cache; dropping caches needs root on the whole
        machine), then RUNS more times ("warm"); `strata ls --select +<mart>` and
        `strata ls --select tag:finance` RUNS times. dbt: `dbt parse --no-partial-parse`,
        `dbt compile --no-partial-parse` (full parse + compile: what `strata compile`
        does), both DBT_RUNS times unless the first run took more than --dbt-repeat-limit
        seconds; then `dbt compile` with the partial-parse file of the run before (dbt's
        best case). The manifests are compared (models, tests, compiled files).
  models_bench.py run     --bin B --work W --models 500 --rows R --out F
        the generated project with every model a table, over generated source tables (the
        same Parquet files loaded into Strata's lake and into a DuckDB file): `strata build`
        vs `dbt build` (seeds, models, tests), --runs times each, wall time; then the marts
        are fingerprinted in both warehouses and compared.
  models_bench.py chain   --bin B --work W --depth 200 --rows R --out F
        a chain of views, each `select *, c_{i-1} + 1 as c_i from` the previous: build, then
        `select count(*), sum(c_200) from` the last view (a new process each time).
  models_bench.py tpch    --bin B --work W --data D --out F
        a ~40-model marts project over TPC-H (staging views, intermediate and mart tables):
        `strata build` vs `dbt build`, then the marts compared.
  models_bench.py report  RESULTS

Every child is timed from fork to wait4's return; peak RSS is wait4's ru_maxrss. dbt runs
with DO_NOT_TRACK=1 (no usage statistics: the machine has no network).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GEN = HERE / "gen_project.py"
PY = sys.executable
DBT = str(Path(sys.executable).parent / "dbt")
DBT_ENV = {
    **os.environ,
    "DO_NOT_TRACK": "1",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "DBT_USE_COLORS": "false",
    "DBT_PRINTER_WIDTH": "80",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class Child:
    def __init__(self, argv, rc, wall, maxrss_kb, stdout, stderr):
        self.argv, self.rc, self.wall, self.maxrss_kb = argv, rc, wall, maxrss_kb
        self.stdout, self.stderr = stdout, stderr

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def brief(self) -> dict:
        return {"rc": self.rc, "wall": round(self.wall, 4), "rss_mb": round(self.maxrss_kb / 1024, 1),
                "load": loadavg()}

    def error(self) -> str:
        text = (self.stderr + "\n" + self.stdout).strip()
        lines = [l for l in text.splitlines() if l.strip()]
        errs = [l for l in lines if re.search(r"error|Error|ERROR|fail|FAIL", l)]
        return "\n".join((errs or lines)[-12:])[:3000] or f"exit code {self.rc}, no output"


def run(argv, cwd=None, env=None, stdin_text=None, timeout=3600) -> Child:
    out_f, err_f = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out_f, stderr=err_f,
                         stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL)
    if stdin_text is not None:
        p.stdin.write(stdin_text.encode())
        p.stdin.close()
    deadline = t0 + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.002)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    out_f.seek(0)
    err_f.seek(0)
    return Child(argv, p.returncode, wall, ru.ru_maxrss, out_f.read().decode(errors="replace"),
                 err_f.read().decode(errors="replace"))


def gen(*args) -> dict:
    c = run([PY, str(GEN), *map(str, args)])
    if not c.ok:
        raise SystemExit(f"gen_project.py {' '.join(map(str, args))} failed:\n{c.stderr}")
    return json.loads(c.stdout)


def dbt(cmd: list[str], proj: Path, timeout=3600) -> Child:
    return run([DBT, *cmd, "--profiles-dir", str(proj), "--project-dir", str(proj)],
               cwd=proj, env=DBT_ENV, timeout=timeout)


def strata(bin_: str, args: list[str], proj: Path, stdin_text=None, timeout=3600, env=None) -> Child:
    return run([bin_, *args], cwd=proj, stdin_text=stdin_text, timeout=timeout, env=env)


def best(xs):
    xs = [x for x in xs if x is not None]
    return min(xs) if xs else None


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def manifest_counts(proj: Path) -> dict:
    m = json.loads((proj / "target" / "manifest.json").read_text())
    counts: dict[str, int] = {}
    for n in m.get("nodes", {}).values():
        counts[n["resource_type"]] = counts.get(n["resource_type"], 0) + 1
    counts["source"] = len(m.get("sources", {}))
    counts["compiled_files"] = sum(1 for _ in (proj / "target" / "compiled").rglob("*.sql")) \
        if (proj / "target" / "compiled").is_dir() else 0
    return counts


# --- compile ---------------------------------------------------------------------------------------


def previous(out: str):
    """The results a previous run with other --tools left in the same file (merged)."""
    try:
        return json.loads(Path(out).read_text())
    except (OSError, ValueError):
        return None


def cmd_compile(a) -> None:
    tools = set(a.tools.split(","))
    old = {r["models"]: r for r in previous(a.out) or []}
    results = []
    for n in [int(s) for s in a.sizes.split(",")]:
        res: dict = old.get(n, {})
        res["models"] = n
        if "strata" in tools:
            for k in [k for k in res if k.startswith("strata")]:
                del res[k]
        if "dbt" in tools:
            for k in [k for k in res if k.startswith("dbt")]:
                del res[k]
        base = Path(a.work) / f"compile-{n}"
        sp, dp = base / "strata", base / "dbt"
        if "strata" in tools:
            # The project is written, then compiled at once ("cold").
            log(f"{n} models: generating the Strata copy")
            res["project"] = gen("project", sp, "--models", n, "--seed", a.seed)
            c = strata(a.bin, ["compile"], sp)
            res["strata_compile_cold"] = c.brief()
            if not c.ok:
                res["strata_error"] = c.error()
                log(f"strata compile failed: {res['strata_error']}")
            else:
                warm = [strata(a.bin, ["compile"], sp) for _ in range(a.runs)]
                res["strata_compile_warm"] = [w.brief() for w in warm]
                res["strata_counts"] = manifest_counts(sp)
                mart = res["project"]["a_mart"]
                for key, sel in (("ls_mart", f"+{mart}"), ("ls_tag", "tag:finance")):
                    ls = [strata(a.bin, ["ls", "--select", sel], sp) for _ in range(a.runs)]
                    res[f"strata_{key}"] = {"select": sel, "runs": [x.brief() for x in ls],
                                            "nodes": len(ls[-1].stdout.split()) if ls[-1].ok else None}
                    if not ls[-1].ok:
                        res[f"strata_{key}"]["error"] = ls[-1].error()
                log(f"strata compile: cold {c.wall:.3f}s, warm best {best(w.wall for w in warm):.3f}s; "
                    f"ls {res['strata_ls_mart']['runs'][-1]['wall']:.3f}s")
        if "dbt" in tools:
            log(f"{n} models: generating the dbt copy")
            res["project"] = gen("project", dp, "--models", n, "--seed", a.seed)
            for key, cmd in (("dbt_parse", ["parse", "--no-partial-parse"]),
                             ("dbt_compile", ["compile", "--no-partial-parse"])):
                runs = []
                for i in range(a.dbt_runs):
                    c = dbt(cmd, dp, timeout=a.dbt_timeout)
                    runs.append(c.brief())
                    log(f"dbt {' '.join(cmd)}: {c.wall:.1f}s rc={c.rc}")
                    if not c.ok:
                        res[f"{key}_error"] = c.error()
                        break
                    if c.wall > a.dbt_repeat_limit:
                        res[f"{key}_note"] = f"run once: the first run took more than {a.dbt_repeat_limit:.0f} s"
                        break
                res[key] = runs
            try:
                res["dbt_counts"] = manifest_counts(dp)
            except Exception as e:  # noqa: BLE001
                res["dbt_counts"] = {"error": str(e)}
            # dbt compile again, with the partial-parse file of the run before (dbt's warm case).
            c = dbt(["compile"], dp, timeout=a.dbt_timeout)
            res["dbt_compile_partial"] = c.brief()
            log(f"dbt compile (partial parse): {c.wall:.1f}s rc={c.rc}")
        results.append(res)
        Path(a.out).write_text(json.dumps(results + [r for m, r in old.items() if m not in
                                                     {x["models"] for x in results}], indent=1))
        if not a.keep:
            shutil.rmtree(sp if tools == {"strata"} else dp if tools == {"dbt"} else base, ignore_errors=True)


# --- run / build --------------------------------------------------------------------------------


def ensure_data(work: Path, sources: int, rows: int) -> Path:
    d = work / f"data-{sources}x{rows}"
    if not (d / ".complete").exists():
        log(f"generating {sources} source tables of {rows} rows (Parquet) into {d}")
        shutil.rmtree(d, ignore_errors=True)
        gen("data", d, "--sources", sources, "--rows", rows)
        (d / ".complete").touch()
    return d


def load_strata(bin_: str, proj: Path, files: dict[str, Path]) -> dict:
    """One `strata sql -` process: `create schema raw` and one CTAS per Parquet file."""
    script = "create schema if not exists raw;\n" + "".join(
        f"create table raw.{t} as select * from '{f}';\n" for t, f in files.items())
    c = strata(bin_, ["sql", "-", "--quiet"], proj, stdin_text=script)
    if not c.ok:
        raise RuntimeError(f"loading the lake failed: {c.error()}")
    return c.brief()


def load_duckdb(db: Path, files: dict[str, Path]) -> dict:
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute("create schema if not exists raw")
    for t, f in files.items():
        con.execute(f"create or replace table raw.{t} as select * from read_parquet('{f}')")
    con.close()
    return {"wall": round(time.perf_counter() - t0, 3)}


def fingerprint_sql(relations: dict[str, list[str]]) -> str:
    """One row per relation: its name, row count and the sums of up to 3 numeric columns."""
    parts = []
    for r, cols in relations.items():
        sums = [f"cast(sum({c}) as double)" for c in cols[:3]]
        sums += ["cast(null as double)"] * (3 - len(sums))
        aggs = ", ".join(f"{x} as s{i}" for i, x in enumerate(sums))
        parts.append(f"select '{r}' as rel, count(*) as n, {aggs} from {r}")
    return "\nunion all\n".join(parts) + "\norder by rel"


def strata_query(bin_: str, proj: Path, sql: str) -> tuple[list[dict], Child]:
    c = strata(bin_, ["sql", sql, "--format", "json"], proj)
    if not c.ok:
        return [], c
    try:
        rows = json.loads(c.stdout)
    except json.JSONDecodeError:
        rows = [json.loads(l) for l in c.stdout.splitlines() if l.strip()]
    return rows, c


def duckdb_query(db: Path, sql: str) -> list[dict]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
    con.close()
    return rows


def compare(a_rows: list[dict], b_rows: list[dict]) -> dict:
    """Fingerprints (rel, n, sums) of Strata and DuckDB; numbers equal within 1e-6 relative."""
    if not a_rows or not b_rows:
        return {"verdict": "not compared", "strata_rows": len(a_rows), "duckdb_rows": len(b_rows)}
    bad = []
    bmap = {r["rel"]: r for r in b_rows}
    for r in a_rows:
        o = bmap.get(r["rel"])
        if o is None:
            bad.append(f"{r['rel']}: missing in DuckDB")
            continue
        for k, v in r.items():
            if k == "rel":
                continue
            w_ = o.get(k)
            if v is None or w_ is None:
                if v != w_:
                    bad.append(f"{r['rel']}.{k}: {v} vs {w_}")
                continue
            v, w_ = float(v), float(w_)
            if abs(v - w_) > 1e-6 * max(1.0, abs(v), abs(w_)):
                bad.append(f"{r['rel']}.{k}: strata {v} vs duckdb {w_}")
    return {"verdict": "agree" if not bad else f"{len(bad)} differences", "relations": len(a_rows),
            "differences": bad[:20]}


def build_both(a, sp: Path, dp: Path, label: str, res: dict) -> None:
    tools = set(a.tools.split(","))
    s_runs, d_runs = [], []
    for i in range(a.runs):
        order = ["strata", "dbt"] if i % 2 == 0 else ["dbt", "strata"]
        for tool in [t for t in order if t in tools]:
            if tool == "strata":
                c = strata(a.bin, ["build"], sp, timeout=a.timeout)
                b = c.brief()
                b["summary"] = next((l.strip() for l in c.stdout.splitlines() if l.startswith("Done.")), None)
                if not c.ok:
                    b["error"] = c.error()
                s_runs.append(b)
                log(f"{label}: strata build {c.wall:.2f}s rc={c.rc} {b['summary']}")
            else:
                c = dbt(["build"], dp, timeout=a.timeout)
                b = c.brief()
                b["summary"] = next((l.split("  ", 1)[-1].strip() for l in c.stdout.splitlines()
                                     if "Done. PASS=" in l), None)
                if not c.ok:
                    b["error"] = c.error()
                d_runs.append(b)
                log(f"{label}: dbt build {c.wall:.2f}s rc={c.rc} {b['summary']}")
    if "strata" in tools:
        res["strata_build"] = s_runs
    if "dbt" in tools:
        res["dbt_build"] = d_runs


def setup_pair(a, sp: Path, dp: Path, write, files: dict[str, Path], res: dict) -> None:
    """Writes the project (write(dir) -> info) and loads the source tables, for each tool run."""
    tools = set(a.tools.split(","))
    if "strata" in tools:
        res["project"] = write(sp)
        res["strata_load"] = load_strata(a.bin, sp, files)
    if "dbt" in tools:
        res["project"] = write(dp)
        res["duckdb_load"] = load_duckdb(dp / "bench.duckdb", files)


def compare_marts(a, sp: Path, dp: Path, sql: str, res: dict) -> None:
    if not (sp / "target").is_dir() or not (dp / "bench.duckdb").exists():
        res["compare"] = {"verdict": "not compared (one tool's warehouse is missing)"}
        return
    s_rows, c = strata_query(a.bin, sp, sql)
    if not c.ok:
        res["compare"] = {"verdict": "strata query failed", "error": c.error()}
        return
    try:
        res["compare"] = compare(s_rows, duckdb_query(dp / "bench.duckdb", sql))
    except Exception as e:  # noqa: BLE001
        res["compare"] = {"verdict": f"duckdb query failed: {e}"}


def cmd_run(a) -> None:
    work = Path(a.work)
    base = work / f"run-{a.models}"
    sp, dp = base / "strata", base / "dbt"
    res: dict = previous(a.out) or {}
    res["rows_per_source"] = a.rows
    n_src = max(8, a.models // 50)  # as gen_project.py
    data = ensure_data(work, n_src, a.rows)
    files = {f.stem: f for f in sorted(data.glob("src_*.parquet"))}
    setup_pair(a, sp, dp, lambda d: gen("project", d, "--models", a.models, "--seed", a.seed, "--all-tables"),
               files, res)
    build_both(a, sp, dp, f"{a.models} models", res)
    marts = sorted(f"analytics_marts.{p.stem}" for p in (sp / "models" / "marts").rglob("*.sql"))
    compare_marts(a, sp, dp, fingerprint_sql({m: ["id", "amount", "qty"] for m in marts}), res)
    log(f"marts compared: {res['compare']['verdict']}")
    Path(a.out).write_text(json.dumps(res, indent=1))


def cmd_chain(a) -> None:
    tools = set(a.tools.split(","))
    work = Path(a.work)
    base = work / f"chain-{a.depth}"
    sp, dp = base / "strata", base / "dbt"
    res: dict = previous(a.out) or {}
    res["rows"] = a.rows
    data = ensure_data(work, 10, a.rows)
    setup_pair(a, sp, dp, lambda d: gen("chain", d, "--depth", a.depth),
               {"chain_base": data / "chain_base.parquet"}, res)
    build_both(a, sp, dp, f"chain of {a.depth} views", res)
    last = res["project"]["last"]
    sql = f"select count(*) as n, sum(c_{last.split('_')[1]}) as s from analytics.{last}"
    if "strata" in tools:
        runs = []
        for _ in range(a.runs + 1):
            rows, c = strata_query(a.bin, sp, sql)
            b = c.brief()
            b["result"] = rows
            if not c.ok:
                b["error"] = c.error()
            runs.append(b)
        res["strata_query"] = runs
        log(f"query of the last view: strata best {best(x['wall'] for x in runs):.3f}s")
    if "dbt" in tools:
        runs = []
        for _ in range(a.runs + 1):
            d = run([PY, "-c", f"""
import duckdb, json, time
t0 = time.perf_counter()
con = duckdb.connect({str(dp / 'bench.duckdb')!r}, read_only=True)
r = con.execute({sql!r}).fetchall()
print(json.dumps({{"in_process": time.perf_counter() - t0, "result": [list(map(float, x)) for x in r]}}))
"""])
            db = d.brief()
            if d.ok:
                db.update(json.loads(d.stdout))
            else:
                db["error"] = d.error()
            runs.append(db)
        res["duckdb_query"] = runs
        log(f"query of the last view: duckdb (python process) best {best(x['wall'] for x in runs):.3f}s")
    Path(a.out).write_text(json.dumps(res, indent=1))


def cmd_tpch(a) -> None:
    import tpch_project

    base = Path(a.work) / "tpch-marts"
    sp, dp = base / "strata", base / "dbt"
    res: dict = previous(a.out) or {}
    res["data"] = a.data
    files = {f.stem: f for f in sorted(Path(a.data).glob("*.parquet"))}
    setup_pair(a, sp, dp, tpch_project.write, files, res)
    build_both(a, sp, dp, "TPC-H marts", res)
    sql = fingerprint_sql({f"analytics_marts.{m}": cols for m, cols in res["project"]["fingerprint"].items()})
    compare_marts(a, sp, dp, sql, res)
    log(f"TPC-H marts compared: {res['compare']['verdict']}")
    Path(a.out).write_text(json.dumps(res, indent=1))


def cmd_machine(a) -> None:
    import duckdb

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()[1].split()[1]
    try:
        s = subprocess.run([a.bin, "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        s = "strata (not run)"
    old = previous(a.out) or {}
    d = subprocess.run([DBT, "--version"], capture_output=True, text=True, env=DBT_ENV).stdout
    vers = dict(re.findall(r"-\s+(\w[\w-]*):\s+(\S+)", d))
    if s == "strata (not run)" and old.get("versions", {}).get("strata"):
        s = old["versions"]["strata"]
    Path(a.out).write_text(json.dumps({
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu, "nproc": os.cpu_count(), "mem": mem, "kernel": platform.release(),
        "load_start": loadavg(),
        "versions": {"strata": s, "dbt-core": vers.get("installed", re.search(r"installed:\s*(\S+)", d).group(1)
                                                       if re.search(r"installed:\s*(\S+)", d) else "?"),
                     "dbt-duckdb": vers.get("duckdb", "?"), "duckdb": duckdb.__version__},
    }, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("machine")
    m.add_argument("--bin", required=True)
    m.add_argument("--out", required=True)
    c = sub.add_parser("compile")
    c.add_argument("--bin", required=True)
    c.add_argument("--work", required=True)
    c.add_argument("--sizes", default="500,2000,10000")
    c.add_argument("--seed", type=int, default=42)
    c.add_argument("--runs", type=int, default=5)
    c.add_argument("--dbt-runs", type=int, default=2)
    c.add_argument("--dbt-repeat-limit", type=float, default=300)
    c.add_argument("--dbt-timeout", type=float, default=3600)
    c.add_argument("--keep", action="store_true", help="keep the generated projects")
    c.add_argument("--tools", default="strata,dbt", help="strata,dbt; results of the other tool "
                   "already in --out are kept")
    c.add_argument("--out", required=True)
    for name in ("run", "chain", "tpch"):
        r = sub.add_parser(name)
        r.add_argument("--bin", required=True)
        r.add_argument("--work", required=True)
        r.add_argument("--runs", type=int, default=2)
        r.add_argument("--timeout", type=float, default=3600)
        r.add_argument("--seed", type=int, default=42)
        r.add_argument("--out", required=True)
        r.add_argument("--tools", default="strata,dbt")
        if name == "run":
            r.add_argument("--models", type=int, default=500)
            r.add_argument("--rows", type=int, default=50000)
        if name == "chain":
            r.add_argument("--depth", type=int, default=200)
            r.add_argument("--rows", type=int, default=50000)
        if name == "tpch":
            r.add_argument("--data", required=True)
    rep = sub.add_parser("report")
    rep.add_argument("results")
    a = ap.parse_args()
    if a.cmd == "report":
        import report

        print(report.report(Path(a.results)))
        return
    {"machine": cmd_machine, "compile": cmd_compile, "run": cmd_run, "chain": cmd_chain,
     "tpch": cmd_tpch}[a.cmd](a)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
