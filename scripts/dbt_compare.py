#!/usr/bin/env python3
"""Compares tables built by dbt with the same tables built by Strata, row by row.

    python dbt_compare.py PAIRS_JSON REPORT_JSON

PAIRS_JSON is a list of {"unique_id", "resource_type", "dbt": FILE.parquet,
"strata": FILE.parquet}; the dbt side comes from scripts/dbt_reference.py, the Strata side
from `strata sql "select * from …" --format parquet --output FILE`. Used by
crates/strata/tests/cli/dbt_compat.rs, which decides what a difference means.

Each pair is compared as a multiset of rows, normalized so that only values count:
- columns match by name, case-insensitively; their order is ignored;
- numbers compare numerically whatever their type (integer, decimal, float), with a
  relative tolerance of 1e-9;
- timestamps compare as instants (a timestamp without a time zone is taken as UTC; a
  date is midnight UTC), strings exactly, NULL equals NULL;
- snapshots: dbt's metadata columns (dbt_scd_id, dbt_updated_at, dbt_valid_from,
  dbt_valid_to) hold run timestamps and are left out, but the count of current rows
  (dbt_valid_to is null) must match.

REPORT_JSON receives one entry per pair: {"unique_id", "ok", "dbt_rows", "strata_rows",
"diff": text, "notes": [text]}; notes describe differences that do not fail a node (a
column whose type is of another kind: integer vs float, date vs timestamp). The same is
printed readably. The exit code is 0 whenever the comparison ran, whatever it found; the
caller judges the report.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import sys
from collections import Counter
from pathlib import Path

SNAPSHOT_META = ("dbt_scd_id", "dbt_updated_at", "dbt_valid_from", "dbt_valid_to")
REL_TOL = 1e-9
SHOW_ROWS = 10


def load(path: str):
    """Reads a parquet file into (column names lowercased, arrow types, rows as tuples)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    cols = []
    for f, col in zip(t.schema, t.columns):
        # Nanosecond timestamps do not fit datetime: microseconds are what both sides keep.
        if pa.types.is_timestamp(f.type) and f.type.unit == "ns":
            col = col.cast(pa.timestamp("us", f.type.tz), safe=False)
        cols.append(col.to_pylist())
    names = [n.lower() for n in t.schema.names]
    dupes = [n for n, k in Counter(names).items() if k > 1]
    if dupes:
        raise ValueError(f"{path}: columns differ only by case: {dupes}")
    types = {n: str(f.type) for n, f in zip(names, t.schema)}
    return names, types, list(zip(*cols)) if cols else [() for _ in range(t.num_rows)]


def family(arrow_type: str) -> str:
    """The kind of an arrow type, ignoring width, unit and encoding (int32 ~ int64,
    string ~ string_view, timestamp[us] ~ timestamp[ns, tz=UTC])."""
    for prefix, kind in (("int", "integer"), ("uint", "integer"), ("float", "float"),
                         ("double", "float"), ("halffloat", "float"), ("decimal", "decimal"),
                         ("string", "string"), ("large_string", "string"),
                         ("timestamp", "timestamp"), ("date", "date"), ("bool", "bool")):
        if arrow_type.startswith(prefix):
            return kind
    return arrow_type


def canon(v):
    """A hashable, type-blind form of a value; numbers keep ~10 significant digits."""
    if v is None:
        return ("null",)
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, (int, float, decimal.Decimal)):
        f = float(v)
        if math.isnan(f):
            return ("num", "nan")
        return ("num", float(f"{f:.10g}"))
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return ("instant", v.isoformat())
    if isinstance(v, dt.date):
        return ("instant", dt.datetime(v.year, v.month, v.day).isoformat())
    if isinstance(v, bytes):
        return ("bytes", v.hex())
    if isinstance(v, (list, tuple)):
        return ("list", tuple(canon(x) for x in v))
    if isinstance(v, dict):
        return ("struct", tuple(sorted((k, canon(x)) for k, x in v.items())))
    return (type(v).__name__, str(v))


def close(a, b) -> bool:
    """Tolerant equality of two canonical values (numbers within REL_TOL)."""
    if a[0] == "num" and b[0] == "num" and a[1] != "nan" and b[1] != "nan":
        return math.isclose(a[1], b[1], rel_tol=REL_TOL, abs_tol=1e-12)
    return a == b


