"""Markdown report of a bench/models results folder (machine, compile, run, chain, tpch JSON)."""

from __future__ import annotations

import json
from pathlib import Path


def _load(d: Path, name: str):
    f = d / f"{name}.json"
    return json.loads(f.read_text()) if f.exists() else None


def _best(runs):
    xs = [r["wall"] for r in runs or [] if r.get("rc") == 0]
    return min(xs) if xs else None


def _s(x, nd=3):
    return "—" if x is None else f"{x:.{nd}f}"


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _met(ok):
    return "—" if ok is None else ("met" if ok else "**missed**")


def report(d: Path) -> str:
    out = []
    m = _load(d, "machine")
    if m:
        v = m["versions"]
        out.append(f"Machine: {m['cpu']}, nproc {m['nproc']}, {m['mem']} RAM, kernel {m['kernel']}; "
                   f"load average {m['load_start']} at the start; {m['date']}.")
        out.append(f"Versions: {v['strata']}; dbt-core {v['dbt-core']}, dbt-duckdb {v['dbt-duckdb']}, "
                   f"DuckDB {v['duckdb']}.\n")
    comp = _load(d, "compile")
    if comp:
        out.append("### Parse + compile\n")
        out.append("Seconds, wall time of the process. Strata cold = the first `strata compile` after the "
                   "project was written; warm = best of the repeats. dbt: best of its runs "
                   "(`--no-partial-parse`); *dbt compile (pp)* = `dbt compile` reusing the partial-parse "
                   "file of the run before. `ls` = `strata ls --select +<mart>` (best).\n")
        out.append("| models | tests | Strata compile cold | Strata compile warm | Strata ls | Strata RSS MB "
                   "| dbt parse | dbt compile | dbt compile (pp) | dbt compile / Strata warm | dbt compile / Strata cold "
                   "| manifests |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        targets = []
        for r in comp:
            sc0 = r.get("strata_compile_cold") or {}
            cold = sc0["wall"] if sc0.get("rc") == 0 else None
            warm = _best(r.get("strata_compile_warm"))
            rss = max((x["rss_mb"] for x in r.get("strata_compile_warm") or []), default=None)
            ls = _best((r.get("strata_ls_mart") or {}).get("runs"))
            dp, dc = _best(r.get("dbt_parse")), _best(r.get("dbt_compile"))
            pp = r["dbt_compile_partial"]["wall"] if r.get("dbt_compile_partial", {}).get("rc") == 0 else None
            sc, dc_ = r.get("strata_counts") or {}, r.get("dbt_counts") or {}
            same = all(sc.get(k) == dc_.get(k) for k in ("model", "test", "seed", "source", "compiled_files"))
            verdict = (f"same: {sc.get('model')} models, {sc.get('test')} tests, {sc.get('compiled_files')} "
                       "compiled files") if same and sc else (
                f"Strata {sc.get('model')} models/{sc.get('test')} tests/{sc.get('compiled_files')} files, "
                f"dbt {dc_.get('model')}/{dc_.get('test')}/{dc_.get('compiled_files')}")
            if r.get("strata_error"):
                verdict = "Strata failed: " + r["strata_error"].splitlines()[-1][:200]
            runs_note = ""
            if any(len(r.get(k) or []) == 1 for k in ("dbt_parse", "dbt_compile")):
                runs_note = " (dbt: 1 run)"
            out.append(
                f"| {r['models']:,}{runs_note} | {sc.get('test', '—')} | {_s(cold)} | {_s(warm)} | {_s(ls)} | "
                f"{_s(rss, 0)} | {_s(dp, 1)} | {_s(dc, 1)} | {_s(pp, 1)} | "
                f"{_s(_ratio(dc, warm), 0)}× | {_s(_ratio(dc, cold), 0)}× | {verdict} |")
            if r["models"] == max(x["models"] for x in comp):
                targets.append((f"{r['models']:,} models compiled warm ≤ 0.5 s", _s(warm),
                                None if warm is None else warm <= 0.5))
                targets.append((f"{r['models']:,} models compiled cold ≤ 1 s", _s(cold),
                                None if cold is None else cold <= 1.0))
            q = _ratio(warm, dc)
            targets.append((f"{r['models']:,} models: Strata ≤ 1/20 of dbt compile",
                            "—" if q is None else (f"1/{1 / q:.0f} (warm), 1/{dc / cold:.0f} (cold)" if cold else "—"),
                            None if q is None else (cold or warm) <= dc / 20))
            targets.append((f"{r['models']:,} models: `strata ls --select` < 1 s", _s(ls),
                            None if ls is None else ls < 1.0))
        out.append("")
        out.append("| target | result | |")
        out.append("|---|---|---|")
        for t, v, ok in targets:
            out.append(f"| {t} | {v} | {_met(ok)} |")
        out.append("")
    for name, title in (("run", "Build: generated project, every model a table"),
                        ("chain", "Build: chain of views"), ("tpch", "Build: TPC-H marts")):
        r = _load(d, name)
        if not r:
            continue
        out.append(f"### {title}\n")
        sb, db = _best(r.get("strata_build")), _best(r.get("dbt_build"))
        sruns = ", ".join(_s(x["wall"], 2) + ("" if x["rc"] == 0 else " (failed)") for x in r.get("strata_build", []))
        druns = ", ".join(_s(x["wall"], 2) + ("" if x["rc"] == 0 else " (failed)") for x in r.get("dbt_build", []))
        out.append("| tool | build runs (s) | best | summary | peak RSS MB | load avg |")
        out.append("|---|---|---:|---|---:|---|")
        for tool, runs, b in (("Strata", r.get("strata_build", []), sb), ("dbt-duckdb", r.get("dbt_build", []), db)):
            summ = next((x.get("summary") for x in runs if x.get("summary")), None) or "—"
            rss = max((x["rss_mb"] for x in runs), default=None)
            loads = ", ".join(f"{x.get('load', 0):.1f}" for x in runs) or "—"
            out.append(f"| {tool} | {sruns if tool == 'Strata' else druns} | {_s(b, 2)} | {summ} | {_s(rss, 0)} | {loads} |")
        q = _ratio(sb, db)
        out.append("")
        out.append(f"Strata / dbt: **{_s(q, 2)}×** (target ≤ 0.3×: {_met(None if q is None else q <= 0.3)}).")
        for x in r.get("strata_build", []):
            if x.get("error"):
                out.append(f"\nStrata error: ```{x['error'][-800:]}```")
                break
        for x in r.get("dbt_build", []):
            if x.get("error"):
                out.append(f"\ndbt error: ```{x['error'][-800:]}```")
                break
        if "compare" in r:
            c = r["compare"]
            out.append(f"Results (row count and sums per mart, Strata vs DuckDB): {c['verdict']}"
                       + (": " + "; ".join(c.get("differences", [])[:5]) if c.get("differences") else "") + ".")
        if name == "chain":
            sq, dq = r.get("strata_query", []), r.get("duckdb_query", [])
            sqb = _best(sq)
            dqb = _best(dq)
            dqi = min((x.get("in_process") for x in dq if x.get("in_process") is not None), default=None)
            res_s = next((x.get("result") for x in sq if x.get("result")), None)
            res_d = next((x.get("result") for x in dq if x.get("result")), None)
            out.append(f"\nQuery `select count(*), sum(c_last) from` the last view, a new process each time (best of "
                       f"{len(sq)}): Strata {_s(sqb)} s (first {_s(sq[0]['wall'] if sq else None)} s); DuckDB "
                       f"(python process) {_s(dqb)} s, of which connect + query {_s(dqi)} s. "
                       f"Results: Strata {res_s}, DuckDB {res_d}.")
        out.append("")
    return "\n".join(out)
