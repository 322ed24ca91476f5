"""What the monitor_model DAG does over a range of days: drift, realized performance, retrain triggers."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

from ml.monitor import check_drift, realized_performance
from ml.orchestration import interval_days
from ml.registry import Registry
from ml.score import cached_version
from ml.settings import Settings
from ml.spec import ModelSpec
from ml.triggers import check_triggers

log = logging.getLogger(__name__)


class MonitoringError(RuntimeError):
    """Monitoring cannot run; the message says what is missing."""


def champion(spec: ModelSpec, settings: Settings) -> tuple[str, Path, dict]:
    """The champion's version, its verified local copy (cached per version) and its manifest."""
    registry = Registry.from_settings(settings)
    version = registry.alias(spec.name, "champion").version
    if version is None:
        raise MonitoringError(f"{spec.name!r} has no champion to monitor; run train_model (or `python -m ml train`) first")
    directory = cached_version(registry, spec.name, version, settings.home / "cache" / "models")
    return version, directory, registry.get(spec.name, version).manifest


def drift_for_interval(spec: ModelSpec, settings: Settings, interval: dict) -> list[dict]:
    version, directory, _ = champion(spec, settings)
    results = []
    for day in interval_days(interval):
        result = check_drift(spec, settings, day, model_version=version, version_dir=directory)
        log.info("%s %s: drift share %.2f (%s), report %s", spec.name, day, result["drift_share"],
                 "DRIFT" if result["dataset_drift"] else "stable", result["report_html"])
        results.append(_small(result))
    return results


def performance_for_interval(spec: ModelSpec, settings: Settings, interval: dict) -> list[dict]:
    """Realized metrics for the as-of dates whose labels close inside the interval."""
    horizon = timedelta(days=spec.label.horizon_days)
    found = []
    for day in interval_days(interval):
        result = realized_performance(spec, settings, day - horizon)
        if result is not None:
            found.append(result)
    return found


def decide_for_interval(spec: ModelSpec, settings: Settings, interval: dict) -> dict | None:
    version, _, manifest = champion(spec, settings)
    reference = manifest.get("metrics", {}).get(spec.primary_metric)
    for day in interval_days(interval):
        request = check_triggers(spec, settings, day, champion_version=version, champion_metric=reference)
        if request is not None:
            return request
    return None


def _small(result: dict) -> dict:
    """The XCom-sized part of a drift result."""
    keep = ("as_of_date", "model_version", "drift_share", "dataset_drift", "drifted_columns", "columns",
            "current_rows", "report_html", "report_json", "seconds")
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in result.items() if k in keep}
