{#-
  How an incremental mart keyed on as_of_date replaces the dates a run builds, as config arguments:
  delete those dates and insert the new rows where tables can delete rows; on Spark, whose Parquet
  tables cannot, the table is partitioned by as_of_date and a run overwrites the partitions of its
  rows (dynamic partition overwrite; Spark puts the partition column last). Either way a date the
  run emits no rows for keeps the rows it had.
-#}
{% macro as_of_date_replacement() -%}
    {{ return(adapter.dispatch('as_of_date_replacement', 'tidemark')()) }}
{%- endmacro %}

{% macro default__as_of_date_replacement() -%}
    {{ return({'incremental_strategy': 'delete+insert', 'unique_key': 'as_of_date'}) }}
{%- endmacro %}

{% macro spark__as_of_date_replacement() -%}
    {{ return({'incremental_strategy': 'insert_overwrite', 'partition_by': ['as_of_date'], 'file_format': 'parquet'}) }}
{%- endmacro %}
