#!/usr/bin/env python3
"""Writes a generated, realistic dbt project for the modeling benchmark (bench/models).

  gen_project.py project DIR --models N [--seed S] [--all-tables] [--duckdb-path P]
  gen_project.py chain   DIR --depth D [--duckdb-path P]
  gen_project.py data    DIR --sources N --rows R          Parquet for the source tables

`project`: a dbt project of exactly N models (deterministic for a given N and seed):
  - 3 seeds (`status_codes`, `segments`, `regions`) with a property file and tests;
  - max(8, N/50) source tables in systems of 10 (`source('sys_03', 'src_0031')`, all in
    schema `raw`), some with source tests;
  - staging models (2 per source table, folder `models/staging/<system>/`): typed, renamed,
    joined to a seed, filtered;
  - intermediate models in layers (`models/intermediate/layer_XX/group_YY/`, <= 40 models a
    folder), each with 1-3 refs (40 % one, 40 % two, 20 % three): the first parent from the
    layer just before, the others from any earlier layer (biased to recent ones), so the
    graph is a DAG with fan-in and fan-out, not chains;
  - marts (10 %, `models/marts/<domain>/`) over the last layers, some joined to a seed.
  Model bodies: calculations over one ref, filters with a Jinja loop over a `var` list,
  window functions, group-by rollups, left joins of 2-3 refs on `id`, `union all` + group
  by; 4 user macros (`cents_to_dollars`, `status_bucket`, `status_in`, and `safe_div`
  through `adapter.dispatch` with `default__` / `duckdb__` implementations); `var()`s with
  defaults in dbt_project.yml. Every model has a `config(...)` block (tags; materialized on
  some) under folder configs with `+materialized`, `+schema`, `+tags`. Every folder has a
  `_models.yml` with descriptions; 30 % of the models have column tests (unique, not_null,
  accepted_values, relationships to their first parent, in dbt 1.10's `arguments:` form).
  Two singular tests. In the default mode 3 % of the intermediate models are ephemeral and
  3 % incremental (`is_incremental()` filter), the rest views or tables; `--all-tables`
  makes every model a table (the run benchmark).
  Every model outputs the same columns `id bigint` (unique), `k bigint`, `amount double`,
  `qty bigint`, `status varchar` (low/mid/high), `created_date date`, so any model may use
  any other; the SQL is plain (casts, case, coalesce, joins, group by, windows) and valid
  in DuckDB and DataFusion alike.

`chain`: a project of D views, v_0001 = `select *, x + 1 as c_0001 from source`, then each
  `select *, c_{i-1} + 1 as c_i from ref(previous)`.

`data`: one Parquet file per source table (`src_NNNN.parquet`, R rows; columns id,
  customer_id, amount_cents, quantity (NULL every 13th row), status_code (A-F), created_at)
  and `chain_base.parquet`, written by DuckDB. The same files are loaded into Strata and
  DuckDB.

A `profiles.yml` for dbt-duckdb (schema `analytics`, 4 threads, the DuckDB file given by
--duckdb-path, default DIR/bench.duckdb) is written into every project.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
from pathlib import Path

PROJECT = "bench_models"
SYSTEM_SIZE = 10
GROUP_SIZE = 40
DOMAINS = ["finance", "sales", "operations", "product", "marketing", "support"]
COLS = "id, k, amount, qty, status, created_date"


def w(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def profiles(dir_: Path, duckdb_path: str | None) -> None:
    path = duckdb_path or str(dir_ / "bench.duckdb")
    w(
        dir_ / "profiles.yml",
        f"""{PROJECT}:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{path}"
      schema: analytics
      threads: 4
