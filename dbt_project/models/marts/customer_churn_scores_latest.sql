{#-
  One row per customer: the newest churn score in ml.predictions (the latest as_of_date, and for that
  date the latest scoring run), with the reasons behind it from ml.prediction_reasons when scoring
  explained that row. Both tables are written by the score_batch DAG, not by dbt; before the first
  scoring run they do not exist, and this model is then built from empty stand-ins with the same columns.
-#}

{%- set predictions_source = source('ml', 'predictions') -%}
{%- set reasons_source = source('ml', 'prediction_reasons') -%}
{%- set scored = adapter.get_relation(
        database=predictions_source.database,
        schema=predictions_source.schema,
        identifier=predictions_source.identifier
    ) if execute else none -%}
{%- set explained = adapter.get_relation(
        database=reasons_source.database,
        schema=reasons_source.schema,
        identifier=reasons_source.identifier
    ) if execute else none -%}

with

{% if scored is not none -%}
predictions as (
    select * from {{ predictions_source }}
),
{%- else -%}
predictions as (
    select
        cast(null as {{ type_varchar() }}) as entity_id,
        cast(null as date) as as_of_date,
        cast(null as {{ type_varchar() }}) as model_name,
        cast(null as {{ type_varchar() }}) as model_version,
        cast(null as {{ type_double() }}) as score,
        cast(null as integer) as predicted_label,
        cast(null as {{ type_double() }}) as threshold,
        cast(null as timestamp) as scored_at
    where 1 = 0
),
{%- endif %}

{% if explained is not none -%}
prediction_reasons as (
    select * from {{ reasons_source }}
),
{%- else -%}
prediction_reasons as (
    select
        cast(null as {{ type_varchar() }}) as entity_id,
        cast(null as date) as as_of_date,
        cast(null as {{ type_varchar() }}) as model_name,
        cast(null as {{ type_varchar() }}) as model_version,
        cast(null as integer) as reason_rank,
        cast(null as {{ type_varchar() }}) as feature,
        cast(null as {{ type_varchar() }}) as feature_value,
        cast(null as {{ type_double() }}) as contribution,
        cast(null as {{ type_double() }}) as base_value
    where 1 = 0
),
{%- endif %}

churn_predictions as (
    select * from predictions
    where model_name = '{{ var("churn_model_name", "churn") | replace("'", "''") }}'
),

churn_reasons as (
    select * from prediction_reasons
    where model_name = '{{ var("churn_model_name", "churn") | replace("'", "''") }}'
        and reason_rank <= 3
),

ranked as (
    select
        entity_id,
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

latest as (
    select * from ranked
    where recency = 1
),

latest_reasons as (
    -- the contribution in log-odds, rounded to 2 decimals, its sign always shown: "tickets_30d = 2 (+0.11)"
    select
        churn_reasons.entity_id,
        churn_reasons.reason_rank,
        cast(churn_reasons.contribution as decimal(18, 2)) as rounded,
        churn_reasons.feature || ' = ' || churn_reasons.feature_value as feature_value
    from latest
    inner join churn_reasons
        on latest.entity_id = churn_reasons.entity_id
        and latest.as_of_date = churn_reasons.as_of_date
        and latest.model_version = churn_reasons.model_version
),

reason_texts as (
    select
        entity_id,
        reason_rank,
        feature_value
        || ' ('
        || case when rounded < 0 then '-' else '+' end
        || cast(abs(rounded) as {{ type_varchar() }})
        || ')' as reason
    from latest_reasons
),

reasons_wide as (
    select
        entity_id,
        max(case when reason_rank = 1 then reason end) as reason_1,
        max(case when reason_rank = 2 then reason end) as reason_2,
        max(case when reason_rank = 3 then reason end) as reason_3
    from reason_texts
    group by entity_id
),

final as (
    select
        latest.customer_id,
        latest.as_of_date,
        latest.model_name,
        latest.model_version,
        latest.score,
        latest.predicted_label,
        latest.threshold,
        latest.scored_at,
        reasons_wide.reason_1,
        reasons_wide.reason_2,
        reasons_wide.reason_3
    from latest
    left join reasons_wide
        on latest.entity_id = reasons_wide.entity_id
)

select * from final
