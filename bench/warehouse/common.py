"""Shared helpers of the warehouse benchmark: the query set, timing statistics and the result
summaries used to check that the engines agree."""

from __future__ import annotations

import csv
import datetime as _dt
import decimal
import hashlib
import io
import math
import os
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUERIES_DIR = HERE / "queries"

TABLES = ["lineitem", "orders", "customer", "part", "partsupp", "supplier", "nation", "region"]


def load_queries(only: str | None = None) -> dict[str, str]:
    """{"q01": sql, ...}; `only` is a comma-separated list such as "q01,q06" or "1,6"."""
    wanted = None
    if only:
        wanted = {f"q{int(x.strip().lstrip('qQ')):02d}" for x in only.split(",") if x.strip()}
    out = {}
    for p in sorted(QUERIES_DIR.glob("q[0-9][0-9].sql")):
        if wanted is None or p.stem in wanted:
            out[p.stem] = strip_comments(p.read_text())
    return out


def strip_comments(sql: str) -> str:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return "\n".join(lines).strip().rstrip(";").strip()


def qualify(sql: str, schema: str) -> str:
    """Prefixes the TPC-H table names in FROM lists and JOINs with `schema.`.

    Only names that follow FROM, JOIN or a comma inside a FROM list are touched, so a column
    alias that happens to be a table name (Q9's `n_name as nation`) is left alone."""
    names = "|".join(TABLES)
    # A table reference: after FROM/JOIN, or after a comma that itself follows a table ref.
    pattern = re.compile(
        r"(\b(?:from|join)\s+|,\s*)(" + names + r")\b(?!\s*\()",
        re.IGNORECASE,
    )

    out = []
    pos = 0
    for m in pattern.finditer(sql):
        prefix, name = m.group(1), m.group(2)
        if prefix.strip() == ",":
            # Accept a comma only when we are inside a FROM list: the nearest preceding
            # keyword among FROM / WHERE / SELECT / GROUP / ORDER / ON must be FROM.
            before = sql[: m.start()]
            kws = list(re.finditer(r"\b(from|where|select|group|order|having|on|by)\b", before, re.IGNORECASE))
            if not kws or kws[-1].group(1).lower() != "from":
                continue
        out.append(sql[pos : m.start(2)])
        out.append(f"{schema}.{name}")
        pos = m.end(2)
    out.append(sql[pos:])
    return "".join(out)


# --- statistics -------------------------------------------------------------------------------


def geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and x > 0]
    if not xs:
        return float("nan")
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


# --- result summaries -------------------------------------------------------------------------


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (_dt.date, _dt.datetime)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _num(s: str):
    try:
        if s == "":
            return None
        x = float(s)
        return x if math.isfinite(x) else None
    except ValueError:
        return None


def summarize(rows: list[list]) -> dict:
    """An engine-independent fingerprint of a result: row count, per-column numeric sums
    (numeric columns) or a hash of the sorted values (other columns)."""
    cells = [[_cell(v) for v in r] for r in rows]
    ncols = len(cells[0]) if cells else 0
    cols = []
    for c in range(ncols):
        vals = [r[c] for r in cells]
        nums = [_num(v) for v in vals]
        if all(n is not None or v == "" for n, v in zip(nums, vals)) and any(n is not None for n in nums):
            cols.append({"sum": sum(n for n in nums if n is not None)})
        else:
            h = hashlib.sha1("\x1f".join(sorted(v.rstrip() for v in vals)).encode()).hexdigest()[:12]
            cols.append({"hash": h})
    return {"rows": len(cells), "cols": cols}


def summarize_csv(text: str) -> dict:
    rdr = csv.reader(io.StringIO(text))
    rows = list(rdr)
    if not rows:
        return {"rows": 0, "cols": []}
    return summarize(rows[1:])  # header row


def compare(a: dict | None, b: dict | None) -> str | None:
    """None when the summaries agree, else a short reason."""
    if a is None or b is None:
        return "missing"
    if a["rows"] != b["rows"]:
        return f"rows {a['rows']} vs {b['rows']}"
    if len(a["cols"]) != len(b["cols"]):
        return f"columns {len(a['cols'])} vs {len(b['cols'])}"
    for i, (x, y) in enumerate(zip(a["cols"], b["cols"])):
        if "sum" in x and "sum" in y:
            d = abs(x["sum"] - y["sum"])
            if d > 1e-6 * max(1.0, abs(x["sum"]), abs(y["sum"])) and d > 0.01:
                return f"column {i + 1}: sum {x['sum']:.6g} vs {y['sum']:.6g}"
        elif x != y:
            return f"column {i + 1}: values differ"
    return None


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []
