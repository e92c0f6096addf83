-- One row per customer who ordered: first and last order, counts and revenue.

select
    customer_id,
    min(order_date) as first_order_date,
    max(order_date) as last_order_date,
    count(*) as order_count,
    sum(case when is_revenue then order_amount else 0 end) as lifetime_revenue
from {{ ref('int_order_totals') }}
group by customer_id
