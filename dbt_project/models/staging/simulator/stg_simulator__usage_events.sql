with

source as (
    select * from {{ source('simulator', 'usage_events') }}
),

renamed as (
    select
        cast(event_id as bigint) as usage_event_id,
        cast(customer_id as bigint) as customer_id,
        cast(usage_date as date) as usage_date,
        cast(sessions as integer) as sessions,
        cast(minutes as {{ type_double() }}) as minutes,
        cast(ingest_date as date) as ingest_date
    from source
)

select * from renamed
