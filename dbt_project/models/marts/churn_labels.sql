{#-
  One row per customer per as_of_date whose label horizon has closed: churned = 1 when the customer
  cancels within horizon_days after as_of_date (in (as_of_date, as_of_date + horizon_days]).
  A date is emitted only once the raw data covers as_of_date + horizon_days. Incremental: a run
  labels the dates whose horizon closes inside [start_date, end_date], and fails when a landed span
  it reads has a missing day (macros/require_landed_dates.sql).
-#}
{{
    config(
        materialized='incremental',
        on_schema_change='fail',
        **as_of_date_replacement()
    )
}}

{%- set horizon = var('horizon_days') | int %}

{{ require_landed_dates(ref('int_loaded_days_unioned'), 'loaded_date', lookback_days=horizon, within_span=true) }}

with

features as (
    select as_of_date, customer_id from {{ ref('customer_features_daily') }}
),

customers as (
    select * from {{ ref('int_customers_joined') }}
),

closed as (
    {{ closed_horizons('features', horizon) }}
),

labelled as (
    select
        cast(closed.as_of_date as date) as as_of_date,
        cast(closed.customer_id as bigint) as customer_id,
        cast({{ horizon }} as integer) as horizon_days,
        cast(
            case
                when customers.cancel_date > closed.as_of_date
                    and customers.cancel_date <= {{ add_days('closed.as_of_date', horizon) }}
                then 1 else 0
            end
            as integer
        ) as churned,
        cast(customers.cancel_date as date) as cancel_date
    from closed
    inner join customers
        on customers.customer_id = closed.customer_id
)

select * from labelled
