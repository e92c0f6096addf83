#!/usr/bin/env python3
"""Combines the JSON files of one warehouse benchmark run into a comparison table.

  report.py RESULTS_DIR            prints the report and writes RESULTS_DIR/report.md

Reads (each optional): strata.json, datafusion.json, datafusion-default.json,
datafusion-lake.json, datafusion-lake-pushdown.json, duckdb.json, load.json, startup.json, spill.json, machine.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compare, geomean  # noqa: E402

MB = 2**20


def load(d: Path, name: str):
    p = d / f"{name}.json"
    if p.exists():
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return None
    return None


def load_engine(d: Path, name: str):
    """name.json, or the merge of name.r1.json, name.r2.json... (ROUNDS > 1): a query's
    best time is its best over the rounds; peak RSS is the largest of the rounds."""
    files = sorted(d.glob(f"{name}.json")) + sorted(d.glob(f"{name}.r[0-9]*.json"))
    docs = []
    for f in files:
        try:
            docs.append(json.loads(f.read_text()))
        except json.JSONDecodeError:
            pass
    if len(docs) <= 1:
        return docs[0] if docs else None
    out = dict(docs[0])
    out["rounds"] = len(docs)
    out["loadavg_start"] = docs[0].get("loadavg_start")
    out["loadavg_end"] = docs[-1].get("loadavg_end")
    out["loadavg_rounds"] = [(x.get("loadavg_start"), x.get("loadavg_end")) for x in docs]
    for k in ("peak_rss_bytes", "inprocess_peak_rss_bytes"):
        vals = [x[k] for x in docs if x.get(k) is not None]
        if vals:
            out[k] = max(vals)
    queries: dict = {}
    for x in docs:
        for q, e in x.get("queries", {}).items():
            m = queries.setdefault(q, {})
            for key, val in e.items():
                if key in ("best", "process_best", "process_adjusted"):
                    m[key] = min(m.get(key, val), val)
                elif key in ("times", "process_times", "inprocess_times"):
                    m.setdefault(key, []).extend(val)
                elif key == "process_peak_rss_bytes":
                    m[key] = max(m.get(key, 0), val)
                else:
                    m.setdefault(key, val)
    for m in queries.values():  # a query that ran in some round is not a failure
        if "best" in m or "process_best" in m:
            m.pop("error", None)
    out["queries"] = queries
    return out


def fmt(x, digits=3):
    return "—" if x is None else f"{x:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b <= 0 else a / b


def main() -> int:
    d = Path(sys.argv[1])
    strata = load_engine(d, "strata")
    peers = {k: load_engine(d, k) for k in ("datafusion", "datafusion-default", "datafusion-lake", "datafusion-lake-pushdown", "duckdb")}
    peers = {k: v for k, v in peers.items() if v}
    ld, st, sp, machine = load(d, "load"), load(d, "startup"), load(d, "spill"), load(d, "machine")
    out: list[str] = []
    w = out.append

    if machine:
        rounds = (strata or {}).get("rounds", 1)
        w(
            f"Run: {machine.get('date')} · SCALE={machine.get('scale')} · best of "
            f"{machine.get('runs')} runs" + (f" × {rounds} rounds" if rounds > 1 else "")
        )
        w(f"Machine: {machine.get('cpu')} · nproc={machine.get('nproc')} · memory {machine.get('mem')}")
        if machine.get("versions"):
            w("Versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()))
        w("")

    qnames = sorted(
        set((strata or {}).get("queries", {})) | {q for p in peers.values() for q in p.get("queries", {})}
    )

    def best(src, q, key="best"):
        e = (src or {}).get("queries", {}).get(q, {})
        return e.get(key)

    cols = [
        ("Strata", lambda q: best(strata, q)),
        ("Strata/proc", lambda q: best(strata, q, "process_best")),
        ("proc−start", lambda q: best(strata, q, "process_adjusted")),
    ]
    labels = {
        "datafusion": "DF(strata cfg)",
        "datafusion-lake": "DF(lake files)",
        "datafusion-lake-pushdown": "DF(lake, pushdown)",
        "datafusion-default": "DF(defaults)",
        "duckdb": "DuckDB",
    }
    for k in ("datafusion", "datafusion-lake", "datafusion-lake-pushdown", "datafusion-default", "duckdb"):
        if k in peers:
            cols.append((labels[k], (lambda kk: lambda q: best(peers[kk], q))(k)))

    df = peers.get("datafusion")
    dk = peers.get("duckdb")
    header = ["query"] + [c[0] for c in cols] + ["S/DF", "S/DuckDB", "flag", "results"]
    w("Times in seconds (best of runs). Strata = in-process (one `strata sql -` process, marker")
    w("timing); Strata/proc = one process per query; proc−start = Strata/proc minus the median")
    w("`strata sql \"select 1\"` in the same project. S/DF and S/DuckDB use the in-process time.")
    w("")
    w("| " + " | ".join(header) + " |")
    w("|" + "|".join(["---"] + ["---:"] * (len(header) - 3) + ["---", "---"]) + "|")
    failures = []
    flagged = []
    mismatches = []
    for q in qnames:
        vals = [c[1](q) for c in cols]
        s = vals[0]
        r_df = ratio(s, best(df, q))
        r_dk = ratio(s, best(dk, q))
        flag = ""
        se = (strata or {}).get("queries", {}).get(q, {})
        if "error" in se:
            flag = "FAILED"
            failures.append((q, se["error"]))
        elif r_dk is not None and r_dk > 3:
            flag = ">3× DuckDB"
            flagged.append((q, r_dk))
        checks = []
        ref = (dk or {}).get("queries", {}).get(q, {}).get("summary")
        for name, src in [("strata", strata)] + [(k, v) for k, v in peers.items() if k != "duckdb"]:
            summ = (src or {}).get("queries", {}).get(q, {}).get("summary")
            if summ is None or ref is None:
                continue
            why = compare(summ, ref)
            if why:
                checks.append(f"{name}≠duckdb ({why})")
        if checks:
            mismatches.append((q, checks))
        res_cell = "; ".join(checks) if checks else ("agree" if ref else "")
        cells = [q] + [fmt(v) for v in vals] + [fmt(r_df, 2), fmt(r_dk, 2), flag, res_cell]
        w("| " + " | ".join(cells) + " |")

    # Totals and geomeans over the queries every column has.
    common = [q for q in qnames if all(c[1](q) is not None for c in cols)]
    tot = [sum(c[1](q) for q in common) for c in cols]
    gm = [geomean([c[1](q) for q in common]) for c in cols]
    w(
        "| **total** | "
        + " | ".join(fmt(x) for x in tot)
        + f" | {fmt(ratio(tot[0], tot[[c[0] for c in cols].index('DF(strata cfg)')]) if df else None, 2)}"
        + f" | {fmt(ratio(tot[0], tot[[c[0] for c in cols].index('DuckDB')]) if dk else None, 2)} | | |"
    )
    w(
        "| **geomean** | "
        + " | ".join(fmt(x) for x in gm)
        + f" | {fmt(ratio(gm[0], gm[[c[0] for c in cols].index('DF(strata cfg)')]) if df else None, 2)}"
        + f" | {fmt(ratio(gm[0], gm[[c[0] for c in cols].index('DuckDB')]) if dk else None, 2)} | | |"
    )
    w("")
    if len(common) != len(qnames):
        w(f"Totals and geomeans cover the {len(common)} queries that every engine ran: {', '.join(common)}.")
        w("")

    # Memory.
    w("Peak RSS of the whole 22-query run (ru_maxrss; the peers' include the Python interpreter):")
    w("")
    w("| engine | peak RSS |")
    w("|---|---:|")
    if strata:
        w(f"| Strata (in-process run) | {strata.get('inprocess_peak_rss_bytes', 0) / MB:.0f} MB |")
        pq = [e.get("process_peak_rss_bytes", 0) for e in strata["queries"].values()]
        if pq:
            w(f"| Strata (largest single-query process) | {max(pq) / MB:.0f} MB |")
    for k, v in peers.items():
        w(f"| {labels[k]} | {v.get('peak_rss_bytes', 0) / MB:.0f} MB |")
    w("")

    # Targets.
    w("Targets:")
    if strata and df and dk:
        rt_df = ratio(tot[0], tot[[c[0] for c in cols].index("DF(strata cfg)")])
        rt_dk = ratio(tot[0], tot[[c[0] for c in cols].index("DuckDB")])
        w(f"- Strata ≤ 1.05× raw DataFusion (total): {fmt(rt_df, 2)}× — {'met' if rt_df and rt_df <= 1.05 else 'MISSED'}")
        w(f"- Strata ≤ 1.3× DuckDB (total): {fmt(rt_dk, 2)}× — {'met' if rt_dk and rt_dk <= 1.3 else 'MISSED'}")
        w(
            "- No query > 3× DuckDB: "
            + ("met" if not flagged else "MISSED by " + ", ".join(f"{q} ({r:.1f}×)" for q, r in flagged))
        )
    if ld:
        rps = ld.get("rows_per_s")
        w(
            f"- Load ≥ 2 M rows/s: {ld.get('total_rows', 0):,} rows in {fmt(ld.get('total_wall_s'), 2)} s = "
            f"{(rps or 0) / 1e6:.2f} M rows/s (wall, 8 `strata sql` processes; "
            f"{(ld.get('rows_per_s_statement') or 0) / 1e6:.2f} M rows/s by the statements' own timing) — "
            f"{'met' if rps and rps >= 2e6 else 'MISSED'}"
        )
        bad = {t: e["error"] for t, e in ld.get("tables", {}).items() if not e.get("ok")}
        for t, e in bad.items():
            w(f"  - load of {t} FAILED: {e}")
    if st:
        for label in ("empty_project", "tpch_project"):
            e = st.get(label)
            if not e:
                continue
            if "error" in e:
                w(f"- `select 1` ({label}): FAILED {e['error']}")
                continue
            ms = e["median_s"] * 1000
            w(
                f"- `strata sql \"select 1\"` cold start ≤ 150 ms ({label.replace('_', ' ')}): median {ms:.0f} ms "
                f"(first {e['first_s'] * 1000:.0f} ms, min {e['min_s'] * 1000:.0f} ms), peak RSS "
                f"{e['peak_rss_bytes_median'] / MB:.0f} MB — {'met' if ms <= 150 else 'MISSED'}"
            )
        idle = st.get("idle_shell", {})
        if idle.get("rss_bytes"):
            r = idle["rss_bytes"] / MB
            w(f"- Idle RSS ≤ 100 MB (`strata shell` waiting for input): {r:.0f} MB — {'met' if r <= 100 else 'MISSED'}")
        elif idle.get("error"):
            w(f"- Idle RSS: {idle['error']}")
    if sp:
        if "create" in sp and not sp["create"].get("ok"):
            w(f"- Spill sort: could not create the table: {sp['create'].get('error')}")
        else:
            tgt = sp.get("target_rss_bytes", 0) / MB
            w(
                f"- Sort of a table {sp.get('factor_of_limit', 0):.1f}× engine.memory_limit={sp['memory_limit']} "
                f"({sp.get('table_rows', 0):,} rows, ~{sp.get('table_arrow_bytes', 0) / MB:.0f} MB as Arrow), "
                f"target: completes with peak RSS ≤ {tgt:.0f} MB:"
            )
            names = {
                "to_parquet": "`select * from bench.big order by r --format parquet --output F`",
                "to_csv_devnull": "same, `--format csv --output /dev/null`",
                "to_parquet_fanin4": "same to Parquet after `set datafusion.runtime.max_spill_merge_fan_in = '4'`",
                "ctas": "`create table bench.sorted as select * from bench.big order by r`",
            }
            for k, s in sp.get("sorts", {}).items():
                if s.get("ok"):
                    verdict = "met" if s["peak_rss_bytes"] / MB <= tgt else "MISSED"
                    extra = ""
                    if "sorted" in s:
                        extra = f"; output {'sorted' if s['sorted'] else 'NOT sorted (%s inversions)' % s['inversions']}"
                        if not s["sorted"]:
                            verdict += ", but the output is not sorted"
                    w(
                        f"  - {names.get(k, k)}: completed in {s['wall_s']:.1f} s, peak RSS "
                        f"{s['peak_rss_bytes'] / MB:.0f} MB, spill files seen "
                        f"{(s.get('peak_spill_bytes_sampled') or 0) / MB:.0f} MB{extra} — {verdict}"
                    )
                else:
                    w(
                        f"  - {names.get(k, k)}: FAILED after {s.get('wall_s', 0):.1f} s "
                        f"(peak RSS {s.get('peak_rss_bytes', 0) / MB:.0f} MB): {s.get('error')}"
                    )
    w("")
    if failures:
        w("Strata failures:")
        for q, e in failures:
            w(f"- {q}: {e}")
        w("")
    if strata and strata.get("inprocess_error"):
        w(f"Strata in-process run ended early: {strata['inprocess_error']}")
        w("")
    if mismatches:
        w("Result differences (row count, column sums, sorted values; DuckDB as reference):")
        for q, c in mismatches:
            w(f"- {q}: {'; '.join(c)}")
        w("")
    loads = [("Strata", strata)] + [(labels[k], v) for k, v in peers.items()]
    loads = [(n, v.get("loadavg_start"), v.get("loadavg_end")) for n, v in loads if v]
    if loads:
        w(
            "Load average (1, 5, 15 min) at the start → end of each engine's run (2 cores; "
            "anything else running shows here): "
            + "; ".join(f"{n} {s} → {e}" for n, s, e in loads)
            + "."
        )
        w("")
    if strata:
        w(
            f"Strata `select 1` in the TPC-H project (subtracted for proc−start): "
            f"{strata.get('startup_select1_s', 0) * 1000:.0f} ms."
        )
    text = "\n".join(out)
    (d / "report.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
