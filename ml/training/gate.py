"""The promotion gate: whether a challenger may replace the champion, with the evidence for the decision.

Each check gives (passed, reason). A number that is absent, None or NaN fails its check with a reason that
names it; the gate never raises on an incomplete evaluation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from ml.core.metric_names import FLOOR_METRICS
from ml.core.spec import ModelSpec

Check = tuple[bool, str]
DEFAULT_ALPHA = 0.05  # paired_bootstrap's default, assumed when the comparison does not say
DISPARITY_NAMES = {"equalized_odds": "equalized-odds difference", "demographic_parity": "demographic-parity difference"}


@dataclass(frozen=True)
class Decision:
    """The gate's verdict: every check with whether it passed, and the reasons in words."""

    promote: bool
    reasons: tuple[str, ...]
    checks: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "decision": "promoted" if self.promote else "rejected", "reasons": list(self.reasons)}


def _number(values: Mapping[str, Any] | None, key: str) -> float | None:
    """values[key] as a finite float; None when the key is absent or the value is None, NaN or not a number."""
    try:
        number = float((values or {})[key])
    except (KeyError, TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _numbers(values: Mapping[str, Any] | None, *keys: str) -> tuple[dict[str, float], str]:
    """The finite numbers among keys, and the names of the missing ones joined for a reason."""
    found = {key: _number(values, key) for key in keys}
    return {k: v for k, v in found.items() if v is not None}, ", ".join(k for k, v in found.items() if v is None)


def _better(metric: str, value: float, bound: float) -> bool:
    return value >= bound if FLOOR_METRICS[metric] else value <= bound


def _score_range(evaluation: Mapping[str, Any]) -> Check:
    found, missing = _numbers(evaluation, "score_min", "score_max")
    if missing:
        return False, f"score range unknown: {missing} missing or not a number in the evaluation"
    lo, hi = found["score_min"], found["score_max"]
    if not (0.0 <= lo and hi <= 1.0):
        return False, f"scores span [{lo:.4f}, {hi:.4f}], outside [0, 1]"
    if hi - lo <= 1e-6:
        return False, f"scores are constant (span [{lo:.4f}, {hi:.4f}]): the model ranks nothing"
    return True, f"scores span [{lo:.4f}, {hi:.4f}] inside [0, 1] and are not constant"


def _calibration(evaluation: Mapping[str, Any], max_ece: float) -> Check:
    ece = _number(evaluation, "ece")
    if ece is None:
        return False, f"expected calibration error (ece) missing or not a number; it must be <= {max_ece}"
    return ece <= max_ece, f"expected calibration error {ece:.4f} {'<=' if ece <= max_ece else '>'} {max_ece}"


def _floor(evaluation: Mapping[str, Any], metric: str, floor: float) -> Check:
    if metric not in FLOOR_METRICS:
        return False, f"{metric} cannot have a floor; floors may name {', '.join(FLOOR_METRICS)}"
    value = _number(evaluation, metric)
    if value is None:
        return False, f"{metric} missing or not a number, so it cannot clear the floor {floor}"
    return _better(metric, value, floor), f"{metric} {value:.4f} against the floor {floor}"


def _beats_champion(metric: str, comparison: Mapping[str, Any] | None) -> Check:
    if comparison is None:
        return False, f"no {metric} comparison with the champion was computed"
    found, missing = _numbers(comparison, "challenger", "champion", "diff")
    if missing:
        return False, f"{metric} comparison with the champion incomplete: {missing} missing or not a number"
    diff = found["diff"]
    return diff > 0, f"{metric} {found['challenger']:.4f} vs champion {found['champion']:.4f} (gain {diff:+.4f})"


def _ci_lower_bound(comparison: Mapping[str, Any] | None, min_improvement: float) -> Check:
    bound = f"lower bound must exceed {min_improvement}"
    if comparison is None:
        return False, f"no bootstrap CI of the gain was computed; {bound}"
    found, missing = _numbers(comparison, "ci_low", "ci_high")
    alpha = _number(comparison, "alpha") if "alpha" in comparison else DEFAULT_ALPHA
    level = f"{100 * (1 - alpha):g}% bootstrap CI" if alpha is not None and 0 < alpha < 1 else "bootstrap CI"
    if missing:
        return False, f"{level} of the gain unknown: {missing} missing or not a number; {bound}"
    low, high = found["ci_low"], found["ci_high"]
    return low > min_improvement, f"{level} of the gain [{low:+.4f}, {high:+.4f}]; {bound}"


def _segments(regressions: list[dict] | None, tolerance: float) -> Check:
    if regressions is None:
        return False, "segment regressions against the champion were not computed"
    if not regressions:
        return True, f"no segment regresses by more than {tolerance}"

    def delta(row: Mapping[str, Any]) -> str:
        value = _number(row, "delta")
        return "delta missing" if value is None else f"{value:+.4f}"

    listed = ", ".join(f"{r.get('column')}={r.get('value')} ({delta(r)})" for r in regressions)
    return False, f"segments regress by more than {tolerance}: {listed}"


def _note(entry: Any) -> str:
    """Why an attribute's disparity is unknown, as its report says; or that the report lacks it."""
    note = entry.get("note") if isinstance(entry, Mapping) else None
    return note or ("missing from the report" if entry is None else "its difference is missing or not a number")


def _fairness(spec: ModelSpec, report: Mapping[str, Any] | None) -> Check:
    """Every fairness attribute's disparity (promotion.disparity_metric) within promotion.max_disparity (a spec
    with a bound and no attributes is refused when it loads)."""
    bound, metric = spec.promotion.max_disparity, spec.promotion.disparity_metric
    name = DISPARITY_NAMES[metric]
    if not isinstance(report, Mapping) or not report:
        return False, f"no fairness report was computed; max_disparity {bound} bounds the {name} of each attribute"
    key = f"{metric}_difference"
    values = {attribute: _number(report.get(attribute), key) for attribute in spec.fairness.attributes}
    listed = ", ".join(f"{attribute} {'not measured' if value is None else f'{value:.4f}'}"
                       for attribute, value in values.items())
    unmeasured = [attribute for attribute, value in values.items() if value is None]
    over = [attribute for attribute, value in values.items() if value is not None and value > bound]
    if unmeasured:
        why = "; ".join(f"{a}: {_note(report.get(a))}" for a in unmeasured)
        return False, f"{name} {listed}: cannot bound {', '.join(unmeasured)} by {bound} ({why})"
    if over:
        return False, f"{name} {listed}: {', '.join(over)} above {bound}"
    return True, f"{name} {listed} <= {bound}"


def decide(
    spec: ModelSpec,
    challenger: dict,
    champion: dict | None = None,
    comparison: dict | None = None,
    regressions: list[dict] | None = None,
    *,
    fairness: Mapping[str, Any] | None = None,
) -> Decision:
    """Apply the spec's promotion policy to a challenger's test evaluation (and the champion's, if any).

    `fairness` is the challenger's fairness report (ml.training.fairness), which promotion.max_disparity bounds.
    """
    policy, evaluation = spec.promotion, challenger or {}
    # Sanity: scores are probabilities that vary, and are calibrated within the bound; then the floors.
    results = {"score_range": _score_range(evaluation), "calibration": _calibration(evaluation, policy.max_ece)}
    results.update({f"floor_{name}": _floor(evaluation, name, floor) for name, floor in sorted(policy.floors.items())})
    if champion is not None:
        results["beats_champion"] = _beats_champion(spec.primary_metric, comparison)
        results["ci_lower_bound"] = _ci_lower_bound(comparison, policy.min_improvement)
        results["segments"] = _segments(regressions, policy.segment_tolerance)
    if policy.max_disparity is not None:
        results["fairness"] = _fairness(spec, fairness)
    reasons = [("pass: " if passed else "FAIL: ") + text for passed, text in results.values()]
    if champion is None:
        reasons.insert(0, "no champion yet: the first model is promoted if it clears the floors and sanity checks")
    checks = {name: passed for name, (passed, _) in results.items()}
    return Decision(promote=all(checks.values()), reasons=tuple(reasons), checks=checks)
