"""The promotion gate: each check's verdict and the reason a user reads, including on incomplete evaluations."""

from __future__ import annotations

import math

import pytest
import yaml

from ml.core.spec import SPEC_DIR, ModelSpec, parse_spec
from ml.training.gate import decide

FIRST = "no champion yet: the first model is promoted if it clears the floors and sanity checks"
ABSENT = object()  # marks a key left out of the evaluation


def _spec(primary_metric: str = "roc_auc", **promotion) -> ModelSpec:
    """The churn spec: floor roc_auc 0.62, max_ece 0.05, min_improvement 0.0, segment_tolerance 0.03."""
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data["promotion"].update(promotion)
    data["primary_metric"] = primary_metric
    return parse_spec(data)


def _test_eval(**changes) -> dict:
    """A challenger's test evaluation shaped like evaluate()'s result; ABSENT drops a key."""
    evaluation = {
        "n": 20_000, "positives": 1_400, "base_rate": 0.07,
        "roc_auc": 0.6965, "pr_auc": 0.1620, "log_loss": 0.2410, "brier": 0.0630, "ece": 0.0312,
        "threshold": 0.14, "precision": 0.1800, "recall": 0.4100, "f1": 0.2502, "lift_top_decile": 2.31,
        "score_min": 0.0224, "score_max": 0.6497, "score_mean": 0.071, "segments": {},
    }
    evaluation.update(changes)
    return {k: v for k, v in evaluation.items() if v is not ABSENT}


def _comparison(**changes) -> dict:
    """A paired_bootstrap result on roc_auc where the challenger is clearly better."""
    comparison = {"metric": "roc_auc", "n_boot": 300, "n_skipped": 0, "diff": 0.0074, "ci_low": 0.0038,
                  "ci_high": 0.0112, "challenger": 0.6965, "champion": 0.6891, "p_better": 1.0}
    comparison.update(changes)
    return {k: v for k, v in comparison.items() if v is not ABSENT}


def _against_champion(spec: ModelSpec | None = None, evaluation: dict | None = None, regressions=(), **comparison):
    return decide(spec or _spec(), evaluation or _test_eval(), champion=_test_eval(roc_auc=0.6891),
                  comparison=_comparison(**comparison), regressions=list(regressions))


def _failed(decision) -> list[str]:
    return [r for r in decision.reasons if r.startswith("FAIL: ")]


# --- the first model -------------------------------------------------------------------------


def test_a_first_model_clearing_the_floors_is_promoted_with_every_reason_given():
    decision = decide(_spec(), _test_eval())
    assert decision.promote and decision.to_dict()["decision"] == "promoted"
    assert decision.reasons == (
        FIRST,
        "pass: scores span [0.0224, 0.6497] inside [0, 1] and are not constant",
        "pass: expected calibration error 0.0312 <= 0.05",
        "pass: roc_auc 0.6965 against the floor 0.62",
    )
    assert decision.checks == {"score_range": True, "calibration": True, "floor_roc_auc": True}


def test_a_first_model_missing_a_floor_is_rejected():
    decision = decide(_spec(), _test_eval(roc_auc=0.6010))
    assert not decision.promote and decision.to_dict()["decision"] == "rejected"
    assert _failed(decision) == ["FAIL: roc_auc 0.6010 against the floor 0.62"]
    assert decision.checks["floor_roc_auc"] is False


@pytest.mark.parametrize(
    ("metric", "floor", "value", "passed"),
    [
        ("log_loss", 0.25, 0.2410, True),  # a loss floor is a ceiling
        ("log_loss", 0.23, 0.2410, False),
        ("brier", 0.06, 0.0630, False),
        ("f1", 0.25, 0.2502, True),
        ("lift_top_decile", 2.5, 2.31, False),
        ("recall", 0.41, 0.41, True),  # the floor itself clears
    ],
)
def test_each_floor_follows_the_metric_direction(metric, floor, value, passed):
    decision = decide(_spec(floors={metric: floor}), _test_eval(**{metric: value}))
    assert decision.checks[f"floor_{metric}"] is passed and decision.promote is passed
    assert decision.reasons[-1] == f"{'pass' if passed else 'FAIL'}: {metric} {value:.4f} against the floor {floor}"


