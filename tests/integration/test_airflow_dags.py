"""The DAGs for real: dag.test() runs of ingest_raw, then build_features, on a small simulated history.

Both run against the session's throwaway TIDEMARK_HOME (tests/conftest.py): Airflow's SQLite metadata
DB and a DuckDB warehouse; once more on PostgreSQL, as a user that has a password. Every dbt node runs
as its own task, in its own dbt process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from ml.core.settings import Settings, parse_warehouse_url
from ml.core.warehouse import Warehouse
from ml.features.marts import describe_marts
from tests.fixtures import PG_ADMIN_DSN, create_database, drop_database, parsed_dags

SIM = {"seed": 11, "customers": 300, "sim_start": "2025-01-01", "drift_date": "2025-01-25"}
BACKFILL = {"start": "2025-01-01", "end": "2025-02-09"}  # 40 days
BAD_DAYS = {"start": "2025-02-10", "end": "2025-02-14"}
FEATURES = "marts.customer_features_daily"


@pytest.fixture(scope="module")
def dags(airflow_settings):
    with parsed_dags() as parsed:
        yield parsed


def _asset_events(asset: str, run_id: str) -> list[dict]:
    """Extras of the events on `asset` that the DAG run `run_id` emitted, read from Airflow's metadata DB."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == asset, AssetEvent.source_run_id == run_id)
        )
        return list(session.scalars(query))


def _scheduled_by(asset: str) -> set[str]:
    """The DAGs that Airflow's metadata DB says an event on `asset` schedules."""
    from airflow.models.asset import AssetModel, DagScheduleAssetReference
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(DagScheduleAssetReference.dag_id)
            .join(AssetModel, AssetModel.id == DagScheduleAssetReference.asset_id)
            .where(AssetModel.name == asset)
        )
        return set(session.scalars(query))


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def _scalar(settings, sql: str):
    with Warehouse.connect(settings, read_only=True) as wh:
        return wh.scalar(sql)


def _feature_rows(settings, interval: dict) -> int:
    with Warehouse.connect(settings, read_only=True) as wh:
        if not wh.table_exists(FEATURES):
            return 0
        return wh.scalar(
            f"select count(*) from {FEATURES} where as_of_date between '{interval['start']}' and '{interval['end']}'"
        )


def test_airflow_init_creates_one_slot_pools_and_pins_cosmos_telemetry_off(airflow_settings):
    from airflow.models.pool import Pool

    assert {name: Pool.get_pool(name).slots for name in ("warehouse", "gpu")} == {"warehouse": 1, "gpu": 1}
    config = (airflow_settings.airflow_home / "airflow.cfg").read_text()
    assert "[cosmos]\nenable_telemetry = False\n" in config


def test_ingest_then_build_features_lands_raw_builds_marts_and_emits_the_assets(dags, airflow_settings):
    ingest = dags["ingest_raw"].test(run_conf={**SIM, **BACKFILL})
    assert ingest.state == "success", _states(ingest)
    days = _scalar(airflow_settings, "select count(distinct ingest_date) from raw.usage_events")
    first, last = (_scalar(airflow_settings, f"select {f}(ingest_date) from raw.usage_events") for f in ("min", "max"))
    assert (days, str(first), str(last)) == (40, BACKFILL["start"], BACKFILL["end"])
    assert _scalar(airflow_settings, "select count(distinct customer_id) from raw.customers") >= SIM["customers"]
    assert _asset_events("raw", ingest.run_id) == [BACKFILL]
    assert _scheduled_by("raw") == {"build_features"}

    build = dags["build_features"].test(run_conf=BACKFILL)
    states = _states(build)
    assert build.state == "success", {t: s for t, s in states.items() if s != "success"}
    assert set(states) == set(dags["build_features"].task_ids)
    assert set(states.values()) == {"success"}
    assert _asset_events("features.customer_features_daily", build.run_id) == [BACKFILL]

    as_of_days = _scalar(
        airflow_settings,
        f"select count(distinct as_of_date) from {FEATURES} "
        f"where as_of_date between '{BACKFILL['start']}' and '{BACKFILL['end']}'",
    )
    assert as_of_days == 40
    summary = describe_marts(airflow_settings)[FEATURES]
    assert summary["max_as_of_date"] == date.fromisoformat(BACKFILL["end"])
    assert SIM["customers"] * 0.8 < summary["rows_on_as_of_date"] < SIM["customers"] * 1.2


def test_a_bad_raw_row_stops_the_build_at_its_source_test_and_publishes_nothing(dags, airflow_settings, caplog):
    ingest = dags["ingest_raw"].test(run_conf={**SIM, **BAD_DAYS})
    assert ingest.state == "success", _states(ingest)
    bad_day = date.fromisoformat(BAD_DAYS["start"]) + timedelta(days=2)
    with Warehouse.connect(airflow_settings) as wh:  # the loader lands one customer twice
        wh.execute(
            "insert into raw.customers select customer_id, signup_date, plan_code, region, acquisition_channel, "
            f"cast('{bad_day}' as date) from raw.customers where ingest_date = '{SIM['sim_start']}' limit 1"
        )

    build = dags["build_features"].test(run_conf=BAD_DAYS)

    states = _states(build)
    assert build.state == "failed"
    # the one dbt build failed; the source's own task shows why, and nothing built on it ran
    assert states["dbt.dbt_producer_watcher"] == "failed"
    assert states["dbt.simulator_customers_source"] == "failed"
    assert states["dbt.stg_simulator__customers.run"] == "upstream_failed"
    assert states["dbt.customer_features_daily.run"] == "upstream_failed"
    assert states["publish_features"] == "upstream_failed"
    assert _feature_rows(airflow_settings, BAD_DAYS) == 0
    assert _asset_events("features.customer_features_daily", build.run_id) == []
    assert "Failure in test source_unique_simulator_customers_customer_id" in caplog.text