""",
    )


MACROS = {
    "cents_to_dollars.sql": """{% macro cents_to_dollars(column, scale=2) -%}
    round(cast({{ column }} as double) / 100, {{ scale }})
{%- endmacro %}
""",
    "status_bucket.sql": """{#- Buckets an amount into low / mid / high with the project's thresholds. -#}
{% macro status_bucket(column) -%}
    case
        when {{ column }} >= {{ var('high_threshold') }} then 'high'
        when {{ column }} >= {{ var('mid_threshold') }} then 'mid'
        else 'low'
    end
{%- endmacro %}
""",
    "status_in.sql": """{% macro status_in(column, statuses=none) -%}
    {%- set statuses = statuses or var('keep_statuses') -%}
    {{ column }} in ({% for s in statuses %}'{{ s }}'{% if not loop.last %}, {% endif %}{% endfor %})
{%- endmacro %}
""",
    "safe_div.sql": """{% macro safe_div(numerator, denominator) -%}
    {{ return(adapter.dispatch('safe_div')(numerator, denominator)) }}
{%- endmacro %}

{% macro default__safe_div(numerator, denominator) -%}
    case when ({{ denominator }}) = 0 then null
         else cast({{ numerator }} as double) / cast({{ denominator }} as double) end
{%- endmacro %}

{% macro duckdb__safe_div(numerator, denominator) -%}
    case when ({{ denominator }}) = 0 then null
         else cast({{ numerator }} as double) / cast({{ denominator }} as double) end
{%- endmacro %}
""",
}

SEEDS = {
    "status_codes.csv": "status_code,status_label,sort_order\nA,low,1\nB,low,2\nC,mid,3\nD,mid,4\nE,high,5\nF,high,6\n",
    "segments.csv": "segment_id,segment_name,priority_flag\n"
    + "".join(f"{i},segment_{i},{1 if i % 3 == 0 else 0}\n" for i in range(10)),
    "regions.csv": "region_id,region_name,country_count\n"
    + "".join(f"{i},region_{i},{5 + i * 3}\n" for i in range(1, 8)),
}

SEEDS_YML = """version: 2
seeds:
  - name: status_codes
    description: Status codes of the source systems and their labels.
    config:
      column_types: {status_code: varchar, status_label: varchar, sort_order: integer}
    columns:
      - name: status_code
        description: One-letter code.
        data_tests: [unique, not_null]
      - name: status_label
        data_tests:
          - accepted_values:
              arguments:
                values: ['low', 'mid', 'high']
  - name: segments
    description: Customer segments (k % 10).
    columns:
      - name: segment_id
        data_tests: [unique, not_null]
  - name: regions
    description: Sales regions.
"""


def dbt_project(all_tables: bool) -> str:
    inter_mat = "table" if all_tables else "view"
    return f"""name: {PROJECT}
version: "1.0.0"
config-version: 2
profile: {PROJECT}

model-paths: ["models"]
seed-paths: ["seeds"]
macro-paths: ["macros"]
test-paths: ["tests"]
analysis-paths: ["analyses"]
clean-targets: ["target"]

vars:
  amount_factor: 1.01
  qty_modulus: 1000003
  high_threshold: 500
  mid_threshold: 100
  keep_statuses: ["low", "mid", "high"]
  min_created_date: "2020-01-01"

models:
  {PROJECT}:
    +materialized: {"table" if all_tables else "view"}
    +meta:
      owner: data-platform
    staging:
      +schema: staging
      +tags: ["staging"]
    intermediate:
      +materialized: {inter_mat}
      +tags: ["intermediate"]
    marts:
      +materialized: table
      +schema: marts
      +tags: ["marts"]
      finance:
        +tags: ["finance", "pii_free"]
      sales:
        +tags: ["sales"]

seeds:
  {PROJECT}:
    +schema: seeds
    +tags: ["seed"]

data_tests:
  {PROJECT}:
    +severity: error
"""


class Model:
    def __init__(self, name, folder, layer, kind, parents, materialized, tags, source=None):
        self.name = name
        self.folder = folder
        self.layer = layer
        self.kind = kind
        self.parents = parents
        self.materialized = materialized
        self.tags = tags
        self.source = source


def plan(n: int, seed: int, all_tables: bool) -> tuple[list[tuple[str, str]], list[Model]]:
    rng = random.Random(seed * 1_000_003 + n)
    n_src = max(8, n // 50)
    sources = [(f"sys_{i // SYSTEM_SIZE:02d}", f"src_{i:04d}") for i in range(n_src)]
    models: list[Model] = []
    # Staging: two per source table.
    for i, (system, table) in enumerate(sources):
        for v, kind in enumerate(("stg_full", "stg_recent")):
            name = f"stg_{table}_{'full' if v == 0 else 'recent'}"
            models.append(Model(name, f"staging/{system}", 0, kind, [], None, [system], source=(system, table)))
    n_stg = len(models)
    n_marts = max(10, n // 10)
    n_inter = n - n_stg - n_marts
    assert n_inter > 0, "too few models for the staging layer"
    n_layers = max(4, min(40, round(math.sqrt(n) / 3)))
    layers: list[list[Model]] = [list(models)]
    per = [n_inter // n_layers + (1 if i < n_inter % n_layers else 0) for i in range(n_layers)]

    def pick_parents(k_refs: int, first_pool: list[Model], history: list[list[Model]]) -> list[Model]:
        ps = [rng.choice(first_pool)]
        while len(ps) < k_refs:
            # earlier layers, weighted to recent ones
            li = len(history) - 1 - min(len(history) - 1, int(rng.expovariate(0.7)))
            cand = rng.choice(history[li])
            if cand not in ps:
                ps.append(cand)
        return ps

    def kind_for(k_refs: int, marts: bool) -> str:
        if k_refs == 1:
            r = rng.random()
            if marts:
                return "rollup" if r < 0.4 else ("window" if r < 0.7 else "calc")
            return "calc" if r < 0.45 else ("filter" if r < 0.75 else ("window" if r < 0.95 else "rollup"))
        return "join" if rng.random() < 0.7 else "union_agg"

    for li in range(n_layers):
        layer = []
        for j in range(per[li]):
            k_refs = rng.choices([1, 2, 3], [0.4, 0.4, 0.2])[0]
            ps = pick_parents(k_refs, layers[-1], layers)
            kind = kind_for(len(ps), False)
            mat = None
            if not all_tables:
                r = rng.random()
                if r < 0.03 and kind != "rollup":
                    mat = "ephemeral"
                elif r < 0.06:
                    mat = "incremental"
                elif r < 0.36:
                    mat = "table"
            g = j // GROUP_SIZE
            m = Model(
                f"int_l{li:02d}_{j:04d}",
                f"intermediate/layer_{li:02d}/group_{g:02d}",
                li + 1,
                kind,
                ps,
                mat,
                [f"layer_{li:02d}"] + (["heavy"] if k_refs == 3 else []),
            )
            layer.append(m)
        models.extend(layer)
        layers.append(layer)
    # Marts: over the last three layers.
    recent = [m for lay in layers[-3:] for m in lay if m.materialized != "ephemeral"]
    for j in range(n_marts):
        dom = DOMAINS[j % len(DOMAINS)]
        k_refs = rng.choices([1, 2, 3], [0.4, 0.4, 0.2])[0]
        ps = []
        while len(ps) < k_refs:
            c = rng.choice(recent)
            if c not in ps:
                ps.append(c)
        kind = kind_for(len(ps), True)
        m = Model(f"{dom}_mart_{j:04d}", f"marts/{dom}", n_layers + 1, kind, ps, None, [dom, "daily" if j % 2 else "hourly"])
        m.seed_join = rng.random() < 0.2
        models.append(m)
    assert len(models) == n, (len(models), n)
    return sources, models


def config_block(m: Model) -> str:
    parts = []
    if m.materialized:
        parts.append(f"materialized='{m.materialized}'")
    if m.materialized == "incremental":
        parts.append("unique_key='id'")
    parts.append("tags=[" + ", ".join(f"'{t}'" for t in m.tags) + "]")
    return "{{ config(" + ", ".join(parts) + ") }}\n\n"


def model_sql(m: Model, rng: random.Random) -> str:
    out = config_block(m)
    p = m.parents
    if m.kind in ("stg_full", "stg_recent"):
        system, table = m.source
        out += f"""with src as (
    select * from {{{{ source('{system}', '{table}') }}}}
),

codes as (
    select * from {{{{ ref('status_codes') }}}}
)

select
    cast(src.id as bigint) as id,
    cast(src.customer_id as bigint) as k,
    {{{{ cents_to_dollars('src.amount_cents') }}}} * {{{{ var('amount_factor') }}}} as amount,
    cast(coalesce(src.quantity, 0) as bigint) as qty,
    coalesce(codes.status_label, 'low') as status,
    cast(src.created_at as date) as created_date
from src
left join codes on src.status_code = codes.status_code
where src.id is not null
"""
        if m.kind == "stg_recent":
            out += "  and src.created_at >= cast('{{ var(\"min_created_date\") }}' as timestamp)\n"
        return out
    if m.kind == "calc":
        a = rng.randint(2, 9)
        out += f"""select
    p.id,
    p.k,
    cast(round(p.amount * {{{{ var('amount_factor') }}}} + {a}, 4) as double) as amount,
    cast((p.qty * {a} + 1) % {{{{ var('qty_modulus') }}}} as bigint) as qty,
    {{{{ status_bucket('p.amount') }}}} as status,
    p.created_date
from {{{{ ref('{p[0].name}') }}}} as p
"""
    elif m.kind == "filter":
        mod, r = rng.randint(5, 17), rng.randint(0, 4)
        out += f"""select {COLS}
from {{{{ ref('{p[0].name}') }}}}
where qty % {mod} <> {r}
  and {{{{ status_in('status') }}}}
"""
    elif m.kind == "window":
        out += f"""select
    p.id,
    p.k,
    cast(round(coalesce({{{{ safe_div('sum(p.amount) over (partition by p.k order by p.id rows between unbounded preceding and current row)', 'count(*) over (partition by p.k order by p.id rows between unbounded preceding and current row)') }}}}, 0), 4) as double) as amount,
    cast(row_number() over (partition by p.k order by p.amount desc, p.id) as bigint) as qty,
    {{{{ status_bucket('p.amount') }}}} as status,
    p.created_date
from {{{{ ref('{p[0].name}') }}}} as p
"""
    elif m.kind == "rollup":
        out += f"""select
    p.k as id,
    cast(p.k % 10 as bigint) as k,
    cast(round(sum(p.amount), 4) as double) as amount,
    cast(count(*) as bigint) as qty,
    {{{{ status_bucket('sum(p.amount) / 1000') }}}} as status,
    max(p.created_date) as created_date
from {{{{ ref('{p[0].name}') }}}} as p
group by p.k
"""
    elif m.kind == "join":
        aliases = "abc"[: len(p)]
        ctes = ",\n\n".join(f"{al} as (\n    select * from {{{{ ref('{x.name}') }}}}\n)" for al, x in zip(aliases, p))
        amount = "a.amount * {{ var('amount_factor') }}" + "".join(
            f" + coalesce({al}.amount, 0) * {w_}" for al, w_ in zip(aliases[1:], ("0.5", "0.25"))
        )
        qty = "a.qty" + "".join(f" + coalesce({al}.qty, 0)" for al in aliases[1:])
        joins = "".join(f"\nleft join {al} on a.id = {al}.id" for al in aliases[1:])
        out += f"""with {ctes}

select
    a.id,
    a.k,
    cast(round({amount}, 4) as double) as amount,
    cast(({qty}) % {{{{ var('qty_modulus') }}}} as bigint) as qty,
    case when b.id is null then a.status else b.status end as status,
    coalesce(a.created_date, b.created_date) as created_date
from a{joins}
"""
    elif m.kind == "union_agg":
        unions = "\n    union all\n".join(f"    select {COLS} from {{{{ ref('{x.name}') }}}}" for x in p)
        out += f"""with unioned as (
{unions}
)

select
    id,
    min(k) as k,
    cast(round(sum(amount), 4) as double) as amount,
    cast(sum(qty) % {{{{ var('qty_modulus') }}}} as bigint) as qty,
    max(status) as status,
    min(created_date) as created_date
from unioned
group by id
"""
    def wrap(out: str, tail: str) -> str:
        # The body becomes the subquery `base` of a new select.
        out = out.rstrip("\n")
        body_start = out.index("}}\n\n") + 4
        return (
            out[:body_start]
            + "select base.*\nfrom (\n"
            + "\n".join("    " + line if line else line for line in out[body_start:].splitlines())
            + "\n) as base\n" + tail
        )

    if m.materialized == "incremental":
        out = wrap(out, """{% if is_incremental() %}
where base.id > (select coalesce(max(id), 0) from {{ this }})
{% endif %}
""")
    if getattr(m, "seed_join", False):
        # A mart keeping only the rows of segments the seed knows, priority ones made 'high'.
        out = wrap(out, "inner join {{ ref('segments') }} as seg on base.k % 10 = seg.segment_id\n")
        out = out.replace("select base.*\n", "select base.id, base.k, base.amount, base.qty,\n"
                          "    case when seg.priority_flag = 1 then 'high' else base.status end as status,\n"
                          "    base.created_date\n", 1)
    return out


def models_yml(ms: list[Model], rng: random.Random) -> str:
    lines = ["version: 2", "", "models:"]
    for m in ms:
        lines.append(f"  - name: {m.name}")
        lines.append(f"    description: >")
        parents = ", ".join(x.name for x in m.parents) or f"source {m.source[0]}.{m.source[1]}"
        lines.append(f"      {m.kind.replace('_', ' ')} model of layer {m.layer}, built from {parents}.")
        tested = m.kind.startswith("stg") or rng.random() < 0.3
        if m.materialized == "ephemeral":
            tested = False
        if not tested:
            continue
        lines.append("    columns:")
        lines.append("      - name: id")
        lines.append("        description: Primary key.")
        lines.append("        data_tests:")
        lines.append("          - unique")
        lines.append("          - not_null")
        rel_ok = m.kind in ("calc", "filter", "window", "join") and m.parents[0].materialized != "ephemeral"
        if rel_ok and rng.random() < 0.5:
            lines.append("          - relationships:")
            lines.append("              arguments:")
            lines.append(f"                to: ref('{m.parents[0].name}')")
            lines.append("                field: id")
        lines.append("      - name: amount")
        lines.append("        description: Amount in dollars.")
        if m.kind.startswith("stg") or rng.random() < 0.5:
            lines.append("      - name: status")
            lines.append("        description: low / mid / high.")
            lines.append("        data_tests:")
            lines.append("          - accepted_values:")
            lines.append("              arguments:")
            lines.append("                values: ['low', 'mid', 'high']")
    return "\n".join(lines) + "\n"


def sources_yml(system: str, tables: list[str]) -> str:
    lines = ["version: 2", "", "sources:", f"  - name: {system}", "    schema: raw",
             f"    description: Tables of source system {system}.", "    tables:"]
    for i, t in enumerate(tables):
        lines.append(f"      - name: {t}")
        lines.append(f"        description: Raw rows of {t}.")
        if i == 0:
            lines.append("        columns:")
            lines.append("          - name: id")
            lines.append("            data_tests: [unique, not_null]")
    return "\n".join(lines) + "\n"


def gen_project(dir_: Path, n: int, seed: int, all_tables: bool, duckdb_path: str | None) -> dict:
    if dir_.exists():
        shutil.rmtree(dir_)
    dir_.mkdir(parents=True)
    rng = random.Random(seed)
    sources, models = plan(n, seed, all_tables)
    w(dir_ / "dbt_project.yml", dbt_project(all_tables))
    profiles(dir_, duckdb_path)
    for f, text in MACROS.items():
        w(dir_ / "macros" / f, text)
    for f, text in SEEDS.items():
        w(dir_ / "seeds" / f, text)
    w(dir_ / "seeds" / "_seeds.yml", SEEDS_YML)
    by_system: dict[str, list[str]] = {}
    for system, table in sources:
        by_system.setdefault(system, []).append(table)
    for system, tables in by_system.items():
        w(dir_ / "models" / "staging" / system / "_sources.yml", sources_yml(system, tables))
    by_folder: dict[str, list[Model]] = {}
    for m in models:
        by_folder.setdefault(m.folder, []).append(m)
        w(dir_ / "models" / m.folder / f"{m.name}.sql", model_sql(m, rng))
    for folder, ms in by_folder.items():
        w(dir_ / "models" / folder / "_models.yml", models_yml(ms, rng))
    marts = [m for m in models if m.folder.startswith("marts/")]
    w(dir_ / "tests" / "assert_mart_qty_not_negative.sql",
      f"select * from {{{{ ref('{marts[0].name}') }}}} where qty < 0\n")
    w(dir_ / "tests" / "assert_staging_amount_not_negative.sql",
      f"select * from {{{{ ref('{models[0].name}') }}}} where amount < 0\n")
    n_tests = sum(
        (dir_ / "models" / f / "_models.yml").read_text().count("          - ")
        for f in by_folder
    )
    return {
        "models": len(models),
        "sources": len(sources),
        "layers": max(m.layer for m in models),
        "marts": len(marts),
        "a_mart": marts[-1].name,
        "a_mid_model": models[len(models) // 2].name,
        "approx_model_tests": n_tests,
        "kinds": {k: sum(1 for m in models if m.kind == k) for k in sorted({m.kind for m in models})},
        "materialized": {k or "folder default": sum(1 for m in models if m.materialized == k)
                         for k in sorted({m.materialized or "" for m in models}) for k in [k or None]},
    }


def gen_chain(dir_: Path, depth: int, duckdb_path: str | None) -> dict:
    if dir_.exists():
        shutil.rmtree(dir_)
    dir_.mkdir(parents=True)
    w(dir_ / "dbt_project.yml", f"""name: {PROJECT}
version: "1.0.0"
config-version: 2
profile: {PROJECT}
model-paths: ["models"]
models:
  {PROJECT}:
    +materialized: view
""")
    profiles(dir_, duckdb_path)
    w(dir_ / "models" / "_sources.yml", """version: 2
sources:
  - name: raw
    schema: raw
    tables:
      - name: chain_base
""")
    prev = None
    for i in range(1, depth + 1):
        name = f"v_{i:04d}"
        if prev is None:
            sql = "select *, x + 1 as c_0001 from {{ source('raw', 'chain_base') }}\n"
        else:
            sql = f"select *, c_{i - 1:04d} + 1 as c_{i:04d} from {{{{ ref('{prev}') }}}}\n"
        w(dir_ / "models" / f"{name}.sql", sql)
        prev = name
    return {"depth": depth, "last": prev}


def gen_data(dir_: Path, n_sources: int, rows: int) -> dict:
    import duckdb

    dir_.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    for i in range(n_sources):
        f = dir_ / f"src_{i:04d}.parquet"
        a, b, c = 7919 + i * 2, 104729 + i * 17, 31 + i
        con.execute(f"""copy (
            select cast(i as bigint) as id,
                   cast((i * {a}) % 5000 as bigint) as customer_id,
                   cast((i * {b}) % 100000 as bigint) as amount_cents,
                   case when i % 13 = 0 then null else cast((i * {c}) % 50 as bigint) end as quantity,
                   chr(cast(65 + (i + {i}) % 6 as integer)) as status_code,
                   timestamp '2019-01-01' + to_seconds(cast((i * 37 + {i * 1000}) % 189216000 as bigint)) as created_at
            from range(1, {rows} + 1) t(i)
        ) to '{f}' (format parquet)""")
    f = dir_ / "chain_base.parquet"
    con.execute(f"copy (select cast(i as bigint) as id, cast(i % 1000 as bigint) as x from range(1, {rows} + 1) t(i)) to '{f}' (format parquet)")
    return {"sources": n_sources, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("project")
    p.add_argument("dir", type=Path)
    p.add_argument("--models", type=int, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--all-tables", action="store_true")
    p.add_argument("--duckdb-path")
    c = sub.add_parser("chain")
    c.add_argument("dir", type=Path)
    c.add_argument("--depth", type=int, default=200)
    c.add_argument("--duckdb-path")
    d = sub.add_parser("data")
    d.add_argument("dir", type=Path)
    d.add_argument("--sources", type=int, required=True)
    d.add_argument("--rows", type=int, required=True)
    a = ap.parse_args()
    import json

    if a.cmd == "project":
        info = gen_project(a.dir.resolve(), a.models, a.seed, a.all_tables, a.duckdb_path)
    elif a.cmd == "chain":
        info = gen_chain(a.dir.resolve(), a.depth, a.duckdb_path)
    else:
        info = gen_data(a.dir.resolve(), a.sources, a.rows)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
