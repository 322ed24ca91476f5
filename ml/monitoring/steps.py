"""What a monitor_<model> DAG runs over a range of days: drift, realized performance, retrain triggers.

A run pins one champion version in `plan_monitoring`; every later step works with that version, so a
promotion that lands while the run is going cannot mix two versions in one run.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any, Callable, Mapping

from ml.core.settings import Settings
from ml.core.spec import ModelSpec
from ml.monitoring.drift import MonitoringError, check_drift
from ml.monitoring.performance import realized_performance
from ml.monitoring.triggers import check_triggers
from ml.orchestration.intervals import interval_days
from ml.orchestration.watermarks import CADENCE_DAYS, resolve_features_interval
from ml.registry.champion import NoChampion, champion_version, resolve_champion

log = logging.getLogger(__name__)


def plan_monitoring(spec: ModelSpec, settings: Settings, interval: Mapping[str, str] | None) -> dict[str, Any]:
    """The days to check with the champion version that the whole run watches.

    Days after the features watermark are refused (a WatermarkError); no interval means its day.
    NothingToDo when no day of the interval is on a weekly or monthly grid.
    """
    try:
        version = champion_version(settings, spec.name)
    except NoChampion:
        raise MonitoringError(f"{spec.name!r} has no champion to monitor; run train_{spec.name} "
                              f"(or `python -m ml train --spec {spec.name}`) first") from None
    days = resolve_features_interval(spec, settings, interval, action=f"monitor {spec.name}")
    return {**days, "model": spec.name, "version": version}


def drift_for_interval(spec: ModelSpec, settings: Settings, plan: Mapping[str, str], *,
                       on_step: Callable[[str], None] | None = None) -> list[dict]:
    """Drift of each day of the plan against the pinned version's reference sample."""
    champion = resolve_champion(settings, spec.name, plan["version"])
    results = []
    for day in interval_days(plan):
        if on_step is not None:
            on_step(f"drift on {day}")
        result = check_drift(spec, settings, day, model_version=champion.version, version_dir=champion.directory)
        log.info("%s %s: drift share %.2f (%s), report %s", spec.name, day, result["drift_share"],
                 "DRIFT" if result["dataset_drift"] else "stable", result["report_html"])
        results.append(_small(result))
    return results


def performance_for_interval(spec: ModelSpec, settings: Settings, plan: Mapping[str, Any]) -> list[dict]:
    """Realized metrics for the label as-of dates whose horizon closes inside the interval.

    On a weekly or monthly grid the window reaches one grid step further back, so that each of the
    label's own as-of dates is scored by some run even when its horizon closes off the grid.
    """
    from ml.monitoring.performance import label_dates

    horizon = timedelta(days=spec.label.horizon_days)
    reach = timedelta(days=CADENCE_DAYS[plan.get("cadence", "daily")] - 1)
    start, end = date.fromisoformat(plan["start"]) - horizon - reach, date.fromisoformat(plan["end"]) - horizon
    found = []
    for day in label_dates(spec, settings, start, end):
        result = realized_performance(spec, settings, day)
        if result is not None:
            found.append(result)
    return found


def decide_for_interval(spec: ModelSpec, settings: Settings, plan: Mapping[str, str]) -> dict | None:
    """The first retrain request that a day of the plan raises for the pinned version, or None."""
    champion = resolve_champion(settings, spec.name, plan["version"])
    reference = champion.manifest.get("metrics", {}).get(spec.primary_metric)
    step = CADENCE_DAYS[plan.get("cadence", "daily")]
    for day in interval_days(plan):
        request = check_triggers(spec, settings, day, champion_version=champion.version, champion_metric=reference,
                                 step_days=step)
        if request is not None:
            return request
    return None


def monitor_days(spec: ModelSpec, settings: Settings, interval: Mapping[str, str] | None, *,
                 on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every step in order, in this process: what `python -m ml monitor` runs.

    `on_step(name)` is called as each step (and each day's drift check) starts.
    """
    step = on_step or (lambda name: None)
    plan = plan_monitoring(spec, settings, interval)
    drift = drift_for_interval(spec, settings, plan, on_step=on_step)
    step("realized performance")
    performance = performance_for_interval(spec, settings, plan)
    step("retrain decision")
    return {**plan, "drift": drift, "performance": performance,
            "request": decide_for_interval(spec, settings, plan)}


def _small(result: dict) -> dict:
    """The XCom-sized part of a drift result."""
    keep = ("as_of_date", "model_version", "drift_share", "dataset_drift", "drifted_columns", "columns",
            "current_rows", "report_html", "report_json", "seconds")
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in result.items() if k in keep}
