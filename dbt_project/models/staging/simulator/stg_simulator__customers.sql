with

source as (
    select * from {{ source('simulator', 'customers') }}
),

renamed as (
    select
        cast(customer_id as bigint) as customer_id,
        cast(signup_date as date) as signup_date,
        plan_code as signup_plan_code,
        region,
        acquisition_channel,
        cast(ingest_date as date) as ingest_date
    from source
)

select * from renamed
