"""Development tooling, not pipeline stages: the demo, Airflow as a local service, a local S3 server."""
