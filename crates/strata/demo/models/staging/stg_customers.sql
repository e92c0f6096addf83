with source as (

    select * from {{ source('raw', 'customers') }}

),

renamed as (

    select
        customer_id,
        name as customer_name,
        lower(email) as email,
        upper(country) as country_code,
        region,
        cast(signup_date as date) as signup_date
    from source

)

select * from renamed
