"""Tidemark: a workflow-orchestrated batch ML system (Airflow, dbt, a warehouse, a model registry)."""

__version__ = "0.1.0"
