with source as (

    select * from {{ source('raw', 'payments') }}

),

renamed as (

    select
        payment_id,
        order_id,
        method as payment_method,
        cast(amount as decimal(12, 2)) as amount,
        paid_at
    from source

)

select * from renamed
