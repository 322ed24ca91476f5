"""Which as-of dates a DAG run was asked for, and the simulated world a run asks for."""

from dataclasses import dataclass
from datetime import date
from types import SimpleNamespace

import pytest

from ml.ingest.world import DEFAULT_WORLD, World, WorldMismatch, asked
from ml.orchestration.intervals import (
    OrchestrationError,
    interval_days,
    requested_as_of,
    requested_interval,
)
from ml.orchestration.watermarks import (
    Landed,
    build_interval,
    features_interval,
    landed_span,
)


@dataclass(frozen=True)
class Asset:
    """Stands in for airflow.sdk.Asset, the keys of the triggering_asset_events mapping."""

    name: str
    uri: str


RAW = Asset(name="raw", uri="tidemark://warehouse/raw")
OTHER = Asset(name="features", uri="tidemark://warehouse/marts/customer_features_daily")


def event(start: str, end: str) -> SimpleNamespace:
    return SimpleNamespace(extra={"start": start, "end": end})


def test_conf_wins_over_asset_events():
    events = {RAW: [event("2025-03-01", "2025-03-01")]}
    got = requested_interval({"start": "2025-01-01", "end": "2025-01-31"}, events)
    assert got == {"start": "2025-01-01", "end": "2025-01-31"}


def test_conf_with_one_bound_means_one_day():
    assert requested_interval({"start": "2025-02-03"}, None) == {"start": "2025-02-03", "end": "2025-02-03"}
    assert requested_interval({"end": "2025-02-03"}, None) == {"start": "2025-02-03", "end": "2025-02-03"}


def test_bad_conf_is_refused_with_the_field_named():
    with pytest.raises(OrchestrationError, match="dag_run.conf start is '2025-13-01'.*YYYY-MM-DD"):
        requested_interval({"start": "2025-13-01", "end": "2025-12-31"}, None)
    with pytest.raises(OrchestrationError, match="end 2025-01-01 before start 2025-02-01"):
        requested_interval({"start": "2025-02-01", "end": "2025-01-01"}, None)


def test_raw_events_give_the_min_start_and_max_end_and_other_assets_are_ignored():
    events = {
        RAW: [event("2025-01-05", "2025-01-05"), event("2025-01-01", "2025-01-03"), SimpleNamespace(extra={})],
        OTHER: [event("2024-01-01", "2026-01-01")],
    }
    assert requested_interval({}, events) == {"start": "2025-01-01", "end": "2025-01-05"}


def test_events_as_plain_dicts_keyed_by_name_work_too():
    got = requested_interval(None, {"raw": [{"extra": {"start": "2025-01-02", "end": "2025-01-04"}}]})
    assert got == {"start": "2025-01-02", "end": "2025-01-04"}


def test_a_run_asked_for_no_days_gets_none_rather_than_a_day_off_the_clock():
    assert requested_interval(None, {RAW: [SimpleNamespace(extra={})]}) is None
    assert requested_interval({}, {}) is None


def test_a_training_run_asked_for_no_as_of_gets_none():
    assert requested_as_of({"as_of": "2025-03-14"}, None) == date(2025, 3, 14)
    events = {OTHER: [SimpleNamespace(extra={"as_of": "2025-03-22"}), SimpleNamespace(extra={"end": "2025-03-25"})]}
    assert requested_as_of(None, events) == date(2025, 3, 25)
    assert requested_as_of(None, None) is None and requested_as_of({}, {OTHER: [SimpleNamespace(extra={})]}) is None


def test_interval_days_lists_every_day_inclusive():
    assert interval_days({"start": "2025-01-30", "end": "2025-02-02"}) == [
        date(2025, 1, 30), date(2025, 1, 31), date(2025, 2, 1), date(2025, 2, 2)
    ]


def test_a_world_reaches_the_interval_end_and_params_override_only_what_they_set():
    world = DEFAULT_WORLD.with_params({"seed": 3, "customers": 300, "sim_start": "2025-01-01", "drift_date": "none"})
    cfg = world.config(date(2025, 2, 9))
    assert (cfg.seed, cfg.customers, cfg.start, cfg.end, cfg.drift_date) == (3, 300, date(2025, 1, 1), date(2025, 2, 9), None)
    # Empty values (what the trigger form sends for an untouched Param) keep the world's own.
    assert DEFAULT_WORLD.with_params({"seed": None, "customers": "", "start": "2025-01-01"}) == DEFAULT_WORLD
    assert asked({"seed": None, "customers": 5, "end": "2025-01-01"}) == {"customers": 5}
    with pytest.raises(WorldMismatch, match="before this world's first day"):
        World(sim_start=date(2025, 1, 1)).config(date(2024, 12, 31))


