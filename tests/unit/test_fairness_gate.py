"""The gate's fairness check: promotion.max_disparity bounds each attribute's disparity, with the reason spelled out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from ml.core.spec import SPEC_DIR, ModelSpec, SpecError, parse_spec
from ml.training.fairness import fairness_report
from ml.training.gate import decide
from tests.unit.test_gate import _test_eval


def _spec(attributes=("region", "acquisition_channel"), **promotion) -> ModelSpec:
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data["fairness"] = {"attributes": list(attributes)}
    data["promotion"].update(promotion)
    return parse_spec(data)


def _report(**equalized_odds) -> dict:
    """A fairness report's differences (groups left out: the gate reads only the differences)."""
    values = {"region": 0.031, "acquisition_channel": 0.018, **equalized_odds}
    return {name: {"groups": {}, "demographic_parity_difference": 0.05, "equalized_odds_difference": value,
                   "note": None if value is not None else "1 group(s) with at least 50 rows and both classes: "
                   "no equalized-odds difference"}
            for name, value in values.items()}


def _fairness_reason(decision) -> str:
    assert list(decision.checks)[-1] == "fairness"  # the last check, so the last reason
    return decision.reasons[-1]


def test_disparities_within_the_bound_pass_with_each_attribute_listed():
    decision = decide(_spec(max_disparity=0.1), _test_eval(), fairness=_report())
    assert decision.promote and decision.checks["fairness"] is True
    assert _fairness_reason(decision) == "pass: equalized-odds difference region 0.0310, acquisition_channel 0.0180 <= 0.1"


def test_one_attribute_over_the_bound_fails_the_promotion_and_is_named():
    decision = decide(_spec(max_disparity=0.1), _test_eval(), fairness=_report(region=0.131))
    assert not decision.promote and decision.checks["fairness"] is False
    assert _fairness_reason(decision) == ("FAIL: equalized-odds difference region 0.1310, acquisition_channel 0.0180: "
                                          "region above 0.1")
    # every other check still passes: the fairness bound alone rejects it
    assert [name for name, passed in decision.checks.items() if not passed] == ["fairness"]


def test_demographic_parity_is_bounded_when_the_spec_says_so():
    spec = _spec(max_disparity=0.04, disparity_metric="demographic_parity")
    decision = decide(spec, _test_eval(), fairness=_report())
    assert not decision.promote
    assert _fairness_reason(decision) == ("FAIL: demographic-parity difference region 0.0500, acquisition_channel "
                                          "0.0500: region, acquisition_channel above 0.04")


def test_a_missing_report_or_difference_fails_with_the_reason():
    spec = _spec(max_disparity=0.1)
    missing = decide(spec, _test_eval())
    assert not missing.promote and missing.checks["fairness"] is False
    assert _fairness_reason(missing).startswith("FAIL: no fairness report was computed; max_disparity 0.1")
    unmeasured = decide(spec, _test_eval(), fairness=_report(region=None))
    assert _fairness_reason(unmeasured) == (
        "FAIL: equalized-odds difference region not measured, acquisition_channel 0.0180: cannot bound region by "
        "0.1 (region: 1 group(s) with at least 50 rows and both classes: no equalized-odds difference)")
    absent = decide(spec, _test_eval(), fairness={"region": _report()["region"]})
    assert "acquisition_channel: missing from the report" in _fairness_reason(absent) and not absent.promote
    nan = decide(spec, _test_eval(), fairness=_report(region=float("nan")))
    assert "region: its difference is missing or not a number" in _fairness_reason(nan) and not nan.promote


def test_a_bound_without_attributes_is_refused_when_the_spec_loads():
    with pytest.raises(SpecError, match="promotion.max_disparity bounds the disparity of fairness.attributes, "
                                        "which is empty: list the columns to group by, or remove max_disparity"):
        _spec(attributes=(), max_disparity=0.1)


def test_without_a_bound_the_report_is_not_a_check():
    decision = decide(_spec(), _test_eval(), fairness=_report(region=0.9))
    assert decision.promote and "fairness" not in decision.checks


def test_a_computed_report_goes_through_the_gate():
    rng = np.random.default_rng(0)
    n = 4_000
    groups = pd.DataFrame({"region": rng.choice(["north", "south"], n), "acquisition_channel": rng.choice(["a", "b"], n)})
    p = rng.uniform(0, 1, n)
    y = (rng.random(n) < p).astype(int)
    report = fairness_report(y, p, 0.5, groups, min_group_rows=50)  # groups alike: small differences
    decision = decide(_spec(max_disparity=0.1), _test_eval(), fairness=report)
    assert decision.checks["fairness"] is True, decision.reasons
    eo = report["region"]["equalized_odds_difference"]
    assert f"region {eo:.4f}" in _fairness_reason(decision)
