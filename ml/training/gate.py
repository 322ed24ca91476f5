"""The promotion gate: whether a challenger may replace the champion, with the evidence for the decision."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ml.core.spec import ModelSpec
from ml.training.metrics import METRICS


@dataclass(frozen=True)
class Decision:
    """The gate's verdict: every check with whether it passed, and the reasons in words."""

    promote: bool
    reasons: tuple[str, ...]
    checks: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "decision": "promoted" if self.promote else "rejected", "reasons": list(self.reasons)}


def _better(metric: str, value: float, bound: float) -> bool:
    return value >= bound if METRICS[metric].higher_is_better else value <= bound


def decide(
    spec: ModelSpec,
    challenger: dict,
    champion: dict | None = None,
    comparison: dict | None = None,
    regressions: list[dict] | None = None,
) -> Decision:
    """Apply the spec's promotion policy to a challenger's test evaluation (and the champion's, if any)."""
    policy, metric = spec.promotion, spec.primary_metric
    checks: dict[str, bool] = {}
    reasons: list[str] = []

    def check(name: str, passed: bool, text: str) -> None:
        checks[name] = passed
        reasons.append(("pass: " if passed else "FAIL: ") + text)

    # Sanity: scores are probabilities that vary, and are calibrated within the bound.
    lo, hi = challenger["score_min"], challenger["score_max"]
    check("score_range", 0.0 <= lo and hi <= 1.0 and hi - lo > 1e-6,
          f"scores span [{lo:.4f}, {hi:.4f}] inside [0, 1] and are not constant")
    ece = challenger["ece"]
    check("calibration", ece is not None and ece <= policy.max_ece,
          f"expected calibration error {ece:.4f} {'<=' if ece <= policy.max_ece else '>'} {policy.max_ece}")
    for name, floor in sorted(policy.floors.items()):
        value = challenger.get(name)
        ok = value is not None and _better(name, value, floor)
        check(f"floor_{name}", ok, f"{name} {value:.4f} against the floor {floor}")

    if champion is None:
        reasons.insert(0, "no champion yet: the first model is promoted if it clears the floors and sanity checks")
    else:
        diff, ci_low, ci_high = comparison["diff"], comparison["ci_low"], comparison["ci_high"]
        check("beats_champion", diff > 0,
              f"{metric} {comparison['challenger']:.4f} vs champion {comparison['champion']:.4f} (gain {diff:+.4f})")
        check("ci_lower_bound", ci_low > policy.min_improvement,
              f"{int(100 * (1 - comparison.get('alpha', 0.05)))}% bootstrap CI of the gain [{ci_low:+.4f}, {ci_high:+.4f}]; "
              f"lower bound must exceed {policy.min_improvement}")
        worst = regressions or []
        tolerance = policy.segment_tolerance
        if worst:
            listed = ", ".join(f"{r['column']}={r['value']} ({r['delta']:+.4f})" for r in worst)
            check("segments", False, f"segments regress by more than {tolerance}: {listed}")
        else:
            check("segments", True, f"no segment regresses by more than {tolerance}")
    return Decision(promote=all(checks.values()), reasons=tuple(reasons), checks=checks)
