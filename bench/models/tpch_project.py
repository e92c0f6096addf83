"""A ~40-model dbt marts project over TPC-H (bench/models, step `tpch`).

Sources: the 8 TPC-H tables in schema `raw` (loaded from tpchgen-cli's Parquet). Staging:
8 views that rename and cast (decimals to double). Intermediate: tables that enrich line
items and orders and aggregate them per order, customer, supplier, part, month. Marts:
tables in the shape of the usual reporting questions (revenue by period and geography,
rankings with window functions, market share, returns, late deliveries, pricing summary).
Plain SQL valid in DuckDB and DataFusion (no date arithmetic: `extract` and comparisons).

`write(dir)` writes the project (with a profiles.yml for dbt-duckdb) and returns its info:
model count, the marts, and per mart the numeric columns the benchmark fingerprints.
"""

from __future__ import annotations

import shutil
from pathlib import Path

NAME = "tpch_marts"

STAGING = {
    "stg_lineitem": """select
    l_orderkey as order_key, l_partkey as part_key, l_suppkey as supp_key, l_linenumber as line_number,
    cast(l_quantity as double) as quantity, cast(l_extendedprice as double) as extended_price,
    cast(l_discount as double) as discount, cast(l_tax as double) as tax,
    l_returnflag as return_flag, l_linestatus as line_status,
    l_shipdate as ship_date, l_commitdate as commit_date, l_receiptdate as receipt_date,
    l_shipinstruct as ship_instruct, l_shipmode as ship_mode
from {{ source('tpch', 'lineitem') }}""",
    "stg_orders": """select
    o_orderkey as order_key, o_custkey as cust_key, o_orderstatus as order_status,
    cast(o_totalprice as double) as total_price, o_orderdate as order_date,
    o_orderpriority as order_priority, o_clerk as clerk, o_shippriority as ship_priority
from {{ source('tpch', 'orders') }}""",
    "stg_customer": """select
    c_custkey as cust_key, c_name as customer_name, c_nationkey as nation_key,
    cast(c_acctbal as double) as account_balance, c_mktsegment as market_segment
from {{ source('tpch', 'customer') }}""",
    "stg_part": """select
    p_partkey as part_key, p_name as part_name, p_mfgr as manufacturer, p_brand as brand,
    p_type as part_type, p_size as part_size, p_container as container,
    cast(p_retailprice as double) as retail_price
from {{ source('tpch', 'part') }}""",
    "stg_supplier": """select
    s_suppkey as supp_key, s_name as supplier_name, s_nationkey as nation_key,
    cast(s_acctbal as double) as account_balance
from {{ source('tpch', 'supplier') }}""",
    "stg_partsupp": """select
    ps_partkey as part_key, ps_suppkey as supp_key, ps_availqty as available_qty,
    cast(ps_supplycost as double) as supply_cost
from {{ source('tpch', 'partsupp') }}""",
    "stg_nation": """select n_nationkey as nation_key, n_name as nation_name, n_regionkey as region_key
from {{ source('tpch', 'nation') }}""",
    "stg_region": """select r_regionkey as region_key, r_name as region_name
from {{ source('tpch', 'region') }}""",
}

