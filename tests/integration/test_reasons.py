"""Reason codes for real: a LightGBM champion trained on a small simulated history scores and explains it.

The module builds one DuckDB warehouse (500 customers x 80 days, 14-day labels), trains a small champion into
a local registry, and copies the feature mart into a fresh PostgreSQL database, so the same rows are scored,
explained and shown by the scores mart on both warehouses.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime

import pytest
import yaml

from ml.core.settings import Settings, parse_warehouse_url
from ml.core.spec import SPEC_DIR, ExplainSpec, ModelSpec, load_spec
from ml.core.warehouse import Warehouse
from ml.features.dbt import run_dbt
from ml.ingest.load import load_days
from ml.ingest.simulate import SimConfig
from tests.fixtures import kill_publish_in_its_transaction, postgres_copy

SIM = SimConfig(seed=13, customers=500, start=date(2025, 1, 1), days=80, drift_date=None)
HORIZON = 14
FEATURES = "marts.customer_features_daily"
DAY, EARLIER = date(2025, 3, 10), date(2025, 3, 5)
FIRST_RUN, SECOND_RUN = datetime(2025, 6, 1, 8, 0), datetime(2025, 6, 2, 8, 0)
REASON = re.compile(r"^[a-z0-9_]+ = \S+ \([+-]\d+\.\d\d\)$")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A DuckDB warehouse with features, a trained champion and its spec (two shards, default explain settings)."""
    from ml.training.steps import train

    home = tmp_path_factory.mktemp("reasons")
    settings = Settings(home=home, warehouse=parse_warehouse_url(f"duckdb:///{home / 'warehouse.duckdb'}"))
    load_days(SIM, None, settings=settings)
    built = run_dbt(["build"], settings=settings, vars={"horizon_days": HORIZON}, capture=True)
    assert built.success, built.output[-3000:]
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data["label"]["horizon_days"] = HORIZON
    data["split"].update(validation_days=10, test_days=10, sample_every_days=1)
    lightgbm = next(c for c in data["candidates"] if c["kind"] == "lightgbm")
    lightgbm["params"].update(n_estimators=60)
    lightgbm.pop("search", None)
    data.update(candidates=[lightgbm], search={"budget_s": 0, "max_trials": 1},
                scoring={"shards": 2, "batch_rows": 1_000})
    data["promotion"].update(floors={"roc_auc": 0.5}, max_ece=0.5, bootstrap_samples=100, min_segment_rows=50)
    spec_path = home / "churn_test.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    spec = load_spec(spec_path)
    assert spec.explain == ExplainSpec(top_k=3, rows="top_fraction", fraction=0.1)
    outcome = train(spec, settings, as_of=SIM.end, run_id="champion", actor="test")["outcome"]
    assert outcome["champion_after"] == "v0001", outcome
    return {"settings": settings, "spec": spec, "spec_path": spec_path}


@pytest.fixture(scope="module")
def pg_world(world, tmp_path_factory):
    """A fresh PostgreSQL database holding a copy of the DuckDB feature mart, scored with the same registry."""
    with postgres_copy(world["settings"], FEATURES, tmp_path_factory.mktemp("reasons_pg"), f"as_of_date = date '{DAY}'") as settings:
        yield {**world, "settings": settings}


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_world(request):
    """Each test using this runs on the DuckDB warehouse and on its PostgreSQL copy (which holds DAY only)."""
    return request.getfixturevalue("world" if request.param == "duckdb" else "pg_world")


def _explaining(spec: ModelSpec, **explain) -> ModelSpec:
    return spec.model_copy(update={"explain": ExplainSpec(**explain)})


def _read(settings: Settings, sql: str) -> list[dict]:
    with Warehouse.connect(settings, read_only=True) as wh:
        return wh.read_arrow(sql).to_pylist()


def _day(settings: Settings, day: date) -> dict:
    """The day's scores by entity, its reasons in order, and the top fraction of its scores (ties by entity id)."""
    where = f"model_name = 'churn' and as_of_date = date '{day}'"
    scores = {r["entity_id"]: r for r in _read(settings, f"select * from ml.predictions where {where}")}
    reasons = _read(settings, f"select * from ml.prediction_reasons where {where} order by entity_id, reason_rank")
    ranked = sorted(scores, key=lambda e: (-scores[e]["score"], e))
    return {"scores": scores, "reasons": reasons, "top": ranked[:math.ceil(0.1 * len(ranked))]}


