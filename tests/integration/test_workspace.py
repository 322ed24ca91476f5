"""The monitoring workspace with real Evidently snapshots: a model's days land in its project in day order,
stamped with their as-of dates; a rerun of a day replaces its snapshot; the dashboard plots what the
snapshots hold; writers of the workspace take turns.

The drift snapshots are Evidently's DataDriftPreset runs of the drift check (ml.monitoring.drift) on small
synthetic frames whose numeric feature moves further from the reference each day.
"""

from __future__ import annotations

import threading
import time
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from ml.core.settings import Settings, parse_warehouse_url
from ml.core.spec import FeatureSchema, load_spec
from ml.monitoring.drift import _run_evidently
from ml.monitoring.workspace import (
    DRIFT,
    PERFORMANCE,
    WorkspaceError,
    _locked,
    add_drift_snapshot,
    add_performance_snapshot,
    ensure_dashboard,
    monitoring_workspace,
    project_id,
    runs,
    snapshot_id,
)

DAYS = [date(2025, 3, 1) + timedelta(days=i) for i in range(3)]
COLUMNS = FeatureSchema(("monthly_price", "score"), ("plan_code",))


@pytest.fixture(scope="module")
def spec():
    return load_spec("churn")


@pytest.fixture(scope="module")
def drift_snapshots():
    """One drift snapshot per day; the price moves half a standard deviation further each day."""
    rng = np.random.default_rng(5)

    def frame(n: int, shift: float) -> pd.DataFrame:
        return pd.DataFrame({"monthly_price": rng.normal(20 + 5 * shift, 5, n), "score": rng.beta(2, 8, n),
                             "plan_code": rng.choice(["basic", "plus", "pro"], n)})

    reference = frame(2_000, 0.0)
    return {day: _run_evidently(frame(800, 0.5 * i), reference, COLUMNS, 0.1, day) for i, day in enumerate(DAYS)}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path, warehouse=parse_warehouse_url(f"duckdb:///{tmp_path / 'warehouse.duckdb'}"))


def _workspace(settings: Settings):
    from evidently.ui.workspace import Workspace

    return Workspace(str(monitoring_workspace(settings)))


def _value(settings: Settings, model: str, sid: str, metric: str, **params) -> float:
    """A metric's value in a stored snapshot, read back through Evidently's own workspace API."""
    stored = _workspace(settings).get_run(project_id(model), sid)
    for result in stored.metric_results.values():
        found = result.metric_value_location.metric.params
        if found["type"].endswith(f":{metric}") and all(found.get(k) == v for k, v in params.items()):
            return float(result.value if metric != "DriftedColumnsCount" else result.share.value)
    raise AssertionError(f"no {metric} {params} in snapshot {sid}")


def test_a_models_days_land_as_runs_in_day_order_stamped_with_their_as_of_dates(settings, spec, drift_snapshots):
    added = {day: add_drift_snapshot(spec, settings, day, drift_snapshots[day], model_version="v0001")
             for day in (DAYS[2], DAYS[0], DAYS[1])}  # stored out of order, as a backfill might
    ws, project = _workspace(settings), project_id("churn")
    assert [p.name for p in ws.list_projects()] == ["churn"]
    assert sorted(str(s) for s in ws.list_runs(project)) == sorted(added.values())

    listed = runs(settings, "churn")
    assert [r["timestamp"] for r in listed] == [datetime(d.year, d.month, d.day) for d in DAYS]
    assert [r["as_of_date"] for r in listed] == [d.isoformat() for d in DAYS]
    assert all(r["kind"] == DRIFT and r["model_version"] == "v0001" for r in listed)
    assert listed[0]["tags"] == [DRIFT, "2025-03-01", "v0001"]
    # The stored values are the day's own: the price drifts further each day.
    stats = [_value(settings, "churn", added[d], "ValueDrift", column="monthly_price") for d in DAYS]
    assert stats[0] < stats[1] < stats[2], stats
    assert _value(settings, "churn", added[DAYS[0]], "DriftedColumnsCount") < \
        _value(settings, "churn", added[DAYS[2]], "DriftedColumnsCount")