# -- watermarks -----------------------------------------------------------------------------------
def days(first: str, last: str) -> list[date]:
    return interval_days({"start": first, "end": last})


def test_a_run_asked_for_nothing_requests_no_days_whatever_its_data_interval():
    assert requested_interval({}, {RAW: [SimpleNamespace(extra={})]}) is None
    assert requested_interval(None, {OTHER: [event("2025-01-01", "2025-01-02")]}) is None
    assert requested_interval({"end": "2025-02-03"}, None) == {"start": "2025-02-03", "end": "2025-02-03"}


def test_the_loaded_watermark_is_the_last_day_before_the_first_gap():
    landed = days("2025-01-01", "2025-01-10") + days("2025-01-12", "2025-01-20")
    assert landed_span(reversed(landed)) == Landed(date(2025, 1, 1), date(2025, 1, 10))
    assert landed_span(days("2025-01-01", "2025-01-20") * 2) == Landed(date(2025, 1, 1), date(2025, 1, 20))
    assert landed_span([]) is None


LANDED = Landed(date(2025, 1, 1), date(2025, 2, 14))


@pytest.mark.parametrize("features, expected", [
    (None, ("2025-01-01", "2025-02-14")),  # no features yet: every landed day
    (date(2025, 2, 9), ("2025-02-10", "2025-02-14")),  # the days since the features watermark
    (date(2025, 2, 14), ("2025-02-14", "2025-02-14")),  # up to date: the watermark's day again
    (date(2026, 12, 4), ("2025-02-14", "2025-02-14")),  # features past the raw data do not move it
    (date(2024, 6, 1), ("2025-01-01", "2025-02-14")),  # nor do features before it
])
def test_a_build_asked_for_nothing_covers_the_days_up_to_the_loaded_watermark(features, expected):
    got = build_interval(None, LANDED, features)
    assert (got["start"], got["end"]) == expected


def test_a_build_asked_for_days_up_to_the_loaded_watermark_builds_them():
    asked = {"start": "2025-02-01", "end": "2025-02-14"}
    assert build_interval(asked, LANDED, date(2025, 1, 5)) == asked


def test_a_build_asked_past_the_loaded_watermark_names_the_days_and_the_watermark():
    with pytest.raises(OrchestrationError, match=r"refusing to build features for 2025-02-10\.\.2025-02-20: "
                                                 r"2025-02-15\.\.2025-02-20 are after the loaded watermark 2025-02-14"):
        build_interval({"start": "2025-02-10", "end": "2025-02-20"}, LANDED, None)
    with pytest.raises(OrchestrationError, match=r"2026-12-04: 2026-12-04 is after the loaded watermark 2025-02-14.*"
                                                 r"ask for days up to 2025-02-14"):
        build_interval({"start": "2026-12-04", "end": "2026-12-04"}, LANDED, None)
    with pytest.raises(OrchestrationError, match="no raw day has landed"):
        build_interval(None, None, None)


def test_scoring_is_bounded_by_the_features_watermark():
    relation, wm = "marts.customer_features_daily", date(2025, 3, 21)
    assert features_interval(None, wm, action="score churn", relation=relation) == {
        "start": "2025-03-21", "end": "2025-03-21"}
    asked = {"start": "2025-03-20", "end": "2025-03-21"}
    assert features_interval(asked, wm, action="score churn", relation=relation) == asked
    with pytest.raises(OrchestrationError, match=r"refusing to score churn 2025-03-21\.\.2025-03-23: 2025-03-22"
                                                 r"\.\.2025-03-23 are after the features watermark 2025-03-21 "
                                                 r"\(the latest as-of date in marts.customer_features_daily\)"):
        features_interval({"start": "2025-03-21", "end": "2025-03-23"}, wm, action="score churn", relation=relation)
    with pytest.raises(OrchestrationError, match="marts.customer_features_daily holds no feature rows"):
        features_interval(None, None, action="monitor churn", relation=relation)
