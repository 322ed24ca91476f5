"""The simulated clock and the runs that find nothing to do: real DAG runs (dag.test) on a DuckDB file.

A warehouse holds one simulated world, recorded at its first load. A scheduled ingest run loads the
day after the loaded watermark once the bootstrap has started the clock, and skips before that; it
never loads a day read off the wall clock. Scoring before the first champion, and scheduled training
before any features or with nothing newer than the champion's data, skip with the reason logged.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pytest

from ml.core.errors import NothingToDo
from ml.core.settings import Settings, parse_warehouse_url
from ml.core.spec import load_spec
from ml.ingest.world import WorldMismatch, fix_world, land, land_history, next_day, read_record, start_clock
from tests.fixtures import parsed_dags

WORLD = {"seed": 3, "customers": 60, "sim_start": "2025-01-01", "drift_date": "none"}
HISTORY = {"start": "2025-01-01", "end": "2025-01-10"}


@pytest.fixture
def home(airflow_settings, tmp_path) -> Settings:
    """The session's Airflow home with a warehouse of this test's own."""
    return Settings(home=airflow_settings.home, warehouse=parse_warehouse_url(f"duckdb:///{tmp_path / 'wh.duckdb'}"),
                    registry_uri=(tmp_path / "registry").as_uri())


def _loaded(settings: Settings) -> tuple:
    """(first day, last day, days, customers rows) in the raw tables; Nones before any load."""
    path = Path(settings.warehouse.path)
    if not path.exists():
        return (None, None, 0, 0)
    with duckdb.connect(str(path), read_only=True) as con:
        if not con.execute("select count(*) from information_schema.tables where table_schema = 'raw' "
                           "and table_name = 'usage_events'").fetchone()[0]:
            return (None, None, 0, 0)
        span = con.execute("select min(ingest_date), max(ingest_date), count(distinct ingest_date) "
                           "from raw.usage_events").fetchone()
        return (*span, con.execute("select count(*) from raw.customers").fetchone()[0])


def _states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_a_tick_skips_until_the_clock_starts_and_then_loads_the_day_after_the_watermark(home, capfd):
    with parsed_dags(home, file="ingest_raw.py") as dags:
        tick = dags["ingest_raw"].test()
        assert _states(tick) == {"load_raw": "skipped"}
        assert _loaded(home) == (None, None, 0, 0), "a tick on an empty warehouse loaded a day"
        assert "holds no simulated world yet" in "".join(capfd.readouterr())

        backfill = dags["ingest_raw"].test(run_conf={**WORLD, **HISTORY})
        assert _states(backfill) == {"load_raw": "success"}
        assert dags["ingest_raw"].test().state == "success" and _loaded(home)[1] == date(2025, 1, 10)
        assert "the simulated clock has not started" in "".join(capfd.readouterr())

        start_clock(home)
        for expected in (date(2025, 1, 11), date(2025, 1, 12)):
            assert _states(dags["ingest_raw"].test()) == {"load_raw": "success"}
            first, last, days, _ = _loaded(home)
            assert (first, last, days) == (date(2025, 1, 1), expected, (expected - first).days + 1)


def test_another_world_is_refused_naming_both_and_nothing_is_loaded(home):
    land(home, WORLD, HISTORY)
    before = _loaded(home)
    with pytest.raises(WorldMismatch) as refused:
        land(home, {"customers": 5_000, "sim_start": "2025-01-01"}, {"start": "2025-01-11", "end": "2025-01-11"})
    message = str(refused.value)
    assert "{seed=3, customers=60, sim_start=2025-01-01, drift_date=None}" in message
    assert "{seed=3, customers=5000, sim_start=2025-01-01, drift_date=None}" in message
    assert "customers differ" in message and str(home.warehouse.path) in message and "make airflow" in message
    assert _loaded(home) == before
    # No parameters, or the same ones, load more of the recorded world.
    assert fix_world(home, {"seed": None, "customers": ""}) == fix_world(home, WORLD) == read_record(home).world
    land(home, None, {"start": "2025-01-11", "end": "2025-01-11"})
    assert _loaded(home)[1:3] == (date(2025, 1, 11), 11)


def test_the_dag_refuses_another_world_too(home, capfd):
    land(home, WORLD, HISTORY)
    with parsed_dags(home, file="ingest_raw.py") as dags:
        run = dags["ingest_raw"].test(run_conf={"start": "2025-01-11", "end": "2025-01-11", "customers": 61})
    assert run.state == "failed"
    assert "WorldMismatch: this warehouse holds the simulated world" in "".join(capfd.readouterr())
    assert _loaded(home)[1] == date(2025, 1, 10)


def test_the_bootstrap_lands_the_history_once(home):
    landed = land_history(home, {**WORLD, "history_end": "2025-01-05"})
    assert (landed["start"], landed["end"], landed["days"]) == ("2025-01-01", "2025-01-05", 5)
    with pytest.raises(NothingToDo, match="the simulated clock has not started"):
        next_day(home)
    start_clock(home)
    assert next_day(home) == date(2025, 1, 6)
    with pytest.raises(NothingToDo, match="bootstrapped already"):
        land_history(home, {**WORLD, "history_end": "2025-01-05"})


def test_scoring_skips_before_the_first_champion(home, capfd):
    land(home, WORLD, HISTORY)
    with parsed_dags(home, file="score_batch.py") as dags:
        run = dags["score_churn"].test(run_conf=HISTORY)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert run.state == "success" and states["resolve_interval"] == "skipped"
    assert {s for t, s in states.items() if t != "resolve_interval"} <= {"skipped"}, states
    assert "nothing to score yet" in "".join(capfd.readouterr())


def test_scheduled_training_skips_before_any_feature(home, capfd):
    with parsed_dags(home, file="train_model.py") as dags:
        run = dags["train_churn"].test()
    states = _states(run)
    assert run.state == "success" and states["extract"] == "skipped", states
    assert "holds no features yet" in "".join(capfd.readouterr())


def test_a_scheduled_training_takes_the_features_watermark_and_skips_when_the_champion_has_it(home):
    from ml.training.steps import scheduled_as_of

    spec = load_spec("churn")
    with duckdb.connect(str(home.warehouse.path)) as con:
        con.execute("create schema marts")
        con.execute("create table marts.customer_features_daily as "
                    "select date '2025-03-01' + cast(i as integer) as as_of_date from range(14) t(i)")
    assert scheduled_as_of(spec, home, None) == date(2025, 3, 14)
    assert scheduled_as_of(spec, home, "2025-03-07") == date(2025, 3, 14)
    with pytest.raises(NothingToDo, match="trained as of 2025-03-14 and the features reach 2025-03-14"):
        scheduled_as_of(spec, home, "2025-03-14")