def test_a_rerun_of_a_day_replaces_its_snapshot(settings, spec, drift_snapshots):
    for day in DAYS:
        add_drift_snapshot(spec, settings, day, drift_snapshots[day], model_version="v0001")
    again = add_drift_snapshot(spec, settings, DAYS[1], drift_snapshots[DAYS[1]], model_version="v0002")

    listed = runs(settings, "churn")
    assert len(listed) == 3 and len(_workspace(settings).list_runs(project_id("churn"))) == 3
    assert [r["model_version"] for r in listed] == ["v0001", "v0002", "v0001"]
    assert again == str(snapshot_id("churn", DRIFT, DAYS[1]))


def test_a_performance_snapshot_holds_the_days_realized_metrics(settings, spec, drift_snapshots):
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 3_000)
    p = np.clip(0.35 * y + 0.65 * rng.random(3_000), 0, 1)
    sid = add_performance_snapshot(spec, settings, DAYS[0], "v0001", y, p, 0.45)
    add_drift_snapshot(spec, settings, DAYS[0], drift_snapshots[DAYS[0]], model_version="v0001")

    assert _value(settings, "churn", sid, "RocAuc") == pytest.approx(roc_auc_score(y, p))
    for metric, expected in (("Precision", precision_score), ("Recall", recall_score), ("F1Score", f1_score)):
        assert _value(settings, "churn", sid, metric) == pytest.approx(expected(y, p >= 0.45)), metric
    assert _value(settings, "churn", sid, "MeanValue", column="label") == pytest.approx(y.mean())
    listed = runs(settings, "churn")
    assert [(r["kind"], r["as_of_date"]) for r in listed] == [(DRIFT, "2025-03-01"), (PERFORMANCE, "2025-03-01")]

    with pytest.raises(WorkspaceError, match="as many labels as scores"):
        add_performance_snapshot(spec, settings, DAYS[1], "v0001", y, p[:-1], 0.45)


def test_the_dashboard_plots_what_the_snapshots_hold_and_is_written_once(settings, spec, drift_snapshots):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 500)
    add_performance_snapshot(spec, settings, DAYS[0], "v0001", y, rng.random(500), None)
    add_drift_snapshot(spec, settings, DAYS[0], drift_snapshots[DAYS[0]], model_version="v0001")
    ws, project = _workspace(settings), project_id("churn")
    board = ws.get_dashboard(project)

    titles = [p.title for p in board.panels]
    assert titles == ["Dataset drift: share of drifted columns", "Drifted columns", "Drift of the score",
                      "Realized ROC AUC", "Precision, recall and F1 at the decision threshold",
                      "Realized positive rate and mean score"]
    assert [tab.title for tab in board.tabs] == ["Monitoring"] and board.tabs[0].panels == [p.id for p in board.panels]
    # Every series of every panel matches a metric of a stored snapshot with the panel's tag.
    stored = [ws.get_run(project, sid) for sid in ws.list_runs(project)]
    for panel in board.panels:
        for series in panel.values:
            assert any(set(series.tags) <= set(s.tags) and any(
                r.metric_value_location.metric.params["type"] == series.metric
                and all(str(r.metric_value_location.metric.params.get(k, v)) == v
                        for k, v in series.metric_labels.items() if k != "value_type")
                for r in s.metric_results.values()) for s in stored), (panel.title, series.metric)

    written = (monitoring_workspace(settings) / str(project) / "dashboard.json").stat().st_mtime_ns
    time.sleep(0.01)
    assert ensure_dashboard(settings, spec) == str(project)
    assert (monitoring_workspace(settings) / str(project) / "dashboard.json").stat().st_mtime_ns == written


def test_a_writer_waits_for_the_workspace_lock(settings, spec, drift_snapshots):
    workspace = monitoring_workspace(settings)
    target = workspace / str(project_id("churn")) / "snapshots" / f"{snapshot_id('churn', DRIFT, DAYS[0])}.json"
    with _locked(workspace):  # another writer, e.g. the monitoring task of another model, holds the lock
        writer = threading.Thread(target=add_drift_snapshot, args=(spec, settings, DAYS[0], drift_snapshots[DAYS[0]]),
                                  kwargs={"model_version": "v0001"})
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and not target.exists()
    writer.join(30)
    assert not writer.is_alive() and target.exists()
