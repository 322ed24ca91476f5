{#- One row per day that has landed in any raw table: the data's watermark and its span. -#}
with

customers as (
    select ingest_date from {{ ref('stg_simulator__customers') }}
),

subscription_events as (
    select ingest_date from {{ ref('stg_simulator__subscription_events') }}
),

usage_events as (
    select ingest_date from {{ ref('stg_simulator__usage_events') }}
),

payments as (
    select ingest_date from {{ ref('stg_simulator__payments') }}
),

support_tickets as (
    select ingest_date from {{ ref('stg_simulator__support_tickets') }}
),

unioned as (
    select ingest_date from customers
    union
    select ingest_date from subscription_events
    union
    select ingest_date from usage_events
    union
    select ingest_date from payments
    union
    select ingest_date from support_tickets
)

select ingest_date as loaded_date from unioned