# --- sanity checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "reason"),
    [
        (-0.1, 0.9, "FAIL: scores span [-0.1000, 0.9000], outside [0, 1]"),
        (0.02, 1.3, "FAIL: scores span [0.0200, 1.3000], outside [0, 1]"),
        (0.2, 0.2, "FAIL: scores are constant (span [0.2000, 0.2000]): the model ranks nothing"),
    ],
)
def test_scores_outside_zero_one_or_constant_are_rejected(lo, hi, reason):
    decision = decide(_spec(), _test_eval(score_min=lo, score_max=hi))
    assert not decision.promote and _failed(decision) == [reason]
    assert decision.checks["score_range"] is False


def test_calibration_above_max_ece_is_rejected_and_at_the_bound_passes():
    decision = decide(_spec(), _test_eval(ece=0.0915))
    assert not decision.promote
    assert _failed(decision) == ["FAIL: expected calibration error 0.0915 > 0.05"]
    assert decide(_spec(), _test_eval(ece=0.05)).reasons[2] == "pass: expected calibration error 0.0500 <= 0.05"


# --- missing values never crash --------------------------------------------------------------


@pytest.mark.parametrize("missing", [None, math.nan, ABSENT], ids=["None", "NaN", "absent"])
@pytest.mark.parametrize(
    ("key", "check", "reason"),
    [
        ("ece", "calibration", "FAIL: expected calibration error (ece) missing or not a number; it must be <= 0.05"),
        ("roc_auc", "floor_roc_auc", "FAIL: roc_auc missing or not a number, so it cannot clear the floor 0.62"),
        ("score_min", "score_range", "FAIL: score range unknown: score_min missing or not a number in the evaluation"),
        ("score_max", "score_range", "FAIL: score range unknown: score_max missing or not a number in the evaluation"),
    ],
)
def test_a_missing_evaluation_number_fails_its_check_by_name(key, check, reason, missing):
    decision = decide(_spec(), _test_eval(**{key: missing}))
    assert not decision.promote and decision.checks[check] is False
    assert _failed(decision) == [reason]


@pytest.mark.parametrize("missing", [None, math.nan, ABSENT], ids=["None", "NaN", "absent"])
@pytest.mark.parametrize(
    ("key", "check", "reason"),
    [
        ("diff", "beats_champion", "FAIL: roc_auc comparison with the champion incomplete: diff missing or not a number"),
        ("champion", "beats_champion",
         "FAIL: roc_auc comparison with the champion incomplete: champion missing or not a number"),
        ("ci_low", "ci_lower_bound",
         "FAIL: 95% bootstrap CI of the gain unknown: ci_low missing or not a number; lower bound must exceed 0.0"),
        ("ci_high", "ci_lower_bound",
         "FAIL: 95% bootstrap CI of the gain unknown: ci_high missing or not a number; lower bound must exceed 0.0"),
    ],
)
def test_a_missing_comparison_number_fails_its_check_by_name(key, check, reason, missing):
    decision = _against_champion(**{key: missing})
    assert not decision.promote and decision.checks[check] is False
    assert _failed(decision) == [reason]


def test_a_champion_without_a_comparison_or_segment_check_is_not_replaced():
    decision = decide(_spec(), _test_eval(), champion=_test_eval(), comparison=None, regressions=None)
    assert not decision.promote
    assert _failed(decision) == [
        "FAIL: no roc_auc comparison with the champion was computed",
        "FAIL: no bootstrap CI of the gain was computed; lower bound must exceed 0.0",
        "FAIL: segment regressions against the champion were not computed",
    ]


def test_a_floor_that_skipped_spec_validation_fails_instead_of_crashing():
    spec = _spec()
    spec = spec.model_copy(update={"promotion": spec.promotion.model_copy(update={"floors": {"accuracy": 0.9}})})
    decision = decide(spec, _test_eval(accuracy=0.95))
    assert not decision.promote
    assert _failed(decision)[0].startswith("FAIL: accuracy cannot have a floor; floors may name roc_auc, pr_auc")


def test_an_empty_evaluation_is_rejected_with_every_number_named():
    decision = decide(_spec(), {})
    assert not decision.promote and set(decision.checks) == {"score_range", "calibration", "floor_roc_auc"}
    text = "\n".join(_failed(decision))
    assert all(name in text for name in ("score_min, score_max", "ece", "roc_auc"))


# --- against the champion --------------------------------------------------------------------


