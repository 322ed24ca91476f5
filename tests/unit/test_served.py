"""Which specs are served, and the as-of grid that scoring, monitoring and training sampling work on."""

from __future__ import annotations

from datetime import date, timedelta

import pyarrow as pa
import pytest
import yaml

from ml.core.errors import NothingToDo
from ml.core.settings import Settings, parse_warehouse_url
from ml.core.spec import SPEC_DIR, parse_spec
from ml.orchestration.intervals import interval_days
from ml.orchestration.served import served_specs
from ml.orchestration.watermarks import grid_interval, infer_cadence
from ml.training.data import split


def _settings(tmp_path, **kw) -> Settings:
    return Settings(home=tmp_path, warehouse=parse_warehouse_url(f"duckdb:///{tmp_path / 'w.duckdb'}"), **kw)


def _churn(**changes) -> dict:
    return {**yaml.safe_load((SPEC_DIR / "churn.yaml").read_text()), **changes}


def test_the_shipped_served_specs_are_churn_and_payment_default(tmp_path):
    served = served_specs(_settings(tmp_path))
    assert [(s.name, s.shipped, s.error) for s in served] == [("churn", True, None), ("payment_default", True, None)]


def test_a_user_folder_adds_specs_replaces_a_shipped_one_by_name_and_leaves_out_unserved_ones(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "churn.yaml").write_text(yaml.safe_dump(_churn(seed=99)))
    (folder / "upsell.yaml").write_text(yaml.safe_dump(_churn(name="upsell")))
    (folder / "draft.yaml").write_text(yaml.safe_dump(_churn(name="draft", served=False)))
    served = {s.name: s for s in served_specs(_settings(tmp_path, specs_dir=folder))}
    assert sorted(served) == ["churn", "payment_default", "upsell"]
    assert served["churn"].spec.seed == 99 and served["churn"].shipped
    assert not served["upsell"].shipped  # a model of the user's own: build_features does not build it
    narrowed = served_specs(_settings(tmp_path, specs_dir=folder, served_models=("upsell",)))
    assert [s.name for s in narrowed] == ["upsell"]


def test_a_broken_or_misnamed_served_spec_carries_its_error_and_the_others_still_load(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "broken.yaml").write_text("name: broken\nserved: true\nentity_key: id\n")
    (folder / "other.yaml").write_text(yaml.safe_dump(_churn(name="renamed")))
    (folder / "bad_yaml.yaml").write_text("served: [true\n")
    served = {s.name: s for s in served_specs(_settings(tmp_path, specs_dir=folder))}
    assert served["broken"].spec is None and "candidates: Field required" in served["broken"].error
    assert "rename the file to renamed.yaml" in served["other"].error
    assert "not valid YAML" in served["bad_yaml"].error
    assert served["churn"].spec is not None and served["churn"].error is None


def test_the_cadence_is_read_from_the_gaps_between_as_of_dates():
    monday = date(2025, 3, 3)
    assert infer_cadence([monday + timedelta(days=i) for i in range(10)]) == "daily"
    assert infer_cadence([monday + timedelta(weeks=i) for i in range(10)]) == "weekly"
    assert infer_cadence([date(2025, m, 1) for m in range(1, 10)]) == "monthly"
    assert infer_cadence([monday]) == "daily"


def test_an_off_grid_day_is_skipped_with_the_reason_and_a_range_keeps_its_grid_days():
    grid = [date(2025, 3, 3) + timedelta(weeks=i) for i in range(4)]  # Mondays
    with pytest.raises(NothingToDo, match="no weekly as-of date of marts.f falls on 2025-03-05"):
        grid_interval({"start": "2025-03-05", "end": "2025-03-05"}, grid, cadence="weekly", action="score m",
                      relation="marts.f")
    plan = grid_interval({"start": "2025-03-01", "end": "2025-03-20"}, grid, cadence="weekly", action="score m",
                         relation="marts.f")
    assert interval_days(plan) == [date(2025, 3, 3), date(2025, 3, 10), date(2025, 3, 17)]
    assert interval_days({"start": "2025-03-01", "end": "2025-03-03"}) == [date(2025, 3, 1), date(2025, 3, 2),
                                                                          date(2025, 3, 3)]


def test_training_samples_every_kth_grid_date_on_a_weekly_grid():
    """A weekly grid whose dates fall off the training window's end: counting calendar days from that end,
    every 7th day kept no row at all."""
    spec = parse_spec({
        **_churn(), "label": {"relation": "churn_labels", "column": "churned", "horizon_days": 0},
        "split": {"strategy": "time", "validation_days": 16, "test_days": 14, "sample_every_days": 7}})
    first = date(2024, 1, 4)  # Thursdays; the training window ends 30 days before the last one, on a Saturday
    days = [first + timedelta(weeks=i) for i in range(40)]
    table = pa.table({"as_of_date": pa.array(days, pa.date32()), "customer_id": list(range(40)),
                      "churned": [i % 2 for i in range(40)]})
    train = split(spec, table)["train"]
    kept = sorted(train["as_of_date"].to_pylist())
    assert len(kept) == 5 and all((b - a).days == 49 for a, b in zip(kept, kept[1:]))


def test_build_features_selects_the_shipped_relations_and_their_parents_only(tmp_path):
    from ml.orchestration.served import build_selection

    both = (["+churn_labels", "+customer_features_daily", "+payment_default_labels"], ["customer_features_daily"])
    assert build_selection(_settings(tmp_path)) == both
    assert build_selection(_settings(tmp_path, served_models=("churn",))) == (
        ["+churn_labels", "+customer_features_daily"], ["customer_features_daily"])
    # serving only a user's model still builds the simulated business's marts, never the whole project
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "upsell.yaml").write_text(yaml.safe_dump(_churn(name="upsell", features={"relation": "stg_upsell"})))
    assert build_selection(_settings(tmp_path, specs_dir=folder, served_models=("upsell",))) == both
