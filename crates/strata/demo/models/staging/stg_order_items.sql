with source as (

    select * from {{ source('raw', 'order_items') }}

),

renamed as (

    select
        {{ dbt.concat([
            "cast(order_id as " ~ dbt.type_string() ~ ")",
            "'-'",
            "cast(line_no as " ~ dbt.type_string() ~ ")"
        ]) }} as order_item_id,
        order_id,
        line_no,
        product_id,
        quantity,
        unit_price,
        quantity * unit_price as line_amount
    from source

)

select * from renamed
