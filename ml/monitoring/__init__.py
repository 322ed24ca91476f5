"""Monitoring: drift, realized performance, retrain triggers, and the steps each monitor_<model> DAG runs."""
