"""Batch scoring for real: a champion trained on a small simulated history scores it into ml.predictions.

The module builds one DuckDB warehouse (500 customers x 80 days, 14-day labels), trains a small
LightGBM champion into a local registry, and copies the feature mart into a fresh PostgreSQL
database, so the same rows are scored on both warehouses. The score_batch DAG is parsed with its
settings pointed at the DuckDB warehouse and run with dag.test().
"""

from __future__ import annotations

import signal
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ml.core.settings import Settings, parse_warehouse_url
from ml.core.spec import SPEC_DIR, load_spec
from ml.core.warehouse import Warehouse
from ml.features.dbt import run_dbt
from ml.ingest.load import load_days
from ml.ingest.simulate import SimConfig
from ml.training.data import to_frame
from tests.fixtures import kill_publish_in_its_transaction, parsed_dags, postgres_copy

SIM = SimConfig(seed=13, customers=500, start=date(2025, 1, 1), days=80, drift_date=None)
HORIZON = 14
FEATURES = "marts.customer_features_daily"
DAY = date(2025, 3, 10)
FIRST_RUN, SECOND_RUN = datetime(2025, 6, 1, 8, 0), datetime(2025, 6, 2, 8, 0)


def _test_spec(path) -> None:
    """churn.yaml with a 14-day horizon, one small LightGBM candidate, lenient floors and two shards."""
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data["label"]["horizon_days"] = HORIZON
    data["split"].update(validation_days=10, test_days=10, sample_every_days=1)
    lightgbm = next(c for c in data["candidates"] if c["kind"] == "lightgbm")
    lightgbm["params"].update(n_estimators=60)
    lightgbm.pop("search", None)
    data["candidates"] = [lightgbm]
    data["search"] = {"budget_s": 0, "max_trials": 1}
    data["promotion"].update(floors={"roc_auc": 0.5}, max_ece=0.5, bootstrap_samples=100, min_segment_rows=50)
    data["scoring"] = {"shards": 2, "batch_rows": 1_000}
    path.write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def world(tmp_path_factory, airflow_settings):
    """A DuckDB warehouse with features, a trained champion, the spec, and the score_batch DAG parsed on them."""
    from ml.training.steps import train

    home = tmp_path_factory.mktemp("scoring")
    settings = Settings(home=home, warehouse=parse_warehouse_url(f"duckdb:///{home / 'warehouse.duckdb'}"))
    load_days(SIM, None, settings=settings)
    built = run_dbt(["build"], settings=settings, vars={"horizon_days": HORIZON}, capture=True)
    assert built.success, built.output[-3000:]
    spec_path = home / "churn_test.yaml"
    _test_spec(spec_path)
    spec = load_spec(spec_path)
    outcome = train(spec, settings, as_of=SIM.end, run_id="champion", actor="test")["outcome"]
    assert outcome["champion_after"] == "v0001", outcome
    with parsed_dags(settings, spec_path, file="score_batch.py") as dags:
        yield {"settings": settings, "spec": spec, "spec_path": spec_path, "dag": dags["score_churn"]}


@pytest.fixture(scope="module")
def pg_world(world, tmp_path_factory):
    """A fresh PostgreSQL database holding a copy of the DuckDB feature mart, scored with the same registry."""
    with postgres_copy(world["settings"], FEATURES, tmp_path_factory.mktemp("scoring_pg")) as settings:
        yield {**world, "settings": settings}


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_world(request):
    """Each test using this runs on the DuckDB warehouse and on its PostgreSQL copy."""
    return request.getfixturevalue("world" if request.param == "duckdb" else "pg_world")


def _read(settings: Settings, sql: str) -> list[dict]:
    with Warehouse.connect(settings, read_only=True) as wh:
        return wh.read_arrow(sql).to_pylist()


