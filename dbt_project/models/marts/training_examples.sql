{#- One row per customer per as_of_date with a closed label: features joined to labels, for training. -#}
{{ config(materialized='view') }}

with

features as (
    select * from {{ ref('customer_features_daily') }}
),

labels as (
    select as_of_date, customer_id, horizon_days, churned from {{ ref('churn_labels') }}
),

joined as (
    select
        features.*,
        labels.horizon_days,
        labels.churned
    from features
    inner join labels
        on labels.customer_id = features.customer_id
        and labels.as_of_date = features.as_of_date
)

select * from joined
