{#-
  One row per active customer per as_of_date. Every feature uses only events dated on or before
  as_of_date (the cutoff is the end of that day). Incremental on as_of_date: a run builds exactly
  the dates in [start_date, end_date] (dbt vars) and replaces them; without vars it builds every
  date the raw data spans. A date that has not landed (after the watermark, or missing between
  landed days, up to 90 days back) fails the run before anything is replaced
  (macros/require_landed_dates.sql).

  Two formulations give the same rows (tests/integration/test_features.py compares them):
  - `windows`: each cutoff (an active customer on an as_of_date) becomes a row beside that customer's
    events, and each window (7, 30 and 90 days ending at the cutoff) is a range frame over them. Its
    cost grows with customers x days + events: the one that scales to a full rebuild.
  - `join`: each cutoff joined to the events of its 90-day window. Its cost grows with customers x
    days x window, but for a few dates it reads less than the windows do, which must also pass over
    the 89 days before the first date.
  The var `features_formulation` picks one; `auto` (the default) takes `join` for a run of at most
  `features_join_max_dates` dates and `windows` otherwise (bench/bench_features.py measures both).
-#}
{{
    config(
        materialized='incremental',
        on_schema_change='fail',
        **as_of_date_replacement()
    )
}}

{#- 90: the longest window below; a gap inside it would silently shrink the features. -#}
{{ require_landed_dates(ref('int_loaded_days_unioned'), 'loaded_date', lookback_days=90) }}

{%- set formulation = features_formulation() %}

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

{#- The cutoffs to compute: one row per active customer per as_of_date, with the plan in force then. -#}
cutoffs as (
    select
        active_customers.customer_id,
        active_customers.as_of_date as activity_date,
        active_customers.signup_date,
        active_customers.region,
        active_customers.acquisition_channel,
        subscriptions.plan_code,
        subscriptions.monthly_price
    from active_customers
    inner join subscriptions
        on subscriptions.customer_id = active_customers.customer_id
        and subscriptions.valid_from < {{ add_days('active_customers.as_of_date', 1) }}
        and (subscriptions.valid_to is null or subscriptions.valid_to >= {{ add_days('active_customers.as_of_date', 1) }})
),

{#- Every event the windows of [lo, hi] reach: the 89 days before lo, then lo..hi. -#}
usage_in_reach as (
    select usage_events.*
    from usage_events
    cross join bounds
    where usage_events.usage_date > {{ subtract_days('bounds.lo', 90) }} and usage_events.usage_date <= bounds.hi
),

payments_in_reach as (
    select payments.*
    from payments
    cross join bounds
    where payments.attempted_date > {{ subtract_days('bounds.lo', 90) }} and payments.attempted_date <= bounds.hi
),

tickets_in_reach as (
    select support_tickets.*
    from support_tickets
    cross join bounds
    where support_tickets.opened_date > {{ subtract_days('bounds.lo', 90) }} and support_tickets.opened_date <= bounds.hi
),

{% if formulation == 'windows' %}

{#- The windows formulation: the cutoffs and the events in reach, one row each. -#}
events as (
    select
        usage_events.customer_id,
        usage_events.usage_date as activity_date,
        0 as is_cutoff,
        cast(null as date) as signup_date,
        cast(null as {{ type_varchar() }}) as region,
        cast(null as {{ type_varchar() }}) as acquisition_channel,
        cast(null as {{ type_varchar() }}) as plan_code,
        cast(null as decimal(12, 2)) as monthly_price,
        usage_events.sessions,
        usage_events.minutes,
        1 as usage_rows,
        0 as failed_payments,
        0.0 as amount_paid,
        0 as tickets,
        0 as billing_tickets
    from usage_in_reach as usage_events
    union all
    select
        payments.customer_id,
        payments.attempted_date,
        0, null, null, null, null, null, 0, 0.0, 0,
        case when payments.payment_status = 'failed' then 1 else 0 end,
        case when payments.payment_status = 'succeeded' then payments.amount else 0 end,
        0,
        0
    from payments_in_reach as payments
    union all
    select
        support_tickets.customer_id,
        support_tickets.opened_date,
        0, null, null, null, null, null, 0, 0.0, 0, 0, 0.0,
        1,
        case when support_tickets.ticket_category = 'billing' then 1 else 0 end
    from tickets_in_reach as support_tickets
),

customer_days as (
    select
        customer_id,
        activity_date,
        1 as is_cutoff,
        signup_date,
        region,
        acquisition_channel,
        plan_code,
        monthly_price,
        0 as sessions,
        0.0 as minutes,
        0 as usage_rows,
        0 as failed_payments,
        0.0 as amount_paid,
        0 as tickets,
        0 as billing_tickets,
        {{ days_between("cast('1970-01-01' as date)", 'activity_date') }} as day_number
    from cutoffs
    union all
    select *, {{ days_between("cast('1970-01-01' as date)", 'activity_date') }} as day_number
    from events
),

{#-
  Frames over the customer's day numbers: `n preceding` spans the n days before the row's day and
  that day itself, with every row of that day (a range frame includes the current row's peers).
-#}
windows as (
    select
        customer_id,
        activity_date as as_of_date,
        is_cutoff,
        signup_date,
        region,
        acquisition_channel,
        plan_code,
        monthly_price,
        sum(sessions) over last_7_days as sessions_7d,
        sum(sessions) over last_30_days as sessions_30d,
        sum(sessions) over last_90_days as sessions_90d,
        sum(minutes) over last_30_days as minutes_30d,
        sum(usage_rows) over last_7_days as active_days_7d,
        sum(usage_rows) over last_30_days as active_days_30d,
        max(case when usage_rows > 0 then activity_date end) over last_90_days as last_usage_date,
        sum(failed_payments) over last_30_days as failed_payments_30d,
        sum(failed_payments) over last_90_days as failed_payments_90d,
        sum(amount_paid) over last_90_days as amount_paid_90d,
        sum(tickets) over last_30_days as tickets_30d,
        sum(tickets) over last_90_days as tickets_90d,
        sum(billing_tickets) over last_90_days as billing_tickets_90d
    from customer_days
    window
        last_7_days as (partition by customer_id order by day_number range between 6 preceding and current row),
        last_30_days as (partition by customer_id order by day_number range between 29 preceding and current row),
        last_90_days as (partition by customer_id order by day_number range between 89 preceding and current row)
),

cutoff_features as (
    select * from windows
    where is_cutoff = 1
),

{% else %}

{#- The join formulation: every cutoff joined to the events of its 90-day window. -#}
usage_windows as (
    select
        cutoffs.activity_date as as_of_date,
        cutoffs.customer_id,
        sum(case when usage_events.usage_date > {{ subtract_days('cutoffs.activity_date', 7) }} then usage_events.sessions else 0 end) as sessions_7d,
        sum(case when usage_events.usage_date > {{ subtract_days('cutoffs.activity_date', 30) }} then usage_events.sessions else 0 end) as sessions_30d,
        sum(usage_events.sessions) as sessions_90d,
        sum(case when usage_events.usage_date > {{ subtract_days('cutoffs.activity_date', 30) }} then usage_events.minutes else 0 end) as minutes_30d,
        sum(case when usage_events.usage_date > {{ subtract_days('cutoffs.activity_date', 7) }} then 1 else 0 end) as active_days_7d,
        sum(case when usage_events.usage_date > {{ subtract_days('cutoffs.activity_date', 30) }} then 1 else 0 end) as active_days_30d,
        max(usage_events.usage_date) as last_usage_date
    from cutoffs
    inner join usage_in_reach as usage_events
        on usage_events.customer_id = cutoffs.customer_id
        and usage_events.usage_date <= cutoffs.activity_date
        and usage_events.usage_date > {{ subtract_days('cutoffs.activity_date', 90) }}
    group by cutoffs.activity_date, cutoffs.customer_id
),

payment_windows as (
    select
        cutoffs.activity_date as as_of_date,
        cutoffs.customer_id,
        sum(case when payments.payment_status = 'failed' and payments.attempted_date > {{ subtract_days('cutoffs.activity_date', 30) }} then 1 else 0 end) as failed_payments_30d,
        sum(case when payments.payment_status = 'failed' then 1 else 0 end) as failed_payments_90d,
        sum(case when payments.payment_status = 'succeeded' then payments.amount else 0 end) as amount_paid_90d
    from cutoffs
    inner join payments_in_reach as payments
        on payments.customer_id = cutoffs.customer_id
        and payments.attempted_date <= cutoffs.activity_date
        and payments.attempted_date > {{ subtract_days('cutoffs.activity_date', 90) }}
    group by cutoffs.activity_date, cutoffs.customer_id
),

ticket_windows as (
    select
        cutoffs.activity_date as as_of_date,
        cutoffs.customer_id,
        sum(case when support_tickets.opened_date > {{ subtract_days('cutoffs.activity_date', 30) }} then 1 else 0 end) as tickets_30d,
        count(*) as tickets_90d,
        sum(case when support_tickets.ticket_category = 'billing' then 1 else 0 end) as billing_tickets_90d
    from cutoffs
    inner join tickets_in_reach as support_tickets
        on support_tickets.customer_id = cutoffs.customer_id
        and support_tickets.opened_date <= cutoffs.activity_date
        and support_tickets.opened_date > {{ subtract_days('cutoffs.activity_date', 90) }}
    group by cutoffs.activity_date, cutoffs.customer_id
),

cutoff_features as (
    select
        cutoffs.activity_date as as_of_date,
        cutoffs.customer_id,
        cutoffs.signup_date,
        cutoffs.region,
        cutoffs.acquisition_channel,
        cutoffs.plan_code,
        cutoffs.monthly_price,
        coalesce(usage_windows.sessions_7d, 0) as sessions_7d,
        coalesce(usage_windows.sessions_30d, 0) as sessions_30d,
        coalesce(usage_windows.sessions_90d, 0) as sessions_90d,
        coalesce(usage_windows.minutes_30d, 0) as minutes_30d,
        coalesce(usage_windows.active_days_7d, 0) as active_days_7d,
        coalesce(usage_windows.active_days_30d, 0) as active_days_30d,
        usage_windows.last_usage_date,
        coalesce(payment_windows.failed_payments_30d, 0) as failed_payments_30d,
        coalesce(payment_windows.failed_payments_90d, 0) as failed_payments_90d,
        coalesce(payment_windows.amount_paid_90d, 0) as amount_paid_90d,
        coalesce(ticket_windows.tickets_30d, 0) as tickets_30d,
        coalesce(ticket_windows.tickets_90d, 0) as tickets_90d,
        coalesce(ticket_windows.billing_tickets_90d, 0) as billing_tickets_90d
    from cutoffs
    left join usage_windows
        on usage_windows.customer_id = cutoffs.customer_id
        and usage_windows.as_of_date = cutoffs.activity_date
    left join payment_windows
        on payment_windows.customer_id = cutoffs.customer_id
        and payment_windows.as_of_date = cutoffs.activity_date
    left join ticket_windows
        on ticket_windows.customer_id = cutoffs.customer_id
        and ticket_windows.as_of_date = cutoffs.activity_date
),

{% endif %}

final as (
    select
        cast(as_of_date as date) as as_of_date,
        cast(customer_id as bigint) as customer_id,
        cast(plan_code as {{ type_varchar(16) }}) as plan_code,
        cast(monthly_price as decimal(12, 2)) as monthly_price,
        cast(region as {{ type_varchar(16) }}) as region,
        cast(acquisition_channel as {{ type_varchar(32) }}) as acquisition_channel,
        cast({{ dbt.datediff('signup_date', 'as_of_date', 'day') }} as integer) as tenure_days,
        cast(sessions_7d as integer) as sessions_7d,
        cast(sessions_30d as integer) as sessions_30d,
        cast(sessions_90d as integer) as sessions_90d,
        cast(minutes_30d as decimal(14, 2)) as minutes_30d,
        cast(active_days_7d as integer) as active_days_7d,
        cast(active_days_30d as integer) as active_days_30d,
        cast(sessions_7d / 7.0 - sessions_30d / 30.0 as decimal(12, 4)) as usage_trend_7d_vs_30d,
        cast(sessions_30d / 30.0 - sessions_90d / 90.0 as decimal(12, 4)) as usage_trend_30d_vs_90d,
        cast(coalesce({{ dbt.datediff('last_usage_date', 'as_of_date', 'day') }}, 90) as integer)
            as days_since_last_activity,
        cast(failed_payments_30d as integer) as failed_payments_30d,
        cast(failed_payments_90d as integer) as failed_payments_90d,
        cast(amount_paid_90d as decimal(12, 2)) as amount_paid_90d,
        cast(tickets_30d as integer) as tickets_30d,
        cast(tickets_90d as integer) as tickets_90d,
        cast(billing_tickets_90d as integer) as billing_tickets_90d
    from cutoff_features
)

select * from final
