-- One row per order, ready for revenue reporting.

select
    orders.order_id,
    orders.customer_id,
    customers.country_code,
    regions.sales_region,
    orders.ordered_at,
    orders.order_date,
    cast({{ dbt.date_trunc('month', 'orders.order_date') }} as date) as order_month,
    orders.status,
    orders.is_revenue,
    orders.line_count,
    orders.units,
    orders.order_amount,
    case when orders.is_revenue then orders.order_amount else 0 end as revenue,
    orders.paid_amount,
    orders.paid_at,
    {{ dbt.datediff('orders.ordered_at', 'orders.paid_at', 'minute') }} as minutes_to_payment
from {{ ref('int_order_totals') }} as orders
inner join {{ ref('stg_customers') }} as customers
    on customers.customer_id = orders.customer_id
left join {{ ref('country_regions') }} as regions
    on regions.country_code = customers.country_code
