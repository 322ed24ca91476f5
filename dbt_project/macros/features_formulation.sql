{#-
  How customer_features_daily computes its windows in this run: the var `features_formulation`,
  `windows`, `join` or `auto`. `auto` takes `join` when the run names at most
  `features_join_max_dates` as-of dates (start_date and end_date both set), else `windows`.
-#}
{% macro features_formulation() -%}
    {%- set chosen = var('features_formulation', 'auto') | string -%}
    {%- if chosen not in ['auto', 'windows', 'join'] -%}
        {{ exceptions.raise_compiler_error(
            'var features_formulation is ' ~ chosen ~ '; use auto, windows or join'
        ) }}
    {%- endif -%}
    {%- if chosen != 'auto' -%}
        {{ return(chosen) }}
    {%- endif -%}
    {%- set start_date = date_var('start_date') -%}
    {%- set end_date = date_var('end_date') -%}
    {%- if start_date and end_date -%}
        {%- set dates = (modules.datetime.date.fromisoformat(end_date)
                         - modules.datetime.date.fromisoformat(start_date)).days + 1 -%}
        {%- if dates <= var('features_join_max_dates') | int -%}
            {{ return('join') }}
        {%- endif -%}
    {%- endif -%}
    {{ return('windows') }}
{%- endmacro %}
