-- Recency, frequency and value of every customer who ordered, scored 1–5 against the
-- other customers and named as a segment. Recency is counted from the last order date in
-- the data, not from today, so the same data always gives the same segments.

with customer_orders as (

    select
        customer_id,
        max(order_date) as last_order_date,
        count(order_id) as frequency,
        sum(revenue) as monetary_value
    from {{ ref('fct_orders') }}
    group by customer_id

),

as_of as (

    select max(order_date) as as_of_date
    from {{ ref('fct_orders') }}

),

measured as (

    select
        customer_orders.customer_id,
        customer_orders.last_order_date,
        {{ dbt.datediff('customer_orders.last_order_date', 'as_of.as_of_date', 'day') }} as recency_days,
        customer_orders.frequency,
        customer_orders.monetary_value
    from customer_orders
    cross join as_of

),

scored as (

    -- 5 is best: most recent, most frequent, most valuable. Ties break on customer_id.
    select
        customer_id,
        last_order_date,
        recency_days,
        frequency,
        monetary_value,
        ntile(5) over (order by recency_days desc, customer_id) as recency_score,
        ntile(5) over (order by frequency, customer_id) as frequency_score,
        ntile(5) over (order by monetary_value, customer_id) as value_score
    from measured

),

segmented as (

    select
        scored.*,
        case
            when recency_score >= 4 and frequency_score >= 4 and value_score >= 4 then 'champions'
            when recency_score >= 3 and frequency_score >= 3 then 'loyal'
            when recency_score >= 4 then 'new'
            when recency_score <= 2 and frequency_score >= 3 then 'at_risk'
            when recency_score <= 2 then 'hibernating'
            else 'needs_attention'
        end as segment_code
    from scored

)

select
    segmented.customer_id,
    segmented.last_order_date,
    segmented.recency_days,
    segmented.frequency,
    segmented.monetary_value,
    segmented.recency_score,
    segmented.frequency_score,
    segmented.value_score,
    segmented.segment_code,
    segments.segment_name,
    segments.segment_description
from segmented
inner join {{ ref('rfv_segments') }} as segments
    on segments.segment_code = segmented.segment_code
