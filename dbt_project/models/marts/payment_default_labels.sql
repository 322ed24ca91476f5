{#-
  One row per customer per as_of_date whose next bill has closed. The next bill is the customer's first
  first-attempt payment dated in (as_of_date, as_of_date + payment_default_horizon_days]; defaulted = 1
  when its retry (the customer's next payment, an attempt 2, inside the same horizon) failed too, 0 when
  the bill was paid on the first attempt or on the retry.
  No row when no bill came due (the customer cancelled before it) or when a failed first attempt has no
  retry inside the horizon (the customer cancelled in between): neither bill reached an outcome.
  A date is emitted only once the raw data covers as_of_date + payment_default_horizon_days. Incremental
  like churn_labels: a run labels the dates whose horizon closes inside [start_date, end_date], and fails
  when a landed span it reads has a missing day (macros/require_landed_dates.sql).
-#}
{{
    config(
        materialized='incremental',
        on_schema_change='fail',
        **as_of_date_replacement()
    )
}}

{%- set horizon = var('payment_default_horizon_days') | int %}

{{ require_landed_dates(ref('int_loaded_days_unioned'), 'loaded_date', lookback_days=horizon, within_span=true) }}

with

features as (
    select as_of_date, customer_id from {{ ref('customer_features_daily') }}
),

payments as (
    select * from {{ ref('stg_simulator__payments') }}
),

closed as (
    {{ closed_horizons('features', horizon) }}
),

{#- Each bill (a first attempt) with its retry: the customer's next payment, when that is an attempt 2. -#}
sequenced as (
    select
        customer_id,
        attempted_date,
        attempt_number,
        payment_status,
        lead(attempt_number) over customer_payments as next_attempt_number,
        lead(attempted_date) over customer_payments as next_attempted_date,
        lead(payment_status) over customer_payments as next_payment_status
    from payments
    window customer_payments as (partition by customer_id order by attempted_date, attempt_number, payment_id)
),

bills as (
    select
        customer_id,
        attempted_date as bill_date,
        payment_status,
        case when next_attempt_number = 2 then next_attempted_date end as retry_date,
        case when next_attempt_number = 2 then next_payment_status end as retry_status
    from sequenced
    where attempt_number = 1
),

next_bills as (
    select
        closed.as_of_date,
        closed.customer_id,
        min(bills.bill_date) as bill_date
    from closed
    inner join bills
        on bills.customer_id = closed.customer_id
        and bills.bill_date > closed.as_of_date
        and bills.bill_date <= {{ add_days('closed.as_of_date', horizon) }}
    group by closed.as_of_date, closed.customer_id
),

labelled as (
    select
        cast(next_bills.as_of_date as date) as as_of_date,
        cast(next_bills.customer_id as bigint) as customer_id,
        cast({{ horizon }} as integer) as horizon_days,
        cast(case when bills.payment_status = 'failed' and bills.retry_status = 'failed' then 1 else 0 end as integer)
            as defaulted,
        cast(next_bills.bill_date as date) as bill_date
    from next_bills
    inner join bills
        on bills.customer_id = next_bills.customer_id
        and bills.bill_date = next_bills.bill_date
    where bills.payment_status = 'succeeded'
        or bills.retry_date <= {{ add_days('next_bills.as_of_date', horizon) }}
)

select * from labelled
