{#-
  One row per customer with when (if ever) they cancelled. The cancel date is used downstream only
  to decide whether a customer is still active on an as_of_date (cancel_date > as_of_date), which
  gives the same answer whether or not later events exist, and to build labels.
-#}
with

customers as (
    select * from {{ ref('stg_simulator__customers') }}
),

subscription_events as (
    select * from {{ ref('stg_simulator__subscription_events') }}
),

cancellations as (
    select
        customer_id,
        min(event_at) as cancelled_at
    from subscription_events
    where event_type = 'cancel'
    group by customer_id
),

joined as (
    select
        customers.customer_id,
        customers.signup_date,
        customers.signup_plan_code,
        customers.region,
        customers.acquisition_channel,
        cancellations.cancelled_at,
        cast(cancellations.cancelled_at as date) as cancel_date
    from customers
    left join cancellations
        on customers.customer_id = cancellations.customer_id
)

select * from joined
