with

source as (
    select * from {{ source('simulator', 'support_tickets') }}
),

renamed as (
    select
        cast(ticket_id as bigint) as ticket_id,
        cast(customer_id as bigint) as customer_id,
        cast(opened_at as timestamp) as opened_at,
        cast(opened_at as date) as opened_date,
        category as ticket_category,
        priority as ticket_priority,
        cast(ingest_date as date) as ingest_date
    from source
)

select * from renamed
