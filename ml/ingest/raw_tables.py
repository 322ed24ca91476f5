"""The raw tables the simulator writes and the loader lands: their Arrow schemas and unique keys."""

from __future__ import annotations

import pyarrow as pa

RAW_SCHEMAS: dict[str, pa.Schema] = {
    "customers": pa.schema(
        [
            ("customer_id", pa.int64()),
            ("signup_date", pa.date32()),
            ("plan_code", pa.string()),
            ("region", pa.string()),
            ("acquisition_channel", pa.string()),
            ("ingest_date", pa.date32()),
        ]
    ),
    "subscription_events": pa.schema(
        [
            ("event_id", pa.int64()),
            ("customer_id", pa.int64()),
            ("event_type", pa.string()),
            ("event_at", pa.timestamp("us")),
            ("plan_code", pa.string()),
            ("monthly_price", pa.float64()),
            ("ingest_date", pa.date32()),
        ]
    ),
    "usage_events": pa.schema(
        [
            ("event_id", pa.int64()),
            ("customer_id", pa.int64()),
            ("usage_date", pa.date32()),
            ("sessions", pa.int32()),
            ("minutes", pa.float64()),
            ("ingest_date", pa.date32()),
        ]
    ),
    "payments": pa.schema(
        [
            ("payment_id", pa.int64()),
            ("customer_id", pa.int64()),
            ("attempted_at", pa.timestamp("us")),
            ("amount", pa.float64()),
            ("status", pa.string()),
            ("attempt", pa.int16()),
            ("ingest_date", pa.date32()),
        ]
    ),
    "support_tickets": pa.schema(
        [
            ("ticket_id", pa.int64()),
            ("customer_id", pa.int64()),
            ("opened_at", pa.timestamp("us")),
            ("category", pa.string()),
            ("priority", pa.string()),
            ("ingest_date", pa.date32()),
        ]
    ),
}

# The column that makes each raw table's rows unique.
RAW_KEYS = {
    "customers": "customer_id",
    "subscription_events": "event_id",
    "usage_events": "event_id",
    "payments": "payment_id",
    "support_tickets": "ticket_id",
}
