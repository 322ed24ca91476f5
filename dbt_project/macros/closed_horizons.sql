{#-
  The (as_of_date, customer_id) rows of the CTE `rows` whose label horizon has closed: the loaded data
  (int_loaded_days_unioned) covers as_of_date + horizon days. With the start_date/end_date vars, only
  the rows whose horizon closes inside [start_date, end_date]: what an incremental label run labels.
  The label marts share it, so every label is emitted by the same rule.
-#}
{% macro closed_horizons(rows, horizon) %}
    select {{ rows }}.as_of_date, {{ rows }}.customer_id
    from {{ rows }}
    cross join (
        select max(loaded_date) as loaded_through
        from {{ ref('int_loaded_days_unioned') }}
    ) as watermark
    where {{ add_days(rows ~ '.as_of_date', horizon) }} <= watermark.loaded_through
    {% if date_var('start_date') %}
        and {{ add_days(rows ~ '.as_of_date', horizon) }} >= cast('{{ date_var("start_date") }}' as date)
    {% endif %}
    {% if date_var('end_date') %}
        and {{ add_days(rows ~ '.as_of_date', horizon) }} <= cast('{{ date_var("end_date") }}' as date)
    {% endif %}
{% endmacro %}
