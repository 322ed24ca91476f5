{#- One row per day from lo to hi inclusive, as a select-list expression over a one-row relation. -#}
{% macro date_series(lo, hi) -%}
    {{ return(adapter.dispatch('date_series', 'tidemark')(lo, hi)) }}
{%- endmacro %}

{% macro default__date_series(lo, hi) -%}
    cast(generate_series(cast({{ lo }} as timestamp), cast({{ hi }} as timestamp), interval '1 day') as date)
{%- endmacro %}

{% macro duckdb__date_series(lo, hi) -%}
    cast(unnest(generate_series(cast({{ lo }} as timestamp), cast({{ hi }} as timestamp), interval 1 day)) as date)
{%- endmacro %}

{% macro spark__date_series(lo, hi) -%}
    explode(sequence(cast({{ lo }} as date), cast({{ hi }} as date), interval 1 day))
{%- endmacro %}
