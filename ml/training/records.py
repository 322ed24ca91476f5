"""The warehouse copy of the gate's decisions: one row per candidate version in `ml.model_promotions`, and the
fairness per group of each published version's test rows in `ml.fairness_metrics`.

Decisions are recorded twice: as an immutable record in the registry and as this row, which warehouse
consumers query. The row is written after the registry's decision and alias move, and rewriting it is
harmless, so a promotion that a kill interrupted can write it again (ml/registry/promotion.py). The same
holds for a version's fairness rows, one replaceable partition per version.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pyarrow as pa

from ml.core.settings import Settings
from ml.core.tables import arrow_schema, model_promotions
from ml.core.warehouse import Warehouse
from ml.training.fairness import fairness_rows, write_fairness

PROMOTIONS_TABLE = model_promotions.fullname


def record_promotion(settings: Settings, row: dict) -> None:
    """Write one decision to ml.model_promotions, replacing an earlier row for the same candidate version.

    `decided_at` may be a datetime or an ISO 8601 string (as a registry record keeps it); default: now."""
    row = {
        **row,
        "promotion_id": f"{row['model_name']}/{row['candidate_version']}",
        "reasons": json.dumps(list(row["reasons"])),
        "decided_at": _utc(row.get("decided_at") or datetime.now(timezone.utc)),
    }
    schema = arrow_schema(model_promotions)
    table = pa.Table.from_pylist([{name: row.get(name) for name in schema.names}], schema=schema)
    with Warehouse.connect(settings) as wh:
        wh.replace_partitions("promotion_id", row["promotion_id"], {PROMOTIONS_TABLE: table})


def record_fairness(settings: Settings, *, model_name: str, model_version: str, as_of: date | str | None,
                    report: dict) -> int:
    """Write a published version's fairness report on its test rows (as_of: the version's as-of date) to
    ml.fairness_metrics as source 'test', replacing the version's earlier rows; returns the rows written.
    A report with no attributes writes nothing."""
    if not report:
        return 0
    rows = fairness_rows(report, model_name=model_name, model_version=model_version, as_of_date=as_of,
                         source="test", computed_at=_utc(datetime.now(timezone.utc)))
    return write_fairness(settings, rows, model_name=model_name, source="test", model_version=model_version)


def _utc(moment: datetime | str) -> datetime:
    """A naive UTC datetime, as the warehouse column stores it."""
    moment = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
