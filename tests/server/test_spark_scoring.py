"""Scoring on Spark for real: a champion scores and explains the same feature rows on DuckDB and on Spark.

The module simulates a small history on DuckDB, builds its feature mart with dbt, fits a small LightGBM champion
into the registry of its own TIDEMARK_HOME, and copies two days of the feature mart into a Spark warehouse
(the standalone cluster of tests/server/conftest.py, its metastore in the same home). Spark scores on its executors (mapInArrow) and publishes by
partition overwrite; the DuckDB runs are the reference. The Spark session is released before a child process
opens the same metastore, and the killed child's JVM is gone before this process opens it again.
"""

from __future__ import annotations

import math
import signal
import sys
from datetime import date, datetime
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from ml.core.settings import Settings
from ml.core.spark import release
from ml.core.spec import SPEC_DIR, ExplainSpec, ModelSpec, dbt_relation, feature_schema, load_spec
from ml.core.warehouse import Warehouse
from ml.features.dbt import run_dbt
from ml.ingest.load import load_days
from ml.ingest.simulate import SimConfig
from tests.fixtures import kill_publish_in_its_transaction, parsed_dags

SIM = SimConfig(seed=17, customers=300, start=date(2025, 1, 1), days=40, drift_date=None)
FEATURES = "marts.customer_features_daily"
TRAIN_UNTIL, EARLIER, DAY = date(2025, 1, 31), date(2025, 2, 5), date(2025, 2, 9)
FIRST_RUN, SECOND_RUN, KILLED_RUN = datetime(2025, 6, 1, 8, 0), datetime(2025, 6, 2, 8, 0), datetime(2025, 6, 3, 8, 0)


@pytest.fixture(scope="module")
def world(tmp_path_factory, spark_master: str):
    """DuckDB and Spark settings in one home (one registry, one champion), both holding EARLIER's and DAY's
    feature rows, and the spec; the Spark session is released afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        # The executors' Python workers run this interpreter, which has the model libraries.
        mp.setenv("PYSPARK_PYTHON", sys.executable)
        try:
            yield _spark_world(tmp_path_factory.mktemp("spark_scoring"), spark_master)
        finally:
            release()


def _spark_world(home: Path, master: str) -> dict:
    """The world of this module in `home` (see `world`)."""
    duck = Settings.from_env({"TIDEMARK_HOME": str(home)})
    spark = Settings.from_env({"TIDEMARK_HOME": str(home), "TIDEMARK_WAREHOUSE_URL": master})
    load_days(SIM, None, settings=duck)
    built = run_dbt(["run", "--select", "+customer_features_daily"], settings=duck, capture=True)
    assert built.success, built.output[-3000:]
    spec_path = home / "churn_spark.yaml"
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data["scoring"] = {"shards": 2, "batch_rows": 1_000}
    spec_path.write_text(yaml.safe_dump(data))
    spec = load_spec(spec_path)
    _register_champion(spec, duck, home / "fitted")
    with Warehouse.connect(duck, read_only=True) as wh:
        rows = wh.read_arrow(f"select * from {FEATURES} where as_of_date in (date '{EARLIER}', date '{DAY}')")
    with Warehouse.connect(spark) as wh:
        wh.replace_table(FEATURES, rows)
    return {"duckdb": duck, "spark": spark, "spec": spec, "spec_path": spec_path}


def _register_champion(spec: ModelSpec, settings: Settings, folder: Path) -> None:
    """A small LightGBM, fitted on the days up to TRAIN_UNTIL against a label drawn from inactivity and failed
    payments, published and promoted as the champion v0001."""
    from ml.registry import Registry
    from ml.training.candidates import build_candidate

    schema = feature_schema(spec, dbt_relation(settings.dbt_manifest, spec.features.relation))
    with Warehouse.connect(settings, read_only=True) as wh:
        rows = wh.read_arrow(f"select * from {FEATURES} where as_of_date <= date '{TRAIN_UNTIL}' "
                             "order by as_of_date, customer_id")
    idle = np.nan_to_num(rows.column("days_since_last_activity").to_numpy(zero_copy_only=False).astype(float), nan=30)
    failed = np.nan_to_num(rows.column("failed_payments_90d").to_numpy(zero_copy_only=False).astype(float))
    chance = 1 / (1 + np.exp(2.0 - 0.15 * idle - 0.8 * failed))
    label = (np.random.default_rng(0).random(len(chance)) < chance).astype(int)
    model = build_candidate("lightgbm", {"n_estimators": 40, "num_leaves": 15},
                            schema).fit(rows, label)
    model.save(folder)
    registry = Registry.from_settings(settings)
    version = registry.publish(spec.name, folder, {"candidate": "lightgbm", "threshold": 0.3}).version
    registry.promote(spec.name, version, actor="test", reason="the Spark scoring tests' champion")


def _day(settings: Settings, day: date) -> dict:
    """A day's predictions by entity, with their row count, its reasons by (entity, rank), with theirs, and
    its feature rows."""
    where = f"model_name = 'churn' and as_of_date = date '{day}'"
    with Warehouse.connect(settings, read_only=True) as wh:
        scores = wh.read_arrow(f"select * from ml.predictions where {where}").to_pylist()
        reasons = wh.read_arrow(f"select * from ml.prediction_reasons where {where}").to_pylist()
        features = wh.scalar(f"select count(*) from {FEATURES} where as_of_date = date '{day}'")
    return {"scores": {r["entity_id"]: r for r in scores}, "rows": len(scores),
            "reasons": {(r["entity_id"], r["reason_rank"]): r for r in reasons}, "reason_rows": len(reasons),
            "features": features}


def _top(scores: dict) -> list[str]:
    """The day's top tenth of scores, ties by entity id: the rows the spec's explain settings explain."""
    ranked = sorted(scores, key=lambda e: (-scores[e]["score"], e))
    return sorted(ranked[:math.ceil(0.1 * len(ranked))])


def _assert_same_reasons(got: dict, want: dict) -> None:
    """The same reason rows, keyed by (entity, rank): features and values alike, contributions within 1e-9."""
    assert sorted(got["reasons"]) == sorted(want["reasons"])
    for key, row in got["reasons"].items():
        other = want["reasons"][key]
        assert (row["feature"], row["feature_value"], row["model_version"], row["as_of_date"]) == (
            other["feature"], other["feature_value"], other["model_version"], other["as_of_date"])
        assert (row["contribution"], row["base_value"]) == pytest.approx(
            (other["contribution"], other["base_value"]), abs=1e-9)


def _jvms_of(spark_dir: Path) -> list[psutil.Process]:
    """The processes whose command line names `spark_dir`: the JVMs (drivers) started on that catalog."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(spark_dir) in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="module")
