with source as (

    select * from {{ source('raw', 'products') }}

),

renamed as (

    select
        product_id,
        name as product_name,
        category,
        cast(price__amount as decimal(12, 2)) as list_price,
        price__currency as currency
    from source

)

select * from renamed
