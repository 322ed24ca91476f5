"""Which as-of dates a DAG run covers, and the simulator config a run asks for."""

from dataclasses import dataclass
from datetime import date, datetime, timezone
from types import SimpleNamespace

import pytest

from ml.ingest.steps import sim_config
from ml.orchestration.intervals import (
    OrchestrationError,
    interval_days,
    resolve_interval,
)


@dataclass(frozen=True)
class Asset:
    """Stands in for airflow.sdk.Asset, the keys of the triggering_asset_events mapping."""

    name: str
    uri: str


RAW = Asset(name="raw", uri="tidemark://warehouse/raw")
OTHER = Asset(name="features", uri="tidemark://warehouse/marts/customer_features_daily")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def event(start: str, end: str) -> SimpleNamespace:
    return SimpleNamespace(extra={"start": start, "end": end})


def test_conf_wins_over_asset_events_and_the_data_interval():
    events = {RAW: [event("2025-03-01", "2025-03-01")]}
    got = resolve_interval({"start": "2025-01-01", "end": "2025-01-31"}, events, utc(2025, 5, 1), utc(2025, 5, 2))
    assert got == {"start": "2025-01-01", "end": "2025-01-31"}


def test_conf_with_one_bound_means_one_day():
    assert resolve_interval({"start": "2025-02-03"}, None, None, None) == {"start": "2025-02-03", "end": "2025-02-03"}
    assert resolve_interval({"end": "2025-02-03"}, None, None, None) == {"start": "2025-02-03", "end": "2025-02-03"}


def test_bad_conf_is_refused_with_the_field_named():
    with pytest.raises(OrchestrationError, match="dag_run.conf start is '2025-13-01'.*YYYY-MM-DD"):
        resolve_interval({"start": "2025-13-01", "end": "2025-12-31"}, None, None, None)
    with pytest.raises(OrchestrationError, match="end 2025-01-01 before start 2025-02-01"):
        resolve_interval({"start": "2025-02-01", "end": "2025-01-01"}, None, None, None)


def test_raw_events_give_the_min_start_and_max_end_and_other_assets_are_ignored():
    events = {
        RAW: [event("2025-01-05", "2025-01-05"), event("2025-01-01", "2025-01-03"), SimpleNamespace(extra={})],
        OTHER: [event("2024-01-01", "2026-01-01")],
    }
    got = resolve_interval({}, events, utc(2025, 5, 1), utc(2025, 5, 2))
    assert got == {"start": "2025-01-01", "end": "2025-01-05"}


def test_events_as_plain_dicts_keyed_by_name_work_too():
    got = resolve_interval(None, {"raw": [{"extra": {"start": "2025-01-02", "end": "2025-01-04"}}]}, None, None)
    assert got == {"start": "2025-01-02", "end": "2025-01-04"}


def test_raw_events_without_dates_fall_back_to_the_data_interval():
    got = resolve_interval({}, {RAW: [SimpleNamespace(extra={})]}, utc(2025, 1, 5), utc(2025, 1, 6))
    assert got == {"start": "2025-01-05", "end": "2025-01-05"}


@pytest.mark.parametrize(
    "start, end, expected",
    [
        (utc(2025, 1, 5), utc(2025, 1, 6), ("2025-01-05", "2025-01-05")),  # a daily interval: its end is exclusive
        (utc(2025, 1, 5), utc(2025, 1, 8), ("2025-01-05", "2025-01-07")),  # three days
        (utc(2025, 1, 6), utc(2025, 1, 6), ("2025-01-05", "2025-01-05")),  # a point: the day that just ended
        (utc(2025, 1, 6, 13, 30), utc(2025, 1, 6, 13, 30), ("2025-01-05", "2025-01-05")),
        (utc(2025, 1, 5), utc(2025, 1, 5, 12), ("2025-01-05", "2025-01-05")),  # part of a day
    ],
)
def test_the_data_interval_maps_to_whole_as_of_days(start, end, expected):
    got = resolve_interval(None, None, start, end)
    assert (got["start"], got["end"]) == expected


def test_no_conf_no_events_and_no_interval_says_what_to_pass():
    with pytest.raises(OrchestrationError, match='dag_run.conf like {"start"'):
        resolve_interval(None, {}, None, None)


def test_interval_days_lists_every_day_inclusive():
    assert interval_days({"start": "2025-01-30", "end": "2025-02-02"}) == [
        date(2025, 1, 30), date(2025, 1, 31), date(2025, 2, 1), date(2025, 2, 2)
    ]


def test_sim_config_reaches_the_interval_end_from_the_params():
    cfg = sim_config({"seed": 3, "customers": 300, "sim_start": "2025-01-01", "drift_date": None}, date(2025, 2, 9))
    assert (cfg.seed, cfg.customers, cfg.start, cfg.end) == (3, 300, date(2025, 1, 1), date(2025, 2, 9))
    assert cfg.drift_date is None
    assert sim_config({}, date(2025, 1, 1)).drift_date == date(2025, 4, 1)  # defaults fill missing params
    with pytest.raises(OrchestrationError, match="before the simulation starts"):
        sim_config({"sim_start": "2025-01-01"}, date(2024, 12, 31))