INTERMEDIATE = {
    "int_nations": """select n.nation_key, n.nation_name, r.region_key, r.region_name
from {{ ref('stg_nation') }} n
join {{ ref('stg_region') }} r on n.region_key = r.region_key""",
    "int_lineitem_enriched": """select
    l.order_key, l.part_key, l.supp_key, l.line_number, l.quantity, l.extended_price, l.discount,
    l.extended_price * (1 - l.discount) as net_revenue,
    l.extended_price * (1 - l.discount) * (1 + l.tax) as gross_revenue,
    l.return_flag, l.line_status, l.ship_mode, l.ship_date,
    case when l.receipt_date > l.commit_date then 1 else 0 end as is_late,
    cast(extract(year from l.ship_date) as integer) as ship_year
from {{ ref('stg_lineitem') }} l""",
    "int_order_items": """select
    order_key,
    count(*) as line_count,
    sum(quantity) as total_quantity,
    sum(net_revenue) as net_revenue,
    sum(gross_revenue) as gross_revenue,
    sum(is_late) as late_lines,
    sum(case when return_flag = 'R' then net_revenue else 0 end) as returned_revenue
from {{ ref('int_lineitem_enriched') }}
group by order_key""",
    "int_customers": """select c.cust_key, c.customer_name, c.market_segment, c.account_balance,
    n.nation_name, n.region_name
from {{ ref('stg_customer') }} c
join {{ ref('int_nations') }} n on c.nation_key = n.nation_key""",
    "int_suppliers": """select s.supp_key, s.supplier_name, s.account_balance, n.nation_name, n.region_name
from {{ ref('stg_supplier') }} s
join {{ ref('int_nations') }} n on s.nation_key = n.nation_key""",
    "int_orders_enriched": """select
    o.order_key, o.cust_key, o.order_status, o.order_date, o.order_priority, o.total_price,
    cast(extract(year from o.order_date) as integer) as order_year,
    cast(extract(month from o.order_date) as integer) as order_month,
    i.line_count, i.total_quantity, i.net_revenue, i.gross_revenue, i.late_lines, i.returned_revenue,
    c.market_segment, c.nation_name, c.region_name
from {{ ref('stg_orders') }} o
join {{ ref('int_order_items') }} i on o.order_key = i.order_key
join {{ ref('int_customers') }} c on o.cust_key = c.cust_key""",
    "int_customer_orders": """select
    cust_key,
    count(*) as order_count,
    sum(net_revenue) as lifetime_revenue,
    avg(net_revenue) as avg_order_revenue,
    min(order_date) as first_order_date,
    max(order_date) as last_order_date,
    sum(returned_revenue) as returned_revenue
from {{ ref('int_orders_enriched') }}
group by cust_key""",
    "int_part_sales": """select
    part_key,
    count(*) as line_count,
    sum(quantity) as quantity_sold,
    sum(net_revenue) as net_revenue,
    avg(discount) as avg_discount
from {{ ref('int_lineitem_enriched') }}
group by part_key""",
    "int_supplier_sales": """select
    supp_key,
    count(*) as line_count,
    sum(net_revenue) as net_revenue,
    sum(is_late) as late_lines
from {{ ref('int_lineitem_enriched') }}
group by supp_key""",
    "int_partsupp_value": """select
    ps.part_key, ps.supp_key, ps.available_qty, ps.supply_cost,
    ps.available_qty * ps.supply_cost as stock_value,
    p.brand, p.part_type, p.retail_price
from {{ ref('stg_partsupp') }} ps
join {{ ref('stg_part') }} p on ps.part_key = p.part_key""",
    "int_monthly_revenue": """select order_year, order_month, region_name,
    count(*) as order_count, sum(net_revenue) as net_revenue, sum(gross_revenue) as gross_revenue
from {{ ref('int_orders_enriched') }}
group by order_year, order_month, region_name""",
    "int_line_shipping": """select ship_mode, ship_year,
    count(*) as line_count, sum(is_late) as late_lines, sum(net_revenue) as net_revenue
from {{ ref('int_lineitem_enriched') }}
group by ship_mode, ship_year""",
    "int_supplier_nation_revenue": """select s.nation_name, l.ship_year,
    sum(l.net_revenue) as net_revenue, count(*) as line_count
from {{ ref('int_lineitem_enriched') }} l
join {{ ref('int_suppliers') }} s on l.supp_key = s.supp_key
group by s.nation_name, l.ship_year""",
    "int_part_profit": """select
    ps.part_key, ps.supp_key, ps.brand, ps.part_type,
    coalesce(sum(l.net_revenue - ps.supply_cost * l.quantity), 0) as profit
from {{ ref('int_partsupp_value') }} ps
left join {{ ref('int_lineitem_enriched') }} l on l.part_key = ps.part_key and l.supp_key = ps.supp_key
group by ps.part_key, ps.supp_key, ps.brand, ps.part_type""",
}

