{#-
  One row per plan/price version of a customer's subscription, valid from its event until the next
  one (valid_to is null for the current version). Cancels end a subscription but do not version it.
-#}
with

subscription_events as (
    select * from {{ ref('stg_simulator__subscription_events') }}
    where event_type <> 'cancel'
),

versioned as (
    select
        customer_id,
        subscription_event_id,
        event_type,
        plan_code,
        monthly_price,
        event_at as valid_from,
        lead(event_at) over (
            partition by customer_id
            order by event_at, subscription_event_id
        ) as valid_to
    from subscription_events
)

select * from versioned
