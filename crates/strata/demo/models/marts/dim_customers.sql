-- One row per customer, with where they live and how much they ordered.

select
    customers.customer_id,
    customers.customer_name,
    customers.email,
    customers.country_code,
    regions.country_name,
    regions.sales_region,
    customers.signup_date,
    customer_orders.first_order_date,
    customer_orders.last_order_date,
    coalesce(customer_orders.order_count, 0) as order_count,
    coalesce(customer_orders.lifetime_revenue, 0) as lifetime_revenue
from {{ ref('stg_customers') }} as customers
left join {{ ref('country_regions') }} as regions
    on regions.country_code = customers.country_code
left join {{ ref('int_customer_orders') }} as customer_orders
    on customer_orders.customer_id = customers.customer_id
