{#-
  One row per customer: the newest churn score in ml.predictions (the latest as_of_date, and for that
  date the latest scoring run). ml.predictions is written by the score_batch DAG, not by dbt; before
  the first scoring run it does not exist, and this model is then built empty with the same columns.
-#}

{%- set predictions_source = source('ml', 'predictions') -%}
{%- set scored = adapter.get_relation(
        database=predictions_source.database,
        schema=predictions_source.schema,
        identifier=predictions_source.identifier
    ) if execute else none -%}

with

{% if scored is not none -%}
predictions as (
    select * from {{ predictions_source }}
),
{%- else -%}
predictions as (
    select
        cast(null as varchar) as entity_id,
        cast(null as date) as as_of_date,
        cast(null as varchar) as model_name,
        cast(null as varchar) as model_version,
        cast(null as double precision) as score,
        cast(null as integer) as predicted_label,
        cast(null as double precision) as threshold,
        cast(null as timestamp) as scored_at
    where 1 = 0
),
{%- endif %}

churn_predictions as (
    select * from predictions
    where model_name = '{{ var("churn_model_name", "churn") | replace("'", "''") }}'
),

ranked as (
    select
        cast(entity_id as bigint) as customer_id,
        cast(as_of_date as date) as as_of_date,
        model_name,
        model_version,
        score,
        predicted_label,
        threshold,
        scored_at,
        row_number() over (
            partition by entity_id
            order by as_of_date desc, scored_at desc, model_version desc
        ) as recency
    from churn_predictions
),

final as (
    select
        customer_id,
        as_of_date,
        model_name,
        model_version,
        score,
        predicted_label,
        threshold,
        scored_at
    from ranked
    where recency = 1
)

select * from final
