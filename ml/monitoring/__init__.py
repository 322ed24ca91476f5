"""Monitoring: drift, realized performance, retrain triggers, and the steps monitor_model runs."""
