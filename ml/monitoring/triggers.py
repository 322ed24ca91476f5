"""Retraining triggers: dataset drift on k days in a row, or realized performance below the champion's.

On a weekly or monthly grid, "days" are the grid's dates: k grid dates in a row, and the decay
window spans as many grid steps as it spans days on a daily grid.

The weekly schedule is the third trigger and lives in the train_<model> DAG. A request is recorded in the
warehouse table `ml.retrain_requests`; the cooldown reads that table, so one drift episode asks once.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
import sqlalchemy as sa

from ml.core.settings import Settings
from ml.core.spec import ModelSpec
from ml.core.tables import arrow_schema, retrain_requests
from ml.core.warehouse import Warehouse
from ml.monitoring.performance import (
    PERFORMANCE_METRICS,
    drift_history,
    performance_history,
)
from ml.training.metrics import METRICS

log = logging.getLogger(__name__)
REQUESTS_TABLE = retrain_requests.fullname
# Realized performance is averaged over the latest matured dates: one day's labels are too few to judge.
DECAY_WINDOW_DAYS = 7
DECAY_MIN_DAYS = 3


def last_request(settings: Settings, model: str, before: date) -> dict | None:
    """The latest request for `model` on or before `before`, if any."""
    with Warehouse.connect(settings, read_only=True) as wh:
        if not wh.table_exists(REQUESTS_TABLE):
            return None
        t = retrain_requests.c
        rows = wh.rows(sa.select(t.requested_on, t.reason).where(t.model_name == model, t.requested_on <= before)
                       .order_by(t.requested_on.desc()).limit(1))
    return rows[0] if rows else None


def check_triggers(spec: ModelSpec, settings: Settings, day: date, *, champion_version: str,
                   champion_metric: float | None, step_days: int = 1) -> dict | None:
    """A retrain request for `day` ({"reason", "as_of", "detail"}), or None; honours the cooldown.

    `step_days` is the grid's step: 1 on a daily grid, 7 weekly, 31 monthly (the most days apart two
    neighbouring grid dates can be)."""
    policy = spec.monitoring
    previous = last_request(settings, spec.name, day)
    if previous is not None and (day - _as_date(previous["requested_on"])).days < policy.cooldown_days:
        log.info("%s on %s: in the cooldown of the %s request of %s", spec.name, day, previous["reason"],
                 previous["requested_on"])
        return None
    k = policy.consecutive_days
    drift = drift_history(settings, spec.name, until=day, days=(k - 1) * step_days + 1)
    latest = {_as_date(r["as_of_date"]): r for r in drift}  # one dataset row per date and version
    streak = [latest[d] for d in sorted(latest)[-k:]]
    if len(streak) == k and _as_date(streak[-1]["as_of_date"]) == day and all(r["dataset_drift"] for r in streak):
        shares = {str(_as_date(r["as_of_date"])): round(r["drift_share"], 3) for r in streak}
        return _request(spec, settings, day, "drift", champion_version,
                        {"consecutive_days": policy.consecutive_days, "drift_share": shares,
                         "threshold": policy.drift_share})
    metric = spec.primary_metric
    if champion_metric is not None and metric in PERFORMANCE_METRICS:
        labelled_through = day - timedelta(days=spec.label.horizon_days)
        window = DECAY_WINDOW_DAYS * step_days
        realized = [r for r in performance_history(settings, spec.name, until=labelled_through, days=window)
                    if r.get(metric) is not None and r.get("model_version") == champion_version]
        if len(realized) >= DECAY_MIN_DAYS:
            value, limit = sum(r[metric] for r in realized) / len(realized), champion_metric
            worse = value < limit - policy.decay_tolerance if METRICS[metric].higher_is_better \
                else value > limit + policy.decay_tolerance
            if worse:
                return _request(spec, settings, day, "decay", champion_version,
                                {"metric": metric, "realized_mean": round(value, 4), "champion_test": round(limit, 4),
                                 "tolerance": policy.decay_tolerance, "label_dates": len(realized),
                                 "labels_through": labelled_through.isoformat()})
    return None


def _request(spec: ModelSpec, settings: Settings, day: date, reason: str, champion: str, detail: dict) -> dict:
    row = {"request_id": f"{spec.name}/{day.isoformat()}", "model_name": spec.name, "requested_on": day,
           "reason": reason, "detail": json.dumps(detail, sort_keys=True), "champion_version": champion,
           "requested_at": datetime.now(timezone.utc).replace(tzinfo=None)}
    table = pa.Table.from_pylist([row], schema=arrow_schema(retrain_requests))
    with Warehouse.connect(settings) as wh:
        wh.replace_partitions("request_id", row["request_id"], {REQUESTS_TABLE: table})
    log.warning("%s: retraining requested on %s because of %s: %s", spec.name, day, reason, detail)
    return {"model": spec.name, "reason": reason, "as_of": day.isoformat(), "detail": detail,
            "champion_version": champion}


def _as_date(value) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
