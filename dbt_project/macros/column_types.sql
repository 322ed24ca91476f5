{#-
  Type names that differ between warehouses. Spark has no `double precision` (it says `double`),
  and a bare `varchar` does not parse there: its text type is `string`.
-#}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'tidemark')()) }}
{%- endmacro %}

{% macro default__type_double() -%}
    double precision
{%- endmacro %}

{% macro spark__type_double() -%}
    double
{%- endmacro %}

{#-
  Text, of at most `length` characters where the warehouse keeps a length. Spark's cast reads
  varchar(n) as string and warns that it does so.
-#}
{% macro type_varchar(length=none) -%}
    {{ return(adapter.dispatch('type_varchar', 'tidemark')(length)) }}
{%- endmacro %}

{% macro default__type_varchar(length) -%}
    varchar{% if length is not none %}({{ length }}){% endif %}
{%- endmacro %}

{% macro spark__type_varchar(length) -%}
    string
{%- endmacro %}

{#-
  dbt's cast on Spark, which checks an enforced contract by casting null to each column's
  data_type: the spellings PostgreSQL and DuckDB keep in a contract (`varchar`, `double precision`)
  become Spark's own, so one contract serves every warehouse.
-#}
{% macro spark__cast(field, type) -%}
    {%- set spark_names = {'varchar': 'string', 'double precision': 'double'} -%}
    cast({{ field }} as {{ spark_names.get(type | trim | lower, type) }})
{%- endmacro %}