def test_a_challenger_beating_the_champion_everywhere_is_promoted():
    decision = _against_champion()
    assert decision.promote
    assert decision.reasons == (
        "pass: scores span [0.0224, 0.6497] inside [0, 1] and are not constant",
        "pass: expected calibration error 0.0312 <= 0.05",
        "pass: roc_auc 0.6965 against the floor 0.62",
        "pass: roc_auc 0.6965 vs champion 0.6891 (gain +0.0074)",
        "pass: 95% bootstrap CI of the gain [+0.0038, +0.0112]; lower bound must exceed 0.0",
        "pass: no segment regresses by more than 0.03",
    )
    assert set(decision.checks) == {"score_range", "calibration", "floor_roc_auc", "beats_champion",
                                    "ci_lower_bound", "segments"}


def test_not_beating_the_champion_is_rejected():
    decision = _against_champion(diff=-0.0041, challenger=0.6850, ci_low=-0.0080, ci_high=0.0002)
    assert not decision.promote and decision.checks["beats_champion"] is False
    assert "FAIL: roc_auc 0.6850 vs champion 0.6891 (gain -0.0041)" in decision.reasons


@pytest.mark.parametrize(
    ("ci_low", "min_improvement", "passed"),
    [(-0.0010, 0.0, False), (0.0, 0.0, False), (0.0038, 0.005, False), (0.0038, 0.003, True)],
)
def test_the_ci_lower_bound_must_exceed_min_improvement(ci_low, min_improvement, passed):
    decision = _against_champion(_spec(min_improvement=min_improvement), ci_low=ci_low)
    assert decision.checks["ci_lower_bound"] is passed and decision.promote is passed
    word = "pass" if passed else "FAIL"
    assert f"{word}: 95% bootstrap CI of the gain [{ci_low:+.4f}, +0.0112]; lower bound must exceed {min_improvement}" \
        in decision.reasons


@pytest.mark.parametrize(
    ("alpha", "words"),
    [(ABSENT, "95% "), (0.05, "95% "), (0.1, "90% "), (0.07, "93% "), (0.025, "97.5% "), (None, "")],
)
def test_the_confidence_level_is_worded_from_alpha(alpha, words):
    decision = _against_champion(alpha=alpha)
    assert decision.promote
    assert f"pass: {words}bootstrap CI of the gain [+0.0038, +0.0112]; lower bound must exceed 0.0" in decision.reasons


def test_a_loss_primary_metric_is_compared_by_name():
    spec = _spec("log_loss", floors={"log_loss": 0.3})
    decision = _against_champion(spec, challenger=0.2410, champion=0.2452, diff=0.0042)
    assert decision.promote and "pass: log_loss 0.2410 vs champion 0.2452 (gain +0.0042)" in decision.reasons


def test_regressing_segments_are_listed_worst_first():
    regressions = [
        {"column": "plan_code", "value": "basic", "challenger": 0.61, "champion": 0.6512, "delta": -0.0412, "n": 900},
        {"column": "region", "value": "north", "challenger": 0.66, "champion": 0.695, "delta": -0.0350, "n": 1200},
    ]
    decision = _against_champion(regressions=regressions)
    assert not decision.promote and decision.checks["segments"] is False
    assert _failed(decision) == [
        "FAIL: segments regress by more than 0.03: plan_code=basic (-0.0412), region=north (-0.0350)"
    ]
    broken = _against_champion(regressions=[{"column": "region", "value": "east", "delta": None}])
    assert _failed(broken) == ["FAIL: segments regress by more than 0.03: region=east (delta missing)"]


# --- the verdict -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failing", "kwargs"),
    [
        ("score_range", {"evaluation": _test_eval(score_max=1.2)}),
        ("calibration", {"evaluation": _test_eval(ece=0.2)}),
        ("floor_roc_auc", {"evaluation": _test_eval(roc_auc=0.55)}),
        ("beats_champion", {"diff": 0.0}),
        ("ci_lower_bound", {"ci_low": -0.001}),
        ("segments", {"regressions": [{"column": "region", "value": "south", "delta": -0.05}]}),
    ],
)
def test_promote_only_when_every_check_passed(failing, kwargs):
    decision = _against_champion(**kwargs)
    assert [name for name, passed in decision.checks.items() if not passed] == [failing]
    assert decision.promote is False and decision.to_dict()["decision"] == "rejected"
    assert len(_failed(decision)) == 1
