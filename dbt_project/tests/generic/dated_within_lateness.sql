{#-
  Fails for every row dated after its ingest_date partition, or more than allowed_lateness_days
  (dbt var) before it. Rows of the table's first partition may be dated any time before it: that
  partition holds the history the warehouse starts from, and no feature was built before it.
-#}
{% test dated_within_lateness(model, column_name, ingest_column='ingest_date') %}
{%- set lateness = var('allowed_lateness_days') | int -%}
with

events as (
    select
        cast({{ column_name }} as date) as event_date,
        cast({{ ingest_column }} as date) as ingest_date
    from {{ model }}
),

first_load as (
    select min(ingest_date) as first_ingest_date from events
),

final as (
    select
        events.event_date,
        events.ingest_date,
        {{ days_between('events.event_date', 'events.ingest_date') }} as lateness_days
    from events
    cross join first_load
    where events.event_date > events.ingest_date
        or (
            events.event_date < {{ subtract_days('events.ingest_date', lateness) }}
            and events.ingest_date > first_load.first_ingest_date
        )
)

select * from final
{% endtest %}
