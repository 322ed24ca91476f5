"""What the feature marts hold: row counts and date ranges, for `python -m ml features`."""

from __future__ import annotations

from datetime import date
from typing import Any

from ml.core.settings import Settings

FEATURES_TABLE = "marts.customer_features_daily"
LABELS_TABLE = "marts.churn_labels"


def describe_marts(settings: Settings, as_of: date | None = None) -> dict[str, Any]:
    """Row counts and date ranges of the feature, label and training marts; missing tables are named."""
    import sqlalchemy as sa

    from ml.core.sql import named_table
    from ml.core.warehouse import Warehouse

    summary: dict[str, Any] = {"warehouse": settings.warehouse.url}
    wh_path = settings.warehouse.path
    if settings.warehouse.kind == "duckdb" and not wh_path.exists():
        summary["error"] = f"no warehouse at {wh_path}; load data first (`python -m ml simulate`)"
        return summary
    features, labels = named_table(FEATURES_TABLE, "as_of_date"), named_table(LABELS_TABLE, "churned")
    count = sa.select(sa.func.count())
    with Warehouse.connect(settings, read_only=True) as wh:

        def missing(table: str) -> dict[str, Any] | None:
            if wh.table_exists(table):
                return None
            return {"exists": False, "hint": "run `python -m ml dbt build` or the build_features DAG"}

        feature_summary = missing(FEATURES_TABLE)
        if feature_summary is None:
            day_col = features.c.as_of_date
            hi = wh.scalar(sa.select(sa.func.max(day_col)))
            day = as_of or hi
            feature_summary = {
                "rows": wh.scalar(count.select_from(features)),
                "min_as_of_date": wh.scalar(sa.select(sa.func.min(day_col))),
                "max_as_of_date": hi,
                "as_of_date": day,
                "rows_on_as_of_date": wh.scalar(count.select_from(features).where(day_col == day)) if day else 0,
            }
        label_summary = missing(LABELS_TABLE)
        if label_summary is None:
            rate = wh.scalar(sa.select(sa.func.avg(labels.c.churned)))
            label_summary = {
                "rows": wh.scalar(count.select_from(labels)),
                "positive_rate": None if rate is None else round(float(rate), 4),
            }
    summary.update({FEATURES_TABLE: feature_summary, LABELS_TABLE: label_summary})
    return summary