@pytest.fixture
def password_warehouse(tmp_path) -> Iterator[tuple[Settings, str]]:
    """A fresh PostgreSQL database owned by a new login role with a password; both dropped afterwards."""
    import psycopg
    from psycopg import sql

    role, password, database = f"tidemark_{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}", create_database()
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("create role {} login password {}").format(
                sql.Identifier(role), sql.Literal(password)))
            admin.execute(sql.SQL("alter database {} owner to {}").format(
                sql.Identifier(database), sql.Identifier(role)))
        url = f"postgresql://{role}:{password}@127.0.0.1:5432/{database}"
        yield Settings(home=tmp_path, warehouse=parse_warehouse_url(url)), password
    finally:
        drop_database(database)
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


@pytest.mark.postgres
def test_build_features_on_postgresql_hands_dbt_the_connections_user_and_password(
    airflow_settings, password_warehouse, monkeypatch
):
    """The password reaches every dbt process through the `tidemark_warehouse` connection.

    The server trusts local connections, so it would accept any password: the test records what each
    dbt process is given (its environment and the profile it reads) and checks who owns the marts.
    """
    from cosmos.hooks.subprocess import FullOutputSubprocessHook

    settings, password = password_warehouse
    given, run_command = [], FullOutputSubprocessHook.run_command

    def recording(self, command, env=None, **kwargs):
        profiles = Path(command[command.index("--profiles-dir") + 1]) / "profiles.yml"
        profile = yaml.safe_load(profiles.read_text())["tidemark"]["outputs"]["postgres"]
        given.append((profile["user"], profile["password"], (env or {}).get("COSMOS_CONN_POSTGRES_PASSWORD")))
        return run_command(self, command, env=env, **kwargs)

    monkeypatch.setattr(FullOutputSubprocessHook, "run_command", recording)
    days = {"start": "2025-01-01", "end": "2025-01-07"}
    with parsed_dags(settings) as dags:
        ingest = dags["ingest_raw"].test(run_conf={**SIM, **days})
        assert ingest.state == "success", _states(ingest)
        # The interval, the one dbt build, and the tasks of the customers source's tests and of its staging
        # model, which read their results from the build.
        subset = dags["build_features"].partial_subset(
            ["resolve_interval", "dbt.dbt_producer_watcher", "dbt.simulator_customers_source",
             "dbt.stg_simulator__customers.run"],
            include_upstream=False)
        build = subset.test(run_conf=days)

    states = _states(build)
    assert build.state == "success", {t: s for t, s in states.items() if s != "success"}
    role = settings.warehouse.user
    # one dbt process for the whole build, given the connection's user and password
    assert given == [(role, "{{ env_var('COSMOS_CONN_POSTGRES_PASSWORD') }}", password)]
    owner = _scalar(settings, "select viewowner from pg_views "
                              "where schemaname = 'staging' and viewname = 'stg_simulator__customers'")
    customers = _scalar(settings, "select count(*) from staging.stg_simulator__customers")
    assert owner == role and customers > 0


# -- watermarks -----------------------------------------------------------------------------------
LANDED = {"start": "2025-02-10", "end": "2025-02-16"}  # after the days above: BAD_DAYS again and two more


def _returned(run_id: str, task_id: str):
    """What a task of the DAG run `run_id` returned, read from its XCom in Airflow's metadata DB."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(select(XComModel).where(XComModel.run_id == run_id, XComModel.task_id == task_id,
                                                      XComModel.key == "return_value")).one()
        return XComModel.deserialize_value(row)


def test_a_build_with_no_conf_covers_the_days_up_to_the_loaded_watermark_not_yesterday_by_the_clock(dags):
    # Reloading BAD_DAYS also replaces the partition that holds the duplicated customer of the test above.
    ingest = dags["ingest_raw"].test(run_conf={**SIM, **LANDED})
    assert ingest.state == "success", _states(ingest)

    # The dbt tasks render their vars from this task's result; building them all would take minutes.
    subset = dags["build_features"].partial_subset(["resolve_interval"], include_upstream=False)
    build = subset.test()

    assert build.state == "success", _states(build)
    # The features reach BACKFILL's end, and none of LANDED has been built: the run covers all of LANDED.
    assert _returned(build.run_id, "resolve_interval") == LANDED


def test_a_build_asked_past_the_loaded_watermark_is_refused_naming_the_days_and_builds_nothing(
    dags, airflow_settings, capfd
):
    asked = {"start": "2025-02-15", "end": "2025-02-20"}
    build = dags["build_features"].test(run_conf=asked)

    states = _states(build)
    assert build.state == "failed"
    assert states["resolve_interval"] == "failed"
    assert not {t for t, s in states.items() if s in ("success", "failed", "running")} - {"resolve_interval"}, states
    assert _asset_events("features.customer_features_daily", build.run_id) == []
    assert _feature_rows(airflow_settings, {"start": "2025-02-17", "end": "2026-12-31"}) == 0
    assert ("refusing to build features for 2025-02-15..2025-02-20: 2025-02-17..2025-02-20 are after the loaded "
            "watermark 2025-02-16") in "".join(capfd.readouterr())  # the task's log, written by Airflow
