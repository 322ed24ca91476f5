"""Features in the warehouse: running dbt, rendering it in Airflow with Cosmos, and what the marts hold."""
