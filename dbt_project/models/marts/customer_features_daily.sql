{#-
  One row per active customer per as_of_date. Every feature uses only events dated on or before
  as_of_date (the cutoff is the end of that day). Incremental on as_of_date: a run builds exactly
  the dates in [start_date, end_date] (dbt vars) and replaces them; without vars it builds every
  date the raw data spans. A date that has not landed (after the watermark, or missing between
  landed days, up to 90 days back) fails the run before anything is replaced
  (macros/require_landed_dates.sql).
-#}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='as_of_date',
        on_schema_change='fail'
    )
}}

{#- 90: the longest window below; a gap inside it would silently shrink the features. -#}
{{ require_landed_dates(ref('int_loaded_days_unioned'), 'loaded_date', lookback_days=90) }}

with

customers as (
    select * from {{ ref('int_customers_joined') }}
),

subscriptions as (
    select * from {{ ref('int_subscriptions_versioned') }}
),

usage_events as (
    select * from {{ ref('stg_simulator__usage_events') }}
),

payments as (
    select * from {{ ref('stg_simulator__payments') }}
),

support_tickets as (
    select * from {{ ref('stg_simulator__support_tickets') }}
),

bounds as (
    {{ as_of_bounds(ref('int_loaded_days_unioned'), 'loaded_date') }}
),

as_of_dates as (
    select {{ date_series('lo', 'hi') }} as as_of_date
    from bounds
),

active_customers as (
    select
        as_of_dates.as_of_date,
        customers.customer_id,
        customers.signup_date,
        customers.region,
        customers.acquisition_channel
    from as_of_dates
    inner join customers
        on customers.signup_date <= as_of_dates.as_of_date
        and (customers.cancel_date is null or customers.cancel_date > as_of_dates.as_of_date)
),

current_plan as (
    select
        active_customers.as_of_date,
        active_customers.customer_id,
        subscriptions.plan_code,
        subscriptions.monthly_price
    from active_customers
    inner join subscriptions
        on subscriptions.customer_id = active_customers.customer_id
        and subscriptions.valid_from < active_customers.as_of_date + 1
        and (subscriptions.valid_to is null or subscriptions.valid_to >= active_customers.as_of_date + 1)
),

usage_windows as (
    select
        active_customers.as_of_date,
        active_customers.customer_id,
        sum(case when usage_events.usage_date > active_customers.as_of_date - 7 then usage_events.sessions else 0 end) as sessions_7d,
        sum(case when usage_events.usage_date > active_customers.as_of_date - 30 then usage_events.sessions else 0 end) as sessions_30d,
        sum(usage_events.sessions) as sessions_90d,
        sum(case when usage_events.usage_date > active_customers.as_of_date - 30 then usage_events.minutes else 0 end) as minutes_30d,
        sum(case when usage_events.usage_date > active_customers.as_of_date - 7 then 1 else 0 end) as active_days_7d,
        sum(case when usage_events.usage_date > active_customers.as_of_date - 30 then 1 else 0 end) as active_days_30d,
        max(usage_events.usage_date) as last_usage_date
    from active_customers
    inner join usage_events
        on usage_events.customer_id = active_customers.customer_id
        and usage_events.usage_date <= active_customers.as_of_date
        and usage_events.usage_date > active_customers.as_of_date - 90
    group by active_customers.as_of_date, active_customers.customer_id
),

payment_windows as (
    select
        active_customers.as_of_date,
        active_customers.customer_id,
        sum(case when payments.payment_status = 'failed' and payments.attempted_date > active_customers.as_of_date - 30 then 1 else 0 end) as failed_payments_30d,
        sum(case when payments.payment_status = 'failed' then 1 else 0 end) as failed_payments_90d,
        sum(case when payments.payment_status = 'succeeded' then payments.amount else 0 end) as amount_paid_90d
    from active_customers
    inner join payments
        on payments.customer_id = active_customers.customer_id
        and payments.attempted_date <= active_customers.as_of_date
        and payments.attempted_date > active_customers.as_of_date - 90
    group by active_customers.as_of_date, active_customers.customer_id
),

ticket_windows as (
    select
        active_customers.as_of_date,
        active_customers.customer_id,
        sum(case when support_tickets.opened_date > active_customers.as_of_date - 30 then 1 else 0 end) as tickets_30d,
        count(*) as tickets_90d,
        sum(case when support_tickets.ticket_category = 'billing' then 1 else 0 end) as billing_tickets_90d
    from active_customers
    inner join support_tickets
        on support_tickets.customer_id = active_customers.customer_id
        and support_tickets.opened_date <= active_customers.as_of_date
        and support_tickets.opened_date > active_customers.as_of_date - 90
    group by active_customers.as_of_date, active_customers.customer_id
),

final as (
    select
        cast(active_customers.as_of_date as date) as as_of_date,
        cast(active_customers.customer_id as bigint) as customer_id,
        cast(current_plan.plan_code as varchar(16)) as plan_code,
        cast(current_plan.monthly_price as decimal(12, 2)) as monthly_price,
        cast(active_customers.region as varchar(16)) as region,
        cast(active_customers.acquisition_channel as varchar(32)) as acquisition_channel,
        cast({{ dbt.datediff('active_customers.signup_date', 'active_customers.as_of_date', 'day') }} as integer) as tenure_days,
        cast(coalesce(usage_windows.sessions_7d, 0) as integer) as sessions_7d,
        cast(coalesce(usage_windows.sessions_30d, 0) as integer) as sessions_30d,
        cast(coalesce(usage_windows.sessions_90d, 0) as integer) as sessions_90d,
        cast(coalesce(usage_windows.minutes_30d, 0) as decimal(14, 2)) as minutes_30d,
        cast(coalesce(usage_windows.active_days_7d, 0) as integer) as active_days_7d,
        cast(coalesce(usage_windows.active_days_30d, 0) as integer) as active_days_30d,
        cast(
            coalesce(usage_windows.sessions_7d, 0) / 7.0 - coalesce(usage_windows.sessions_30d, 0) / 30.0
            as decimal(12, 4)
        ) as usage_trend_7d_vs_30d,
        cast(
            coalesce(usage_windows.sessions_30d, 0) / 30.0 - coalesce(usage_windows.sessions_90d, 0) / 90.0
            as decimal(12, 4)
        ) as usage_trend_30d_vs_90d,
        cast(
            coalesce({{ dbt.datediff('usage_windows.last_usage_date', 'active_customers.as_of_date', 'day') }}, 90)
            as integer
        ) as days_since_last_activity,
        cast(coalesce(payment_windows.failed_payments_30d, 0) as integer) as failed_payments_30d,
        cast(coalesce(payment_windows.failed_payments_90d, 0) as integer) as failed_payments_90d,
        cast(coalesce(payment_windows.amount_paid_90d, 0) as decimal(12, 2)) as amount_paid_90d,
        cast(coalesce(ticket_windows.tickets_30d, 0) as integer) as tickets_30d,
        cast(coalesce(ticket_windows.tickets_90d, 0) as integer) as tickets_90d,
        cast(coalesce(ticket_windows.billing_tickets_90d, 0) as integer) as billing_tickets_90d
    from active_customers
    inner join current_plan
        on current_plan.customer_id = active_customers.customer_id
        and current_plan.as_of_date = active_customers.as_of_date
    left join usage_windows
        on usage_windows.customer_id = active_customers.customer_id
        and usage_windows.as_of_date = active_customers.as_of_date
    left join payment_windows
        on payment_windows.customer_id = active_customers.customer_id
        and payment_windows.as_of_date = active_customers.as_of_date
    left join ticket_windows
        on ticket_windows.customer_id = active_customers.customer_id
        and ticket_windows.as_of_date = active_customers.as_of_date
)

select * from final
