"""What the feature marts hold: row counts and date ranges, for `python -m ml features`."""

from __future__ import annotations

from datetime import date
from typing import Any

from ml.core.settings import Settings

FEATURES_TABLE = "marts.customer_features_daily"
LABELS_TABLE = "marts.churn_labels"


def describe_marts(settings: Settings, as_of: date | None = None) -> dict[str, Any]:
    """Row counts and date ranges of the feature, label and training marts; missing tables are named."""
    from ml.core.warehouse import Warehouse

    summary: dict[str, Any] = {"warehouse": settings.warehouse.url}
    wh_path = settings.warehouse.path
    if settings.warehouse.kind == "duckdb" and not wh_path.exists():
        summary["error"] = f"no warehouse at {wh_path}; load data first (`python -m ml simulate`)"
        return summary
    with Warehouse.connect(settings, read_only=True) as wh:

        def missing(table: str) -> dict[str, Any] | None:
            if wh.table_exists(table):
                return None
            return {"exists": False, "hint": "run `python -m ml dbt build` or the build_features DAG"}

        features = missing(FEATURES_TABLE)
        if features is None:
            hi = wh.scalar(f"select max(as_of_date) from {FEATURES_TABLE}")
            day = as_of or hi
            features = {
                "rows": wh.scalar(f"select count(*) from {FEATURES_TABLE}"),
                "min_as_of_date": wh.scalar(f"select min(as_of_date) from {FEATURES_TABLE}"),
                "max_as_of_date": hi,
                "as_of_date": day,
                "rows_on_as_of_date": wh.scalar(f"select count(*) from {FEATURES_TABLE} where as_of_date = '{day}'")
                if day else 0,
            }
        labels = missing(LABELS_TABLE)
        if labels is None:
            rate = wh.scalar(f"select avg(churned) from {LABELS_TABLE}")
            labels = {
                "rows": wh.scalar(f"select count(*) from {LABELS_TABLE}"),
                "positive_rate": None if rate is None else round(float(rate), 4),
            }
    summary.update({FEATURES_TABLE: features, LABELS_TABLE: labels})
    return summary

