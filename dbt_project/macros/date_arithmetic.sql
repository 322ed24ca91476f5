{#-
  Whole days added to or taken from a date, as a date. PostgreSQL and DuckDB add an integer to a
  date directly; Spark reads `date + int` as an interval sum and spells it date_add/date_sub.
-#}
{% macro add_days(date_expr, days) -%}
    {{ return(adapter.dispatch('add_days', 'tidemark')(date_expr, days)) }}
{%- endmacro %}

{% macro default__add_days(date_expr, days) -%}
    {{ date_expr }} + {{ days }}
{%- endmacro %}

{% macro spark__add_days(date_expr, days) -%}
    date_add({{ date_expr }}, {{ days }})
{%- endmacro %}

{% macro subtract_days(date_expr, days) -%}
    {{ return(adapter.dispatch('subtract_days', 'tidemark')(date_expr, days)) }}
{%- endmacro %}

{% macro default__subtract_days(date_expr, days) -%}
    {{ date_expr }} - {{ days }}
{%- endmacro %}

{% macro spark__subtract_days(date_expr, days) -%}
    date_sub({{ date_expr }}, {{ days }})
{%- endmacro %}

{#- The whole days from `earlier` to `later` (negative when later comes first), as an integer. -#}
{% macro days_between(earlier, later) -%}
    {{ return(adapter.dispatch('days_between', 'tidemark')(earlier, later)) }}
{%- endmacro %}

{% macro default__days_between(earlier, later) -%}
    {{ later }} - {{ earlier }}
{%- endmacro %}

{% macro spark__days_between(earlier, later) -%}
    datediff({{ later }}, {{ earlier }})
{%- endmacro %}
