"""Settings, model specs, the warehouse, SQL and the errors every stage shares."""
