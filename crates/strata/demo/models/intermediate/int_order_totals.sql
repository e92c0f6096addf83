-- One row per order: its lines and payments summed up.

with items as (

    select
        order_id,
        count(*) as line_count,
        sum(quantity) as units,
        sum(line_amount) as items_amount
    from {{ ref('stg_order_items') }}
    group by order_id

),

payments as (

    select
        order_id,
        count(*) as payment_count,
        sum(amount) as paid_amount,
        max(paid_at) as paid_at
    from {{ ref('stg_payments') }}
    group by order_id

)

select
    orders.order_id,
    orders.customer_id,
    orders.ordered_at,
    orders.order_date,
    orders.status,
    orders.status in ('completed', 'shipped') as is_revenue,
    coalesce(items.line_count, 0) as line_count,
    coalesce(items.units, 0) as units,
    coalesce(items.items_amount, 0) as order_amount,
    coalesce(payments.payment_count, 0) as payment_count,
    coalesce(payments.paid_amount, 0) as paid_amount,
    payments.paid_at
from {{ ref('stg_orders') }} as orders
left join items on items.order_id = orders.order_id
left join payments on payments.order_id = orders.order_id
