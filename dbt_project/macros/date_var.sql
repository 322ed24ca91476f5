{#-
  The dbt var `name` as an ISO date string (YYYY-MM-DD), or none when it is unset. Anything else
  fails the run naming the var, so a var's text never reaches SQL unless it is a plain date.
-#}
{% macro date_var(name) -%}
    {%- set value = var(name, none) -%}
    {%- if value is none or value == '' -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set text = value | string -%}
    {%- if not modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', text) -%}
        {{ exceptions.raise_compiler_error(
            'var ' ~ name ~ ' is ' ~ text ~ ', not a date; use YYYY-MM-DD, e.g. 2025-01-31'
        ) }}
    {%- endif -%}
    {{ return(text) }}
{%- endmacro %}