def _partition(settings: Settings, day: date) -> dict:
    """Rows, distinct customers, the scoring times, and whether the customers are exactly the day's feature rows."""
    with Warehouse.connect(settings, read_only=True) as wh:
        where = f"model_name = 'churn' and as_of_date = date '{day}'"
        return {
            "rows": wh.scalar(f"select count(*) from ml.predictions where {where}"),
            "customers": wh.scalar(f"select count(distinct entity_id) from ml.predictions where {where}"),
            "scored_at": sorted(r["scored_at"] for r in wh.read_arrow(
                f"select distinct scored_at from ml.predictions where {where}").to_pylist()),
            "features": wh.scalar(f"select count(*) from {FEATURES} where as_of_date = date '{day}'"),
            "unmatched": wh.scalar(
                f"select count(*) from {FEATURES} f full join (select * from ml.predictions where {where}) p "
                f"on cast(f.customer_id as varchar) = p.entity_id where f.as_of_date = date '{day}' "
                f"and (p.entity_id is null or f.customer_id is null)"),
        }


def _shard_scores(paths) -> dict[str, float]:
    table = pa.concat_tables(pq.read_table(p) for p in paths)
    return dict(zip(table["entity_id"].to_pylist(), table["score"].to_pylist()))


def test_a_publish_killed_inside_its_transaction_keeps_the_old_rows_and_its_rerun_lands_once(any_world):
    from ml.scoring.score import score_days, score_shard

    settings, spec = any_world["settings"], any_world["spec"]
    score_days(spec, settings, [DAY], "kill-first", scored_at=FIRST_RUN)
    before = _partition(settings, DAY)
    assert before["rows"] == before["customers"] == before["features"] > 300
    assert before["scored_at"] == [FIRST_RUN] and before["unmatched"] == 0

    shards = [score_shard(spec, settings, [DAY], s, 2, "kill-second", SECOND_RUN) for s in range(2)]
    assert kill_publish_in_its_transaction(settings, any_world["spec_path"], shards, "kill-second") == -signal.SIGKILL

    after_kill = _partition(settings, DAY)
    assert after_kill == before

    from ml.scoring.score import publish_predictions

    published = publish_predictions(spec, settings, shards)
    assert published["rows"] == {DAY.isoformat(): before["features"]}
    rerun = _partition(settings, DAY)
    assert rerun == {**before, "scored_at": [SECOND_RUN]}


def test_overlapping_backfills_leave_one_row_per_customer_per_day(world):
    from ml.scoring.score import score_days

    settings, spec = world["settings"], world["spec"]
    first = [date(2025, 2, 1) + timedelta(days=i) for i in range(4)]
    second = [date(2025, 2, 3) + timedelta(days=i) for i in range(4)]
    score_days(spec, settings, first, "backfill-a", scored_at=FIRST_RUN)
    result = score_days(spec, settings, second, "backfill-b", scored_at=SECOND_RUN, shards=3)
    assert (result["start"], result["end"]) == ("2025-02-03", "2025-02-06")

    for day in sorted({*first, *second}):
        got = _partition(settings, day)
        assert got["rows"] == got["customers"] == got["features"] > 300, day
        assert got["unmatched"] == 0, day
        assert got["scored_at"] == [SECOND_RUN if day in second else FIRST_RUN], day


def test_three_shards_give_exactly_the_rows_and_scores_of_one(any_world):
    from ml.scoring.score import load_champion, score_shard

    settings, spec = any_world["settings"], any_world["spec"]
    day = date(2025, 3, 1)
    one = score_shard(spec, settings, [day], 0, 1, "one-shard", FIRST_RUN)
    three = [score_shard(spec, settings, [day], s, 3, "three-shards", FIRST_RUN) for s in range(3)]
    whole = _shard_scores([one["days"][day.isoformat()]["path"]])
    parts = [_shard_scores([r["days"][day.isoformat()]["path"]]) for r in three]
    assert all(len(p) > 50 for p in parts)  # every shard has rows, and no customer is in two shards
    assert sum(len(p) for p in parts) == len(whole) == one["days"][day.isoformat()]["rows"]
    assert {k: v for p in parts for k, v in p.items()} == whole

    # The scores are the model's own predict_proba on the same rows.
    model, manifest, version = load_champion(spec, settings)
    assert version == "v0001"
    with Warehouse.connect(settings, read_only=True) as wh:
        rows = wh.read_arrow(f"select * from {FEATURES} where as_of_date = date '{day}' order by customer_id")
    expected = model.predict_proba(to_frame(rows, model.features))[:, 1]
    assert [whole[str(c)] for c in rows["customer_id"].to_pylist()] == pytest.approx(expected, abs=1e-12)
    table = pq.read_table(one["days"][day.isoformat()]["path"])
    assert set(table["predicted_label"].to_pylist()) <= {0, 1}
    labels = [int(s >= manifest["threshold"]) for s in table["score"].to_pylist()]
    assert table["predicted_label"].to_pylist() == labels