def published(world) -> dict:
    """EARLIER and DAY scored at FIRST_RUN on both warehouses: Spark's publish result and each warehouse's days
    as they were right after."""
    from ml.scoring.score import run_folder, score_days

    spec, duck, spark = world["spec"], world["duckdb"], world["spark"]
    score_days(spec, duck, [EARLIER, DAY], "duckdb", scored_at=FIRST_RUN)
    result = score_days(spec, spark, [EARLIER, DAY], "spark", scored_at=FIRST_RUN)
    return {"result": result, "shard_files": run_folder(spark, "spark").exists(),
            "duckdb": {day: _day(duck, day) for day in (EARLIER, DAY)},
            "spark": {day: _day(spark, day) for day in (EARLIER, DAY)}}


def test_spark_scores_and_explains_every_row_as_duckdb_does(world, published):
    assert not published["shard_files"]  # the shards wrote nothing: publish scored on the executors
    shipped = world["spark"].home / "cache" / "spark"
    assert [p.suffix for p in shipped.iterdir()] == [".zip"]  # the champion's files, sent to the executors

    for day in (EARLIER, DAY):
        want, got = published["duckdb"][day], published["spark"][day]
        assert got["rows"] == len(got["scores"]) == want["rows"] == got["features"] > 250
        assert published["result"]["rows"][day.isoformat()] == got["rows"]
        assert sorted(got["scores"]) == sorted(want["scores"])
        for entity, row in got["scores"].items():
            other = want["scores"][entity]
            assert row["score"] == pytest.approx(other["score"], abs=1e-9)
            assert {k: row[k] for k in row if k != "score"} == {k: other[k] for k in other if k != "score"}

        # The same reasons: three for each of the day's top tenth of scores, ties by entity id.
        assert got["reason_rows"] == len(got["reasons"]) == want["reason_rows"] == 3 * len(_top(got["scores"]))
        assert published["result"]["reasons"][day.isoformat()] == got["reason_rows"]
        assert sorted({entity for entity, _ in got["reasons"]}) == _top(got["scores"])
        _assert_same_reasons(got, want)


def test_explaining_every_row_or_none_gives_duckdbs_reasons_on_spark(world, published):
    from ml.scoring.score import score_days

    spec, duck, spark = world["spec"], world["duckdb"], world["spark"]
    every = spec.model_copy(update={"explain": ExplainSpec(top_k=2, rows="all")})
    for settings in (duck, spark):
        score_days(every, settings, [EARLIER], "every-row", scored_at=FIRST_RUN)
    want, got = _day(duck, EARLIER), _day(spark, EARLIER)
    assert got["reason_rows"] == len(got["reasons"]) == want["reason_rows"] > got["rows"]
    assert {entity for entity, _ in got["reasons"]} == set(got["scores"])
    _assert_same_reasons(got, want)

    result = score_days(spec.model_copy(update={"explain": ExplainSpec(top_k=0)}), spark, [EARLIER], "no-reasons",
                        scored_at=FIRST_RUN)
    cleared = _day(spark, EARLIER)
    assert result["reasons"] == {EARLIER.isoformat(): 0} and cleared["reason_rows"] == 0
    assert cleared["rows"] == cleared["features"]


