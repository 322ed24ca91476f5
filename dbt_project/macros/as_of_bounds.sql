{#-
  The as_of_date range a run builds: the start_date/end_date vars when given (a daily run or a
  backfill), else the dates the raw data spans (a full build). Renders a one-row select (lo, hi).
-#}
{% macro as_of_bounds(watermark_relation, date_column) -%}
    {%- set start_date = date_var('start_date') -%}
    {%- set end_date = date_var('end_date') -%}
    {%- if start_date and end_date -%}
    select cast('{{ start_date }}' as date) as lo, cast('{{ end_date }}' as date) as hi
    {%- else -%}
    select
        {% if start_date %}cast('{{ start_date }}' as date){% else %}min({{ date_column }}){% endif %} as lo,
        {% if end_date %}cast('{{ end_date }}' as date){% else %}max({{ date_column }}){% endif %} as hi
    from {{ watermark_relation }}
    {%- endif -%}
{%- endmacro %}
