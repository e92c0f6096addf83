-- Every order is paid exactly its amount, except cancelled orders, which are not paid.
-- Returns the orders that break the rule.

select
    order_id,
    status,
    order_amount,
    paid_amount
from {{ ref('fct_orders') }}
where (status = 'cancelled' and paid_amount <> 0)
   or (status <> 'cancelled' and paid_amount <> order_amount)