def test_a_rerun_overwrites_its_days_partitions_and_leaves_one_row_per_entity(world, published):
    from ml.scoring.score import score_days

    first = published["spark"][DAY]
    result = score_days(world["spec"], world["spark"], [DAY], "rerun", scored_at=SECOND_RUN, shards=3)

    rerun, earlier = _day(world["spark"], DAY), _day(world["spark"], EARLIER)
    assert result["rows"] == {DAY.isoformat(): first["features"]}
    assert rerun["rows"] == len(rerun["scores"]) == rerun["features"]
    assert {r["scored_at"] for r in rerun["scores"].values()} == {SECOND_RUN}
    assert {e: r["score"] for e, r in rerun["scores"].items()} == {e: r["score"] for e, r in first["scores"].items()}
    assert rerun["reason_rows"] == len(rerun["reasons"]) == first["reason_rows"]
    # The other day's partition is not the rerun's: it stays as the first run wrote it.
    assert earlier["rows"] == earlier["features"]
    assert {r["scored_at"] for r in earlier["scores"].values()} == {FIRST_RUN}


def test_a_publish_killed_in_its_pause_leaves_old_or_new_rows_and_its_rerun_lands_once(world, published):
    from ml.scoring.score import publish_predictions, score_shard

    spec, spark = world["spec"], world["spark"]
    before = _day(spark, DAY)
    old = {r["scored_at"] for r in before["scores"].values()}
    assert before["rows"] == before["features"] and len(old) == 1

    shards = [score_shard(spec, spark, [DAY], s, 2, "kill", KILLED_RUN) for s in range(2)]
    release()  # the child opens the same metastore, which admits one process at a time
    spark_dir = spark.warehouse.spark_dir
    assert _jvms_of(spark_dir) == []
    assert kill_publish_in_its_transaction(spark, world["spec_path"], shards, "kill") == -signal.SIGKILL
    _, alive = psutil.wait_procs(_jvms_of(spark_dir), timeout=60)  # its JVM ends when its pipe from Python does
    assert alive == [], f"the killed publish's JVM still holds the metastore: {[p.pid for p in alive]}"

    after = _day(spark, DAY)
    # Each table holds one whole partition, the old or the new: one row per entity, one scoring time.
    assert after["rows"] == len(after["scores"]) == before["rows"]
    assert {r["scored_at"] for r in after["scores"].values()} in (old, {KILLED_RUN})
    assert after["reason_rows"] == len(after["reasons"]) == before["reason_rows"]

    result = publish_predictions(spec, spark, shards)
    rerun = _day(spark, DAY)
    assert result["rows"] == {DAY.isoformat(): before["features"]}
    assert rerun["rows"] == len(rerun["scores"]) == before["rows"]
    assert {r["scored_at"] for r in rerun["scores"].values()} == {KILLED_RUN}
    assert rerun["reasons"].keys() == before["reasons"].keys() and rerun["reason_rows"] == before["reason_rows"]


def test_the_score_dag_runs_unchanged_on_spark_and_scores_in_its_publish_step(world, published, airflow_settings):
    from ml.scoring.score import run_folder

    spark = world["spark"]
    with parsed_dags(spark, world["spec_path"], file="score_batch.py") as dags:
        run = dags["score_churn"].test(run_conf={"start": DAY.isoformat(), "end": DAY.isoformat()})
    states = {f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id: str(ti.state)
              for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert set(states) == {"resolve_interval", "score_shard[0]", "score_shard[1]", "publish", "refresh_scores_mart"}
    assert not run_folder(spark, run.run_id).exists()  # the shard steps said so and wrote nothing

    got = _day(spark, DAY)
    assert got["rows"] == len(got["scores"]) == got["features"]
    assert len({r["scored_at"] for r in got["scores"].values()}) == 1
    assert got["reason_rows"] == len(got["reasons"]) == published["spark"][DAY]["reason_rows"]
    with Warehouse.connect(spark, read_only=True) as wh:
        latest = wh.read_arrow("select customer_id, as_of_date from marts.customer_churn_scores_latest").to_pylist()
    assert {str(r["customer_id"]) for r in latest if r["as_of_date"] == DAY} == set(got["scores"])