def _keyed(reasons: list[dict]) -> dict:
    return {(r["entity_id"], r["reason_rank"]): (r["feature"], r["feature_value"], round(r["contribution"], 9))
            for r in reasons}


def test_the_days_top_fraction_is_explained_with_the_champions_own_contributions(any_world):
    from ml.scoring.explain import contributions, format_values
    from ml.scoring.score import load_champion, score_days

    settings, spec = any_world["settings"], any_world["spec"]
    score_days(spec, settings, [DAY], "top", scored_at=FIRST_RUN)
    got = _day(settings, DAY)
    assert len(got["scores"]) > 300 and len(got["top"]) == math.ceil(len(got["scores"]) / 10)
    by_entity: dict[str, list[dict]] = {}
    for r in got["reasons"]:
        by_entity.setdefault(r["entity_id"], []).append(r)
    # Exactly the day's top scores across both shards, three reasons each, keyed like their predictions.
    assert sorted(by_entity) == sorted(got["top"])
    assert all([r["reason_rank"] for r in rows] == [1, 2, 3] for rows in by_entity.values())
    assert {(r["as_of_date"], r["model_version"]) for r in got["reasons"]} == {(DAY, "v0001")}
    assert {r["model_version"] for r in got["scores"].values()} == {"v0001"}

    # The reasons are the champion's largest contributions on those rows, with their values in plain words.
    model, _, _ = load_champion(spec, settings)
    ids = ", ".join(got["top"])
    with Warehouse.connect(settings, read_only=True) as wh:
        rows = wh.read_arrow(f"select * from {FEATURES} where as_of_date = date '{DAY}' and customer_id in ({ids}) "
                             "order by customer_id")
    c = contributions(model, rows)
    for i, entity in enumerate(str(e) for e in rows.column("customer_id").to_pylist()):
        stored = by_entity[entity]
        largest = sorted(range(len(c.features)), key=lambda j: -abs(c.values[i, j]))[:3]
        assert [r["feature"] for r in stored] == [c.features[j] for j in largest]
        assert [r["contribution"] for r in stored] == pytest.approx([c.values[i, j] for j in largest], abs=1e-9)
        assert stored[0]["base_value"] == pytest.approx(c.base[i], abs=1e-9)
        assert abs(c.raw[i] - math.log(got["scores"][entity]["score"] / (1 - got["scores"][entity]["score"]))) < 1e-9
        values = [format_values(rows.column(r["feature"]).slice(i, 1)).to_pylist()[0] for r in stored]
        assert [r["feature_value"] for r in stored] == values


def test_a_rerun_replaces_the_reasons_and_explaining_nothing_clears_them(world):
    from ml.scoring.score import score_days

    settings, spec = world["settings"], world["spec"]
    score_days(spec, settings, [EARLIER, DAY], "rerun-a", scored_at=FIRST_RUN)
    first = {day: _day(settings, day) for day in (EARLIER, DAY)}
    result = score_days(spec, settings, [EARLIER, DAY], "rerun-b", scored_at=SECOND_RUN, shards=3)
    assert result["reasons"] == {d.isoformat(): 3 * len(first[d]["top"]) for d in (EARLIER, DAY)}
    for day in (EARLIER, DAY):
        again = _day(settings, day)
        assert len(again["reasons"]) == 3 * len(again["top"])  # replaced, not added to
        assert _keyed(again["reasons"]) == _keyed(first[day]["reasons"])  # three shards explain what two did

    result = score_days(_explaining(spec, top_k=0), settings, [DAY], "rerun-none", scored_at=SECOND_RUN)
    assert result["reasons"] == {DAY.isoformat(): 0}
    cleared = _day(settings, DAY)
    assert cleared["reasons"] == [] and len(cleared["scores"]) == len(first[DAY]["scores"])
    assert _keyed(_day(settings, EARLIER)["reasons"]) == _keyed(first[EARLIER]["reasons"])  # other days stay