def show(row, names) -> str:
    def one(v):
        return "NULL" if v is None else v.isoformat() if isinstance(v, dt.date) else repr(v)
    return "(" + ", ".join(f"{n}={one(v)}" for n, v in zip(names, row)) + ")"


def compare(pair: dict) -> dict:
    uid = pair["unique_id"]
    out = {"unique_id": uid, "ok": False, "dbt_rows": 0, "strata_rows": 0, "diff": "", "notes": []}
    d_names, d_types, d_rows = load(pair["dbt"])
    s_names, s_types, s_rows = load(pair["strata"])
    out["dbt_rows"], out["strata_rows"] = len(d_rows), len(s_rows)
    problems = []

    if pair.get("resource_type") == "snapshot":
        def current(names, rows):
            if "dbt_valid_to" not in names:
                return None
            i = names.index("dbt_valid_to")
            return sum(1 for r in rows if r[i] is None)
        dc, sc = current(d_names, d_rows), current(s_names, s_rows)
        if dc != sc:
            problems.append(f"current rows (dbt_valid_to is null): dbt {dc}, Strata {sc}")
        missing_meta = [c for c in SNAPSHOT_META if c in d_names and c not in s_names]
        if missing_meta:
            problems.append(f"snapshot metadata columns missing in Strata: {missing_meta}")
        keep = [c for c in d_names if c not in SNAPSHOT_META]
        s_keep = [c for c in s_names if c not in SNAPSHOT_META]
    else:
        keep, s_keep = d_names, s_names

    only_dbt = [c for c in keep if c not in s_keep]
    only_strata = [c for c in s_keep if c not in keep]
    if only_dbt or only_strata:
        problems.append(f"columns only in dbt: {only_dbt}; only in Strata: {only_strata}")
    common = [c for c in keep if c in s_keep]
    for c in common:
        if family(d_types[c]) != family(s_types[c]):
            out["notes"].append(f"column {c}: dbt {d_types[c]}, Strata {s_types[c]}")

    di = [d_names.index(c) for c in common]
    si = [s_names.index(c) for c in common]
    originals = {}  # canonical row -> (side, a row as read), to show rows as they are

    def count(rows, idx, side):
        c = Counter()
        for r in rows:
            key = tuple(canon(r[i]) for i in idx)
            originals.setdefault((side, key), tuple(r[i] for i in idx))
            c[key] += 1
        return c

    d_can = count(d_rows, di, "dbt")
    s_can = count(s_rows, si, "strata")
    extra_d = sorted((d_can - s_can).elements(), key=repr)
    extra_s = sorted((s_can - d_can).elements(), key=repr)
    # Rows that differ only within the tolerance (rounding at the 10th digit) still match.
    for r in list(extra_d):
        for k, q in enumerate(extra_s):
            if len(r) == len(q) and all(close(a, b) for a, b in zip(r, q)):
                extra_d.remove(r)
                del extra_s[k]
                break
    if extra_d or extra_s:
        lines = [f"{len(extra_d)} row(s) only in dbt, {len(extra_s)} only in Strata "
                 f"(of {len(d_rows)} / {len(s_rows)}; columns {common}):"]
        lines += [f"  dbt:    {show(originals[('dbt', r)], common)}" for r in extra_d[:SHOW_ROWS]]
        lines += [f"  strata: {show(originals[('strata', r)], common)}" for r in extra_s[:SHOW_ROWS]]
        if len(extra_d) > SHOW_ROWS or len(extra_s) > SHOW_ROWS:
            lines.append("  …")
        problems.append("\n".join(lines))
    out["diff"] = "\n".join(problems)
    out["ok"] = not problems
    return out


def main() -> None:
    if len(sys.argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        sys.exit(2)
    pairs = json.loads(Path(sys.argv[1]).read_text())
    report = []
    for pair in pairs:
        try:
            r = compare(pair)
        except Exception as e:  # a broken file is a finding about that node, not a crash
            r = {"unique_id": pair.get("unique_id"), "ok": False, "dbt_rows": 0, "strata_rows": 0,
                 "diff": f"cannot compare: {type(e).__name__}: {e}", "notes": []}
        report.append(r)
        status = "same" if r["ok"] else "DIFFERENT"
        print(f"{r['unique_id']}: {status} (dbt {r['dbt_rows']} rows, Strata {r['strata_rows']} rows)")
        for n in r["notes"]:
            print(f"  note: {n}")
        if r["diff"]:
            print("  " + r["diff"].replace("\n", "\n  "))
    Path(sys.argv[2]).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
