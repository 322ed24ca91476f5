with

source as (
    select * from {{ source('simulator', 'subscription_events') }}
),

renamed as (
    select
        cast(event_id as bigint) as subscription_event_id,
        cast(customer_id as bigint) as customer_id,
        event_type,
        cast(event_at as timestamp) as event_at,
        cast(event_at as date) as event_date,
        plan_code,
        cast(monthly_price as decimal(12, 2)) as monthly_price,
        cast(ingest_date as date) as ingest_date
    from source
)

select * from renamed
