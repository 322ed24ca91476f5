"""Evaluation of a training run: the challenger is the best candidate on validation; it and the champion are
scored on the same out-of-time test rows, with a paired bootstrap interval on the gain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq

from ml.core.errors import TidemarkError
from ml.core.settings import Settings
from ml.core.spec import FeatureSchema, ModelSpec
from ml.registry.champion import NoChampion, resolve_champion
from ml.scoring.explain import mean_abs_contributions
from ml.training.candidates import load_candidate
from ml.training.data import LABEL, Extract, load_split
from ml.training.fairness import attribute_frame, fairness_report
from ml.training.metrics import (
    METRICS,
    choose_threshold,
    evaluate,
    feature_importance,
    paired_bootstrap,
    segment_regressions,
)

if TYPE_CHECKING:
    import pandas as pd

REFERENCE_ROWS = 5_000


class TrainingError(TidemarkError, RuntimeError):
    """A training step cannot go on; the message says why and what to do."""


def evaluate_step(spec: ModelSpec, settings: Settings, extract_info: dict, trained: list[dict]) -> dict:
    """Pick the challenger on validation, then score it and the champion on the same test rows."""
    ex = Extract.from_dict(extract_info)
    if not trained:
        raise TrainingError(f"no candidate of spec {spec.name!r} finished training")
    metric = spec.primary_metric
    ranked = sorted(trained, key=lambda t: t["validation"][metric], reverse=METRICS[metric].higher_is_better)
    _, y_val = load_split(ex, "validation")
    X_test, y_test = load_split(ex, "test")
    test_table = pq.read_table(ex.directory / "test.parquet")
    segments = test_table.select(list(spec.segments)).to_pandas() if spec.segments else None
    groups = (attribute_frame(test_table, spec.fairness.attributes, f"the test rows of {ex.directory / 'test.parquet'}")
              if spec.fairness.attributes else None)

    leaderboard, scores = [], {}
    for t in ranked:
        model = load_candidate(Path(t["directory"]))
        p_val = np.load(Path(t["directory"]).parent / f"{t['candidate']}.validation.npy")
        threshold = choose_threshold(y_val, p_val, spec.threshold.strategy, spec.threshold.value)
        scores[t["candidate"]] = p = model.predict_proba(X_test)[:, 1]
        result = evaluate(y_test, p, threshold=threshold, segments=segments,
                          min_segment_rows=spec.promotion.min_segment_rows)
        leaderboard.append({**t, "threshold": threshold, "test": result})
    challenger = leaderboard[0]
    model = load_candidate(Path(challenger["directory"]))
    importance = model.feature_importances() or feature_importance(model, X_test, y_test, metric=metric, seed=spec.seed)
    challenger["importance"] = dict(sorted(importance.items(), key=lambda kv: -kv[1]))
    # The global SHAP summary: mean |contribution| per feature on a seeded sample of the test rows.
    challenger["shap_summary"] = mean_abs_contributions(model, X_test, seed=spec.seed)
    challenger["fairness"] = _fairness(spec, y_test, scores[challenger["candidate"]], challenger["threshold"], groups)

    champion = _champion_evaluation(spec, settings, X_test, y_test, segments)
    comparison, regressions = None, []
    if champion is not None:
        champion["fairness"] = _fairness(spec, y_test, champion["scores"], champion["test"]["threshold"], groups)
        comparison = paired_bootstrap(y_test, scores[challenger["candidate"]], champion.pop("scores"), metric=metric,
                                      n_boot=spec.promotion.bootstrap_samples, seed=spec.seed)
        regressions = segment_regressions(challenger["test"], champion["test"], metric=metric,
                                          tolerance=spec.promotion.segment_tolerance)
    _write_reference(spec, Path(challenger["directory"]), test_table, scores[challenger["candidate"]])
    # The challenger's test scores, beside its directory (not published with it): the model card's curves.
    np.save(Path(challenger["directory"]).parent / f"{challenger['candidate']}.test.npy", scores[challenger["candidate"]])
    evaluation = {"challenger": challenger, "leaderboard": leaderboard, "champion": champion,
                  "comparison": comparison, "regressions": regressions}
    (Path(challenger["directory"]) / "evaluation.json").write_text(json.dumps(evaluation, indent=2, default=str))
    # Published with the version: the challenger's fairness per group on the test rows.
    fairness = {"attributes": list(spec.fairness.attributes), "min_group_rows": spec.fairness.min_group_rows,
                "threshold": challenger["threshold"], "rows": len(y_test), "report": challenger["fairness"]}
    (Path(challenger["directory"]) / "fairness.json").write_text(json.dumps(fairness, indent=2))
    return evaluation


def _fairness(spec: ModelSpec, y: np.ndarray, p: np.ndarray, threshold: float, groups: pd.DataFrame | None) -> dict:
    """The fairness report of scores on the test rows; empty when the spec names no attributes."""
    if groups is None:
        return {}
    return fairness_report(y, p, threshold, groups, spec.fairness.min_group_rows)


def _champion_evaluation(spec, settings, X_test, y_test, segments) -> dict | None:
    """The current champion scored on the same test rows, or None before the first promotion."""
    try:
        # The run's first step downloaded it anew and loaded it (prepare_step); the cached copy is checked
        # against the registry's checksums again here, and fetched and verified when this worker has none.
        champion = resolve_champion(settings, spec.name)
    except NoChampion:
        return None
    model = load_candidate(champion.directory)
    wanted = FeatureSchema.from_dict(champion.manifest["feature_schema"]).columns
    missing = [c for c in wanted if c not in X_test.columns]
    if missing:
        raise TrainingError(f"champion {champion.version} needs columns {missing} that the test rows no longer have")
    p = model.predict_proba(X_test)[:, 1]
    threshold = float(champion.manifest.get("threshold", 0.5))
    result = evaluate(y_test, p, threshold=threshold, segments=segments, min_segment_rows=spec.promotion.min_segment_rows)
    return {"version": champion.version, "test": result, "scores": p}


def _write_reference(spec: ModelSpec, directory: Path, test_table, scores: np.ndarray) -> None:
    """A bounded sample of test rows with their scores: the baseline that drift checks compare with."""
    rng = np.random.default_rng(spec.seed)
    take = np.sort(rng.choice(test_table.num_rows, size=min(REFERENCE_ROWS, test_table.num_rows), replace=False))
    sample = test_table.take(take).drop_columns([LABEL])
    pq.write_table(sample.append_column("score", [scores[take]]), directory / "reference.parquet")