MARTS = {
    "revenue_by_year": ("""select order_year, count(*) as order_count, sum(net_revenue) as net_revenue,
    sum(gross_revenue) as gross_revenue
from {{ ref('int_orders_enriched') }}
group by order_year""", ["order_count", "net_revenue", "gross_revenue"]),
    "revenue_by_region_year": ("""select region_name, order_year, sum(net_revenue) as net_revenue,
    sum(order_count) as order_count
from {{ ref('int_monthly_revenue') }}
group by region_name, order_year""", ["net_revenue", "order_count"]),
    "revenue_by_nation": ("""select nation_name, region_name, count(*) as order_count,
    sum(net_revenue) as net_revenue, avg(net_revenue) as avg_order_revenue
from {{ ref('int_orders_enriched') }}
group by nation_name, region_name""", ["order_count", "net_revenue", "avg_order_revenue"]),
    "monthly_revenue_growth": ("""select order_year, order_month, region_name, net_revenue,
    net_revenue - coalesce(lag(net_revenue) over (partition by region_name order by order_year, order_month), 0) as revenue_change,
    sum(net_revenue) over (partition by region_name, order_year order by order_month
                           rows between unbounded preceding and current row) as ytd_revenue
from {{ ref('int_monthly_revenue') }}""", ["net_revenue", "revenue_change", "ytd_revenue"]),
    "top_customers": ("""select * from (
    select c.cust_key, c.customer_name, c.nation_name, o.lifetime_revenue, o.order_count,
        rank() over (partition by c.nation_name order by o.lifetime_revenue desc, c.cust_key) as nation_rank
    from {{ ref('int_customer_orders') }} o
    join {{ ref('int_customers') }} c on o.cust_key = c.cust_key
) ranked
where nation_rank <= 10""", ["lifetime_revenue", "order_count", "nation_rank"]),
    "customer_segments": ("""select market_segment,
    case when lifetime_revenue >= 1000000 then 'platinum'
         when lifetime_revenue >= 500000 then 'gold'
         else 'standard' end as tier,
    count(*) as customers, sum(lifetime_revenue) as revenue, avg(order_count) as avg_orders
from {{ ref('int_customer_orders') }} o
join {{ ref('int_customers') }} c on o.cust_key = c.cust_key
group by market_segment,
    case when lifetime_revenue >= 1000000 then 'platinum'
         when lifetime_revenue >= 500000 then 'gold'
         else 'standard' end""", ["customers", "revenue", "avg_orders"]),
    "customer_ntiles": ("""select cust_key, lifetime_revenue,
    ntile(10) over (order by lifetime_revenue desc, cust_key) as revenue_decile
from {{ ref('int_customer_orders') }}""", ["lifetime_revenue", "revenue_decile"]),
    "customer_lifetime": ("""select c.cust_key, c.market_segment, c.region_name,
    coalesce(o.order_count, 0) as order_count, coalesce(o.lifetime_revenue, 0) as lifetime_revenue,
    coalesce(o.returned_revenue, 0) as returned_revenue, c.account_balance
from {{ ref('int_customers') }} c
left join {{ ref('int_customer_orders') }} o on c.cust_key = o.cust_key""",
                          ["order_count", "lifetime_revenue", "account_balance"]),
    "customers_without_orders": ("""select c.nation_name, count(*) as customers, sum(c.account_balance) as balance
from {{ ref('int_customers') }} c
left join {{ ref('int_customer_orders') }} o on c.cust_key = o.cust_key
where o.cust_key is null
group by c.nation_name""", ["customers", "balance"]),
    "supplier_ranking": ("""select s.supp_key, s.supplier_name, s.nation_name, ss.net_revenue, ss.late_lines,
    dense_rank() over (partition by s.region_name order by ss.net_revenue desc) as region_rank
from {{ ref('int_supplier_sales') }} ss
join {{ ref('int_suppliers') }} s on ss.supp_key = s.supp_key""", ["net_revenue", "late_lines", "region_rank"]),
    "late_deliveries_by_supplier_nation": ("""select s.nation_name, sum(ss.late_lines) as late_lines,
    sum(ss.line_count) as line_count,
    cast(sum(ss.late_lines) as double) / cast(sum(ss.line_count) as double) as late_share
from {{ ref('int_supplier_sales') }} ss
join {{ ref('int_suppliers') }} s on ss.supp_key = s.supp_key
group by s.nation_name""", ["late_lines", "line_count", "late_share"]),
    "part_brand_sales": ("""select p.brand, count(*) as parts, sum(ps.quantity_sold) as quantity_sold,
    sum(ps.net_revenue) as net_revenue, avg(ps.avg_discount) as avg_discount
from {{ ref('int_part_sales') }} ps
join {{ ref('stg_part') }} p on ps.part_key = p.part_key
group by p.brand""", ["parts", "quantity_sold", "net_revenue"]),
    "part_type_profit": ("""select part_type, count(*) as part_suppliers, sum(profit) as profit
from {{ ref('int_part_profit') }}
group by part_type""", ["part_suppliers", "profit"]),
    "brand_profit_rank": ("""select brand, profit, rank() over (order by profit desc, brand) as profit_rank
from (select brand, sum(profit) as profit from {{ ref('int_part_profit') }} group by brand) b""",
                          ["profit", "profit_rank"]),
    "inventory_value": ("""select brand, sum(stock_value) as stock_value, sum(available_qty) as available_qty,
    avg(supply_cost) as avg_supply_cost
from {{ ref('int_partsupp_value') }}
group by brand""", ["stock_value", "available_qty", "avg_supply_cost"]),
    "shipping_mode_performance": ("""select ship_mode, sum(line_count) as line_count, sum(late_lines) as late_lines,
    sum(net_revenue) as net_revenue
from {{ ref('int_line_shipping') }}
group by ship_mode""", ["line_count", "late_lines", "net_revenue"]),
    "pricing_summary": ("""select return_flag, line_status,
    sum(quantity) as sum_qty, sum(extended_price) as sum_base_price, sum(net_revenue) as sum_disc_price,
    sum(gross_revenue) as sum_charge, avg(quantity) as avg_qty, avg(discount) as avg_disc, count(*) as count_order
from {{ ref('int_lineitem_enriched') }}
group by return_flag, line_status""", ["sum_qty", "sum_charge", "count_order"]),
    "returns_by_nation": ("""select nation_name, sum(returned_revenue) as returned_revenue,
    count(*) as orders_with_returns
from {{ ref('int_orders_enriched') }}
where returned_revenue > 0
group by nation_name""", ["returned_revenue", "orders_with_returns"]),
    "order_priority_stats": ("""select order_priority, order_year, count(*) as order_count,
    sum(late_lines) as late_lines, avg(line_count) as avg_lines
from {{ ref('int_orders_enriched') }}
group by order_priority, order_year""", ["order_count", "late_lines", "avg_lines"]),
    "market_share_by_nation": ("""select n.nation_name, n.ship_year, n.net_revenue,
    n.net_revenue / sum(n.net_revenue) over (partition by n.ship_year) as market_share
from {{ ref('int_supplier_nation_revenue') }} n""", ["net_revenue", "market_share"]),
}

