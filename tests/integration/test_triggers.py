"""Retrain triggers on a real DuckDB file: drift k days in a row, realized decay, and the cooldown."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pyarrow as pa
import pytest

from ml.core.spec import load_spec
from ml.core.tables import arrow_schema, drift_metrics, model_performance
from ml.core.warehouse import Warehouse
from ml.monitoring.drift import DATASET_ROW, DRIFT_METRICS, MODEL_PERFORMANCE
from ml.monitoring.triggers import check_triggers

DRIFT_SCHEMA, PERFORMANCE_SCHEMA = arrow_schema(drift_metrics), arrow_schema(model_performance)

D0 = date(2025, 3, 1)
SPEC = load_spec("churn")  # horizon 30, consecutive_days 2, cooldown 14, decay_tolerance 0.05


def _drift(settings, flags: list[bool]) -> None:
    rows = [{"model_name": "churn", "model_version": "v0001", "as_of_date": D0 + timedelta(days=i),
             "column_name": DATASET_ROW, "drift_share": 0.15 if f else 0.05, "dataset_drift": f, "threshold": 0.1,
             "checked_at": datetime(2025, 1, 1)} for i, f in enumerate(flags)]
    with Warehouse.connect(settings) as wh:
        wh.ensure_table(DRIFT_METRICS, DRIFT_SCHEMA)
        wh.execute(f"delete from {DRIFT_METRICS}")
        for row in rows:
            wh.replace_partitions("as_of_date", row["as_of_date"],
                                  {DRIFT_METRICS: pa.Table.from_pylist([row], schema=DRIFT_SCHEMA)})


def _performance(settings, first: date, aucs: list[float], version: str = "v0001") -> None:
    rows = [{"model_name": "churn", "model_version": version, "as_of_date": first + timedelta(days=i), "rows": 1500,
             "positives": 90, "roc_auc": auc, "pr_auc": 0.2, "brier": 0.06, "computed_at": datetime(2025, 1, 1)}
            for i, auc in enumerate(aucs)]
    with Warehouse.connect(settings) as wh:
        wh.ensure_table(MODEL_PERFORMANCE, PERFORMANCE_SCHEMA)
        wh.execute(f"delete from {MODEL_PERFORMANCE}")
        wh.replace_partitions("model_name", "churn",
                              {MODEL_PERFORMANCE: pa.Table.from_pylist(rows, schema=PERFORMANCE_SCHEMA)})


def _check(settings, day: date, champion_metric: float | None = 0.70):
    return check_triggers(SPEC, settings, day, champion_version="v0001", champion_metric=champion_metric)


def test_one_drifted_day_is_not_enough_two_in_a_row_are(duckdb_settings):
    _drift(duckdb_settings, [False, True, False, True, True])
    assert _check(duckdb_settings, D0 + timedelta(days=1)) is None
    assert _check(duckdb_settings, D0 + timedelta(days=3)) is None
    request = _check(duckdb_settings, D0 + timedelta(days=4))
    assert request["reason"] == "drift" and request["as_of"] == "2025-03-05"
    assert request["detail"]["drift_share"] == {"2025-03-04": 0.15, "2025-03-05": 0.15}


def test_the_cooldown_holds_back_the_next_request_and_then_lets_it_through(duckdb_settings):
    _drift(duckdb_settings, [True] * 20)
    assert _check(duckdb_settings, D0 + timedelta(days=1))["as_of"] == "2025-03-02"
    for later in range(2, 15):  # cooldown_days = 14
        assert _check(duckdb_settings, D0 + timedelta(days=later)) is None, later
    assert _check(duckdb_settings, D0 + timedelta(days=15))["as_of"] == "2025-03-16"
    with Warehouse.connect(duckdb_settings, read_only=True) as wh:
        assert wh.scalar("select count(*) from ml.retrain_requests") == 2


@pytest.mark.parametrize("aucs, fires", [([0.62, 0.63, 0.61], True), ([0.67, 0.68, 0.66], False), ([0.60, 0.60], False)])
def test_decay_fires_when_the_mean_of_matured_days_falls_below_the_tolerance(duckdb_settings, aucs, fires):
    # labels of 02-01.. mature 30 days later; the check on 03-05 sees as-of dates up to 02-03
    _performance(duckdb_settings, date(2025, 2, 1), aucs)
    request = _check(duckdb_settings, date(2025, 3, 5), champion_metric=0.70)
    if fires:
        assert request["reason"] == "decay"
        assert request["detail"]["realized_mean"] == pytest.approx(sum(aucs) / 3, abs=1e-4)
        assert request["detail"]["champion_test"] == 0.70 and request["detail"]["label_dates"] == 3
    else:  # within 0.05 of the champion, or too few matured dates to judge
        assert request is None


def test_decay_ignores_the_realized_metric_of_another_version(duckdb_settings):
    _performance(duckdb_settings, date(2025, 2, 1), [0.55, 0.55, 0.55], version="v0000")
    assert _check(duckdb_settings, date(2025, 3, 5), champion_metric=0.70) is None


def test_on_a_weekly_grid_two_drifted_grid_dates_in_a_row_ask_and_decay_reads_a_window_of_weeks(duckdb_settings):
    """Grid dates a week apart are in a row; counted in calendar days, no two of them ever were."""
    weeks = [D0 + timedelta(weeks=i) for i in range(4)]
    rows = [{"model_name": "churn", "model_version": "v0001", "as_of_date": d, "column_name": DATASET_ROW,
             "drift_share": 0.15 if f else 0.05, "dataset_drift": f, "threshold": 0.1, "checked_at": datetime(2025, 1, 1)}
            for d, f in zip(weeks, [False, True, False, True])]
    with Warehouse.connect(duckdb_settings) as wh:
        wh.ensure_table(DRIFT_METRICS, DRIFT_SCHEMA)
        wh.replace_partitions("model_name", "churn", {DRIFT_METRICS: pa.Table.from_pylist(rows, schema=DRIFT_SCHEMA)})
    weekly = {"champion_version": "v0001", "champion_metric": None, "step_days": 7}
    assert check_triggers(SPEC, duckdb_settings, weeks[3], **weekly) is None  # the week before did not drift
    rows[2].update(drift_share=0.2, dataset_drift=True)
    with Warehouse.connect(duckdb_settings) as wh:
        wh.replace_partitions("model_name", "churn", {DRIFT_METRICS: pa.Table.from_pylist(rows, schema=DRIFT_SCHEMA)})
    assert check_triggers(SPEC, duckdb_settings, weeks[3], champion_version="v0001", champion_metric=None) is None
    request = check_triggers(SPEC, duckdb_settings, weeks[3], **weekly)
    assert request["reason"] == "drift"
    assert request["detail"]["drift_share"] == {str(weeks[2]): 0.2, str(weeks[3]): 0.15}

    # realized ROC-AUC of three weekly label dates, well below the champion's: decay over a window of weeks
    perf = [{"model_name": "pd", "model_version": "v0001", "as_of_date": date(2025, 1, 6) + timedelta(weeks=i),
             "rows": 1500, "positives": 90, "roc_auc": 0.6, "pr_auc": 0.2, "brier": 0.06,
             "computed_at": datetime(2025, 1, 1)} for i in range(3)]
    spec = SPEC.model_copy(update={"name": "pd"})
    with Warehouse.connect(duckdb_settings) as wh:
        wh.ensure_table(MODEL_PERFORMANCE, PERFORMANCE_SCHEMA)
        wh.replace_partitions("model_name", "pd", {MODEL_PERFORMANCE: pa.Table.from_pylist(perf, schema=PERFORMANCE_SCHEMA)})
    day = date(2025, 1, 20) + timedelta(days=SPEC.label.horizon_days)
    assert check_triggers(spec, duckdb_settings, day, champion_version="v0001", champion_metric=0.7) is None
    decay = check_triggers(spec, duckdb_settings, day, champion_version="v0001", champion_metric=0.7, step_days=7)
    assert decay["reason"] == "decay" and decay["detail"]["label_dates"] == 3
