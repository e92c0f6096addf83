{#- Customers have no updated_at column, so the `check` strategy opens a new version when
    the hash of the columns that can change (name, e-mail, country, region) changes. -#}
{% snapshot customers_snapshot %}

{{
    config(
        target_schema='snapshots',
        unique_key='customer_id',
        strategy='check',
        check_cols=['customer_hash']
    )
}}

select
    *,
    {{ dbt.hash(dbt.concat(["name", "'|'", "email", "'|'", "country", "'|'", "region"])) }} as customer_hash
from {{ source('raw', 'customers') }}

{% endsnapshot %}
