"""Airflow glue: the assets, run intervals, pools and the one-time Airflow setup."""