def test_rows_a_shard_left_unexplained_are_explained_when_publishing_cuts_the_days_top(world, monkeypatch):
    from ml.scoring import reasons, score

    settings, spec = world["settings"], world["spec"]
    score.score_days(spec, settings, [DAY], "cut-normal", scored_at=FIRST_RUN)
    expected = _keyed(_day(settings, DAY)["reasons"])
    monkeypatch.setattr(reasons, "_likely_share", lambda fraction, rows: 2)  # each shard explains its best 2 only
    result = score.score_days(spec, settings, [DAY], "cut-late", scored_at=SECOND_RUN)
    shards = sorted((settings.home / "runs" / "score" / "cut-late" / "reasons" / DAY.isoformat()).iterdir())
    assert [p.name for p in shards] == ["candidates-0.parquet", "candidates-1.parquet", "published.parquet",
                                        "shard-0.parquet", "shard-1.parquet", "spare-0.parquet", "spare-1.parquet"]
    assert _keyed(_day(settings, DAY)["reasons"]) == expected
    assert result["reasons"] == {DAY.isoformat(): len(expected)}


def test_rows_all_explains_every_scored_row(world):
    from ml.scoring.score import score_days

    settings, spec = world["settings"], world["spec"]
    score_days(_explaining(spec, top_k=2, rows="all"), settings, [EARLIER], "all", scored_at=FIRST_RUN)
    got = _day(settings, EARLIER)
    assert len(got["reasons"]) == 2 * len(got["scores"])
    assert {r["entity_id"] for r in got["reasons"]} == set(got["scores"])


def test_a_publish_killed_inside_its_transaction_keeps_the_old_reasons_and_its_rerun_lands_once(world):
    from ml.scoring.score import publish_predictions, score_days, score_shard

    settings, spec = world["settings"], world["spec"]
    score_days(spec, settings, [DAY], "kill-first", scored_at=FIRST_RUN)
    before = _day(settings, DAY)
    every_row = _explaining(spec, top_k=1, rows="all")
    shards = [score_shard(every_row, settings, [DAY], s, 2, "kill-second", SECOND_RUN) for s in range(2)]
    kill_publish_in_its_transaction(settings, world["spec_path"], shards, "kill-second")
    assert _day(settings, DAY) == before

    publish_predictions(spec, settings, shards)
    after = _day(settings, DAY)
    assert len(after["reasons"]) == len(after["scores"]) == len(before["scores"])
    assert {r["scored_at"] for r in after["scores"].values()} == {SECOND_RUN}


def test_the_scores_mart_shows_each_explained_scores_reasons_in_plain_words(any_world):
    from ml.scoring.score import build_scores_mart, score_days

    settings, spec = any_world["settings"], any_world["spec"]
    score_days(spec, settings, [DAY], "mart", scored_at=FIRST_RUN)  # DAY is the newest day this module scores
    build_scores_mart(settings)
    got = _day(settings, DAY)
    latest = {str(r["customer_id"]): r for r in _read(settings, "select * from marts.customer_churn_scores_latest")}
    expected = {}
    for r in got["reasons"]:
        rounded = round(r["contribution"], 2)
        sign = "-" if rounded < 0 else "+"
        text = f"{r['feature']} = {r['feature_value']} ({sign}{abs(rounded):.2f})"
        expected.setdefault(r["entity_id"], []).append(text)
    on_day = {e: row for e, row in latest.items() if row["as_of_date"] == DAY}
    assert set(on_day) == set(got["scores"])
    shown = {e: [row[f"reason_{i}"] for i in (1, 2, 3)] for e, row in on_day.items() if row["reason_1"] is not None}
    assert shown == expected and len(shown) == len(got["top"])
    assert all(REASON.match(text) for texts in shown.values() for text in texts), shown
    assert all(row["reason_2"] is None and row["reason_3"] is None for e, row in on_day.items() if e not in shown)
    assert {e: on_day[e]["score"] for e in shown} == {e: got["scores"][e]["score"] for e in shown}
