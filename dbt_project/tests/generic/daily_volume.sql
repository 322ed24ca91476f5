{#-
  Fails for every landed day of the run's range (as_of_bounds over `calendar`, the days that landed
  in any raw table) on which this table holds no rows, or fewer than volume_min_ratio (dbt var) times
  the median of its rows on the volume_trailing_days landed days before. The first day has no
  trailing history, so only an empty day fails there. Each failing row names the day, its rows, the
  trailing median and the watermark.
-#}
{% test daily_volume(model, column_name, calendar, calendar_column) %}
{%- set trailing_days = var('volume_trailing_days') | int -%}
{%- set min_ratio = var('volume_min_ratio') | float -%}
with

landed as (
    select distinct cast({{ calendar_column }} as date) as landed_date
    from {{ calendar }}
),

daily_rows as (
    select cast({{ column_name }} as date) as landed_date, count(*) as row_count
    from {{ model }}
    group by cast({{ column_name }} as date)
),

bounds as (
    {{ as_of_bounds(calendar, calendar_column) }}
),

volumes as (
    select
        landed.landed_date,
        coalesce(daily_rows.row_count, 0) as row_count,
        row_number() over (order by landed.landed_date) as day_number
    from landed
    left join daily_rows
        on daily_rows.landed_date = landed.landed_date
),

checked as (
    select volumes.*
    from volumes
    cross join bounds
    where volumes.landed_date between bounds.lo and bounds.hi
),

trailing_medians as (
    select
        checked.landed_date,
        percentile_cont(0.5) within group (order by cast(history.row_count as {{ type_double() }})) as trailing_median
    from checked
    inner join volumes as history
        on history.day_number < checked.day_number
        and history.day_number >= checked.day_number - {{ trailing_days }}
    group by checked.landed_date
),

final as (
    select
        checked.landed_date,
        checked.row_count,
        trailing_medians.trailing_median,
        (select max(landed_date) from landed) as loaded_through
    from checked
    left join trailing_medians
        on trailing_medians.landed_date = checked.landed_date
    where checked.row_count = 0
        or checked.row_count < {{ min_ratio }} * trailing_medians.trailing_median
)

select * from final
{% endtest %}