@pytest.mark.postgres
def test_duckdb_and_postgresql_put_each_customer_in_the_same_shard_with_the_same_score(world, pg_world):
    from ml.scoring.score import score_shard

    day = date(2025, 3, 2)
    by_warehouse = []
    for w in (world, pg_world):
        shards = [score_shard(w["spec"], w["settings"], [day], s, 3, "portable", FIRST_RUN) for s in range(3)]
        by_warehouse.append([_shard_scores([r["days"][day.isoformat()]["path"]]) for r in shards])
    duck, pg = by_warehouse
    assert [sorted(p) for p in duck] == [sorted(p) for p in pg]
    for d, p in zip(duck, pg):
        assert p == pytest.approx(d, abs=1e-12)


def test_streaming_keeps_batches_bounded_and_a_failed_shard_leaves_its_last_file(any_world, monkeypatch):
    from ml.scoring.score import score_shard

    settings, spec = any_world["settings"], any_world["spec"]
    where = "as_of_date <= date '2025-01-10'"
    with Warehouse.connect(settings, read_only=True) as wh:
        sizes = [b.num_rows for b in wh.stream_arrow(f"select * from {FEATURES} where {where}", 700)]
        total = wh.scalar(f"select count(*) from {FEATURES} where {where}")
    assert max(sizes) == 700 and sum(sizes) == total and len(sizes) == -(-total // 700)

    day = date(2025, 3, 3)
    done = score_shard(spec, settings, [day], 0, 1, "interrupted", FIRST_RUN)
    path = done["days"][day.isoformat()]["path"]
    before = open(path, "rb").read()

    monkeypatch.setattr(Warehouse, "stream_arrow", _failing_after_one_batch(Warehouse.stream_arrow))
    with pytest.raises(ConnectionError, match="connection lost"):
        score_shard(spec, settings, [day], 0, 1, "interrupted", SECOND_RUN)
    assert open(path, "rb").read() == before
    assert sorted(p.name for p in (settings.home / "runs" / "score" / "interrupted" / day.isoformat()).iterdir()) \
        == ["shard-0.parquet"]


def _failing_after_one_batch(stream):
    def failing(self, sql, batch_rows):
        yield next(iter(stream(self, sql, 100)))
        raise ConnectionError("warehouse connection lost")

    return failing


def test_scoring_without_a_champion_says_to_train_first(tmp_path, world):
    from ml.registry.champion import NoChampion
    from ml.scoring.score import score_days

    settings = Settings(home=tmp_path, warehouse=world["settings"].warehouse)
    with pytest.raises(NoChampion, match=r"model 'churn' has no champion .* train one first"):
        score_days(world["spec"], settings, [DAY], "no-champion")


def _asset_events(asset: str, run_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (select(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                 .where(AssetModel.name == asset, AssetEvent.source_run_id == run_id))
        return list(session.scalars(query))


def test_score_batch_dag_scores_publishes_and_builds_the_latest_scores_mart(world):
    settings, dag = world["settings"], world["dag"]
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["features.customer_features_daily"]
    publish = dag.get_task("publish")
    assert [o.name for o in publish.outlets] == ["predictions.churn"]
    assert {dag.get_task(t).pool for t in ("score_shard", "publish", "refresh_scores_mart")} == {"warehouse"}
    start, end = SIM.end - timedelta(days=1), SIM.end

    run = dag.test(run_conf={"start": start.isoformat(), "end": end.isoformat()})
    states = {f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id: str(ti.state)
              for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert set(states) == {"resolve_interval", "score_shard[0]", "score_shard[1]", "publish", "refresh_scores_mart"}
    assert _asset_events("predictions.churn", run.run_id) == [
        {"start": start.isoformat(), "end": end.isoformat(), "model": "churn", "version": "v0001"}]
    for day in (start, end):
        got = _partition(settings, day)
        assert got["rows"] == got["customers"] == got["features"] > 300 and got["unmatched"] == 0
        assert len(got["scored_at"]) == 1

    latest = _read(settings, "select * from marts.customer_churn_scores_latest")
    scored = _read(settings, "select cast(entity_id as bigint) as customer_id, max(as_of_date) as as_of_date "
                             "from ml.predictions where model_name = 'churn' group by 1")
    assert len(latest) == len({r["customer_id"] for r in latest}) == len(scored)
    assert {r["customer_id"]: r["as_of_date"] for r in latest} == {r["customer_id"]: r["as_of_date"] for r in scored}
    assert {r["model_version"] for r in latest} == {"v0001"}
    assert sum(r["as_of_date"] == end for r in latest) == _partition(settings, end)["rows"]


def test_a_cached_champion_that_was_altered_is_fetched_again_before_it_scores(world):
    from ml.scoring.score import load_champion

    settings, spec = world["settings"], world["spec"]
    model, manifest, version = load_champion(spec, settings)
    cached = settings.home / "cache" / "models" / spec.name / version
    artifact = next(cached / name for name in manifest["files"] if name.startswith("model."))
    good = artifact.read_bytes()
    artifact.write_bytes(good[: len(good) // 2])  # truncated behind the cache's back

    reloaded, _, again = load_champion(spec, settings)
    assert again == version
    assert artifact.read_bytes() == good  # the registry's verified copy replaced it


# -- the features watermark -----------------------------------------------------------------------
def test_scoring_a_day_after_the_features_watermark_is_refused_and_writes_nothing(world, monkeypatch):
    from typer.testing import CliRunner

    from ml.cli import app
    from ml.scoring.score import run_folder

    settings, dag = world["settings"], world["dag"]
    late = SIM.end + timedelta(days=1)
    for key, value in {"TIDEMARK_HOME": str(settings.home), "TIDEMARK_WAREHOUSE_URL": settings.warehouse.url,
                       "TIDEMARK_REGISTRY_URI": settings.registry_uri}.items():
        monkeypatch.setenv(key, value)
    before = _read(settings, "select as_of_date, count(*) as n, max(scored_at) as at from ml.predictions "
                             "group by 1 order by 1") if _has_predictions(settings) else []

    result = CliRunner().invoke(app, ["score", "--spec", str(world["spec_path"]), "--date", late.isoformat()])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: refusing to score churn {late}: {late} is after the features "
                                    f"watermark {SIM.end} (the latest as-of date in {FEATURES})"), result.stderr
    assert not (settings.home / "runs" / "score" / f"cli-{late}-{late}").exists()

    asked = {"start": SIM.end.isoformat(), "end": (SIM.end + timedelta(days=2)).isoformat()}
    run = dag.test(run_conf=asked)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert run.state == "failed" and states["resolve_interval"] == "failed", states
    assert not run_folder(settings, run.run_id).exists()
    assert _asset_events("predictions.churn", run.run_id) == []
    after = _read(settings, "select as_of_date, count(*) as n, max(scored_at) as at from ml.predictions "
                            "group by 1 order by 1") if _has_predictions(settings) else []
    assert after == before


def test_a_score_batch_run_with_no_conf_scores_the_features_watermark_day(world):
    settings, dag = world["settings"], world["dag"]
    run = dag.test()
    states = {f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id: str(ti.state)
              for ti in run.get_task_instances()}
    assert run.state == "success", states
    day = SIM.end.isoformat()
    assert _asset_events("predictions.churn", run.run_id) == [{"start": day, "end": day, "model": "churn",
                                                         "version": "v0001"}]
    got = _partition(settings, SIM.end)
    assert got["rows"] == got["features"] > 300 and got["unmatched"] == 0


def _has_predictions(settings: Settings) -> bool:
    with Warehouse.connect(settings, read_only=True) as wh:
        return wh.table_exists("ml.predictions")