DBT_PROJECT = f"""name: {NAME}
version: "1.0.0"
config-version: 2
profile: {NAME}
model-paths: ["models"]
models:
  {NAME}:
    staging:
      +materialized: view
      +schema: staging
    intermediate:
      +materialized: table
    marts:
      +materialized: table
      +schema: marts
"""

SOURCES = """version: 2
sources:
  - name: tpch
    schema: raw
    tables: [{name: lineitem}, {name: orders}, {name: customer}, {name: part},
             {name: supplier}, {name: partsupp}, {name: nation}, {name: region}]
"""

TESTS = """version: 2
models:
  - name: stg_orders
    columns:
      - name: order_key
        data_tests: [unique, not_null]
  - name: stg_customer
    columns:
      - name: cust_key
        data_tests: [unique, not_null]
  - name: int_order_items
    columns:
      - name: order_key
        data_tests: [unique, not_null]
  - name: int_customer_orders
    columns:
      - name: cust_key
        data_tests:
          - unique
          - relationships:
              arguments:
                to: ref('stg_customer')
                field: cust_key
"""


def write(dir_: Path) -> dict:
    if dir_.exists():
        shutil.rmtree(dir_)
    (dir_ / "models").mkdir(parents=True)
    (dir_ / "dbt_project.yml").write_text(DBT_PROJECT)
    (dir_ / "profiles.yml").write_text(f"""{NAME}:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{dir_ / 'bench.duckdb'}"
      schema: analytics
      threads: 4
""")
    for folder, models in (("staging", STAGING), ("intermediate", INTERMEDIATE),
                           ("marts", {k: v[0] for k, v in MARTS.items()})):
        d = dir_ / "models" / folder
        d.mkdir(parents=True, exist_ok=True)
        for name, sql in models.items():
            (d / f"{name}.sql").write_text(sql + "\n")
    (dir_ / "models" / "staging" / "_sources.yml").write_text(SOURCES)
    (dir_ / "models" / "_tests.yml").write_text(TESTS)
    return {
        "models": len(STAGING) + len(INTERMEDIATE) + len(MARTS),
        "staging": len(STAGING), "intermediate": len(INTERMEDIATE),
        "marts": list(MARTS),
        "fingerprint": {m: cols for m, (_, cols) in MARTS.items()},
    }
