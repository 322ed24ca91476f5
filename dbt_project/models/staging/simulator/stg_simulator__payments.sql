with

source as (
    select * from {{ source('simulator', 'payments') }}
),

renamed as (
    select
        cast(payment_id as bigint) as payment_id,
        cast(customer_id as bigint) as customer_id,
        cast(attempted_at as timestamp) as attempted_at,
        cast(attempted_at as date) as attempted_date,
        cast(amount as decimal(12, 2)) as amount,
        status as payment_status,
        cast(attempt as integer) as attempt_number,
        cast(ingest_date as date) as ingest_date
    from source
)

select * from renamed
