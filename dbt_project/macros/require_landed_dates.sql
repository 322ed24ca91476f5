{#-
  Refuses to build as-of dates that never landed. At execution time it reads the landed days
  (`calendar`, one row per day present in any raw table) and fails the model, naming the dates and
  the watermark (the last landed day), when a date of the run's range (as_of_bounds) lies after the
  watermark, before the first landed day, or in a gap between landed days. The `lookback_days`
  before the range, which the mart also reads, must have no gap after the first landed day.
  `within_span` checks only the gaps between the first landed day and the watermark (for a mart
  that never reads past the watermark). Renders nothing.
-#}
{% macro require_landed_dates(calendar, date_column, lookback_days=0, within_span=false) %}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- set missing_ranges_query -%}
        with

        landed as (
            select distinct cast({{ date_column }} as date) as landed_date
            from {{ calendar }}
        ),

        span as (
            select min(landed_date) as first_date, max(landed_date) as watermark
            from landed
        ),

        bounds as (
            {{ as_of_bounds(calendar, date_column) }}
        ),

        requested as (
            select {{ date_series(subtract_days('lo', lookback_days | int), 'hi') }} as requested_date, lo
            from bounds
        ),

        missing as (
            select requested.requested_date
            from requested
            cross join span
            left join landed
                on landed.landed_date = requested.requested_date
            where landed.landed_date is null
                and (
                    requested.requested_date between span.first_date and span.watermark
                    {% if not within_span %}or requested.requested_date >= requested.lo{% endif %}
                )
        ),

        islands as (
            select
                requested_date,
                {{ subtract_days('requested_date', 'cast(row_number() over (order by requested_date) as integer)') }} as island
            from missing
        ),

        final as (
            select
                cast(min(islands.requested_date) as {{ type_varchar() }}) as first_missing,
                cast(max(islands.requested_date) as {{ type_varchar() }}) as last_missing,
                cast(max(span.watermark) as {{ type_varchar() }}) as watermark
            from islands
            cross join span
            group by islands.island
        )

        select * from final order by first_missing
    {%- endset -%}
    {%- set missing = run_query(missing_ranges_query).rows -%}
    {%- if missing | length > 0 -%}
        {%- set ranges = [] -%}
        {%- for row in missing -%}
            {%- do ranges.append(row[0] if row[0] == row[1] else row[0] ~ '..' ~ row[1]) -%}
        {%- endfor -%}
        {%- set watermark = missing[0][2] -%}
        {{ exceptions.raise_compiler_error(
            model.name ~ ': refusing as-of dates that have not landed: ' ~ ranges | join(', ')
            ~ '. The raw data is loaded through ' ~ (watermark or 'no day yet') ~ ' (the watermark). '
            ~ 'Load the missing days first, or build only dates that have landed (vars start_date, end_date).'
        ) }}
    {%- endif -%}
{% endmacro %}
