"""The model card's HTML from a constructed evaluation: every section, the numbers, the gate's reasons, escaping,
nothing loaded from outside the page, and a bounded size."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import yaml

from ml.core.spec import SPEC_DIR, ModelSpec, parse_spec
from ml.registry.card import CardError, render_card

SECTIONS = ("Data", "Test metrics", "Candidates", "Curves on the test rows", "Segments", "Fairness",
            "What drives the score", "Against the champion", "The gate's decision", "Lineage")
REASONS = [
    "pass: scores span [0.0224, 0.6497] inside [0, 1] and are not constant",
    "pass: expected calibration error 0.0312 <= 0.05",
    "FAIL: roc_auc 0.6965 vs champion 0.6891 (gain +0.0074)",
    "FAIL: segments regress by more than 0.03: plan_code=basic (-0.0410)",
]


def _spec(**changes) -> ModelSpec:
    data = yaml.safe_load((SPEC_DIR / "churn.yaml").read_text())
    data.update(changes)
    return parse_spec(data)


def _scores(n: int = 2_000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(np.int8)
    return y, np.clip(0.08 + 0.2 * y + rng.normal(0, 0.07, n), 0.001, 0.999)


def _test(roc_auc: float = 0.6965, **changes) -> dict:
    test = {
        "n": 20_000, "positives": 1_400, "base_rate": 0.07, "roc_auc": roc_auc, "pr_auc": 0.1620, "log_loss": 0.2410,
        "brier": 0.0630, "ece": 0.0312, "threshold": 0.14, "precision": 0.18, "recall": 0.41, "f1": 0.2502,
        "lift_top_decile": 2.31, "score_min": 0.0224, "score_max": 0.6497, "score_mean": 0.071,
        "reliability": [{"bin_low": i / 10, "bin_high": (i + 1) / 10, "n": 100 * (10 - i),
                         "mean_score": i / 10 + 0.05, "observed_rate": i / 10 + 0.04} for i in range(10)],
        "segments": {"plan_code": {
            "basic": {"n": 9_000, "positives": 700, "roc_auc": roc_auc - 0.04, "pr_auc": 0.15, "log_loss": 0.25,
                      "brier": 0.066},
            "<img src=x onerror=alert(1)>": {"n": 120, "positives": 9, "roc_auc": None, "pr_auc": None,
                                             "log_loss": None, "brier": None},
        }},
    }
    test.update(changes)
    return test


def _evaluation(*, champion: bool = True, **challenger_extra) -> dict:
    challenger = {"candidate": "lightgbm", "kind": "lightgbm", "directory": "/nowhere/lightgbm",
                  "params": {"num_leaves": 31, "learning_rate": 0.08}, "threshold": 0.14, "test": _test(),
                  "validation": {"roc_auc": 0.7012}, "trials": 3, "fit_seconds": 12.34, "device": "cpu",
                  "importance": {"tenure_days": 0.31, "support_tickets_30d": 0.12}, **challenger_extra}
    logistic = {**challenger, "candidate": "logistic", "kind": "logistic", "test": _test(0.6511),
                "validation": {"roc_auc": 0.6533}}
    evaluation = {"challenger": challenger, "leaderboard": [challenger, logistic], "champion": None,
                  "comparison": None, "regressions": []}
    if champion:
        evaluation.update(
            champion={"version": "v0003", "test": _test(0.6891)},
            comparison={"metric": "roc_auc", "n_boot": 300, "n_skipped": 2, "diff": 0.0074, "ci_low": -0.0012,
                        "ci_high": 0.0161, "challenger": 0.6965, "champion": 0.6891, "p_better": 0.9367},
            regressions=[{"column": "plan_code", "value": "basic", "challenger": 0.6555, "champion": 0.6965,
                          "delta": -0.041, "n": 9_000}],
        )
    return evaluation


EXTRACT = {
    "directory": "/nowhere/data", "as_of": "2025-04-10", "fingerprint": "9f" * 32,
    "schema": {"numeric": ["tenure_days", "support_tickets_30d"], "categorical": ["plan_code"]},
    "windows": {"train": {"rows": 61_234, "positives": 4_321, "start": "2025-01-01", "end": "2025-02-10"},
                "validation": {"rows": 9_870, "positives": 700, "start": "2025-03-13", "end": "2025-03-26"},
                "test": {"rows": 20_000, "positives": 1_400, "start": "2025-04-27", "end": "2025-05-10"}},
}
LINEAGE = {"git_commit": "d4aacec" + "0" * 33, "git_dirty": True, "git_diff_sha256": "ab" * 32, "git_untracked": [],
           "dbt_manifest_sha256": "cd" * 32, "data_fingerprint": "9f" * 32, "spec_fingerprint": "ef" * 32,
           "libraries": {"lightgbm": "4.7.0", "scikit-learn": "1.9.1"}}
DECISION = {"promote": False, "decision": "rejected", "reasons": REASONS, "checks": {}}


def _render(spec: ModelSpec | None = None, evaluation: dict | None = None, y=None, p=None, extract=EXTRACT) -> str:
    if y is None:
        y, p = _scores()
    return render_card(spec or _spec(), extract_info=extract, evaluation=evaluation or _evaluation(),
                       decision=DECISION, lineage=LINEAGE, y_test=y, p_test=p)


@functools.cache
def _default_page() -> str:
    return _render()


def _text(page: str) -> str:
    """The page without its SVG figures: what its tables and paragraphs say."""
    return re.sub(r"<svg.*?</svg>", "", page, flags=re.DOTALL)


def test_the_card_has_every_section_with_its_numbers_formatted():
    page = _default_page()
    text = _text(page)
    for title in SECTIONS:
        assert f"<h2>{title}" in text or f"<h3>{title}" in text, title
    # what it predicts, from which rows and with which horizon
    assert "Probability that an active customer cancels within 30 days of the as-of date." in text
    assert "<code>churned</code> of <code>churn_labels</code>, known 30 days after <code>as_of_date</code>" in text
    assert "<td>2025-01-01</td><td>2025-02-10</td><td class=\"num\">61,234</td><td class=\"num\">4,321</td>" in text
    assert "keeping every 3rd date" in text and "gaps of 30 days" in text
    # test metrics of the challenger beside the champion's, and the leaderboard
    assert '<td>roc_auc</td><td>ROC AUC</td><td class="num">0.6965</td><td class="num">0.6891</td>' in text
    assert '<td>n</td><td>test rows</td><td class="num">20,000</td>' in text
    assert "<th>champion v0003</th>" in text
    assert '<td>logistic</td><td>logistic</td><td class="num">0.6533</td><td class="num">0.6511</td>' in text
    assert '<td class="num">12.3</td>' in text
    # segments, with the champion's metric and the regression marked; a segment under the bound has no metrics
    assert ('<td>basic</td><td class="num">9,000</td><td class="num">700</td><td class="num">0.0778</td>'
            '<td class="num">0.6565</td>') in text
    assert '<td class="num">0.6491</td><td>✗</td>' in text
    assert "<td>–</td>" in text
    # the comparison with its interval, and every gate reason with its verdict
    assert '<td class="num">[-0.0012, +0.0161]</td>' in text and '<td class="num">+0.0074</td>' in text
    assert '<td class="num">0.9367</td>' in text and '<td class="num">-0.0410</td>' in text
    assert '<span class="badge rejected">rejected</span>' in text
    for reason in REASONS:
        verdict, _, rest = reason.partition(": ")
        badge = "pass" if verdict == "pass" else "fail"
        assert f'<span class="badge {badge}">{verdict}</span>{rest.replace("<", "&lt;")}</li>' in text, reason
    # lineage
    for value in (LINEAGE["git_commit"], "cd" * 32, "9f" * 32, "4.7.0"):
        assert value in text


def test_text_from_the_spec_and_the_data_is_escaped():
    page = _render(_spec(description="<script>alert('card')</script> & more"))
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;card&#x27;)&lt;/script&gt; &amp; more" in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_the_page_is_self_contained_with_its_figures_inline():
    page = _default_page()
    assert page.count("<svg ") == 5  # ROC, PR, reliability, score distribution, feature bars
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page and "<metadata>" not in page
    for pattern in (r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", r"<(script|link|img|iframe|object|embed)\b",
                    r"@import", r"url\(\s*[\"']?(https?:)?//"):
        assert not re.search(pattern, page, flags=re.IGNORECASE), pattern
    # every id in the page is defined once, so the figures' clip paths do not clash
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert ids and len(ids) == len(set(ids))
    referenced = set(re.findall(r'url\(#([^)]+)\)|href="#([^"]+)"', page))
    assert referenced and {a or b for a, b in referenced} <= set(ids)
    assert _render() == page  # the same run renders the same card
    assert "ROC curve, AUC" in page and "Precision-recall, AP" in page and "threshold 0.1400" in page


def test_a_large_test_set_and_many_features_stay_well_under_a_megabyte():
    y, p = _scores(200_000, seed=4)
    importance = {f"feature_{i:03d}": 1.0 / (i + 1) for i in range(120)}
    page = _render(evaluation=_evaluation(importance=importance), y=y, p=p)
    assert len(page.encode()) < 400_000, len(page.encode())
    assert "all 120 features" in page and "Top 20 features" in page


def test_fairness_and_shap_are_shown_when_the_evaluation_has_them():
    fairness = {"region": {
        "groups": {"north": {"rows": 8_000, "positives": 600, "selection_rate": 0.2113, "tpr": 0.4411, "fpr": 0.1801,
                             "mean_score": 0.0712, "observed_rate": 0.075},
                   "south": {"rows": 30, "positives": 2, "selection_rate": None, "tpr": None, "fpr": None,
                             "mean_score": None, "observed_rate": None}},
        "demographic_parity_difference": 0.0321, "equalized_odds_difference": 0.0587}}
    champion_fairness = {"region": {**fairness["region"], "demographic_parity_difference": 0.0254,
                                    "equalized_odds_difference": 0.0611}}
    shap = {"tenure_days": 0.0412, "support_tickets_30d": 0.0133}
    spec = _spec(fairness={"attributes": ["region"]}, promotion={"max_disparity": 0.1})
    evaluation = _evaluation(fairness=fairness, shap_summary=shap)
    evaluation["champion"]["fairness"] = champion_fairness
    text = _text(_render(spec, evaluation))
    assert ("demographic parity difference 0.0321, equalized odds difference 0.0587 (champion v0003: 0.0254 and "
            "0.0611)") in text
    assert "bounds the equalized odds difference at 0.1" in text
    assert ('<td>north</td><td class="num">8,000</td><td class="num">600</td><td class="num">0.2113</td>'
            '<td class="num">0.4411</td><td class="num">0.1801</td>') in text
    assert '<td>south</td><td class="num">30</td><td class="num">2</td><td>–</td>' in text
    assert "mean |SHAP contribution|" in text and '<td>tenure_days</td><td class="num">0.0412</td>' in text
    assert "No fairness attributes in the spec." not in text


def test_without_fairness_shap_or_champion_the_card_says_so():
    # the windows as a manifest keeps them (keys sorted) still read train, validation, test
    extract = {**EXTRACT, "windows": dict(sorted(EXTRACT["windows"].items()))}
    text = _text(_render(_spec(fairness={"attributes": []}), _evaluation(champion=False), extract=extract))
    assert text.index("<td>train</td>") < text.index("<td>validation</td>") < text.index("<td>test</td>")
    assert "No fairness attributes in the spec." in text
    assert "holds no SHAP summary; shown instead is the feature importance" in text
    assert '<td>tenure_days</td><td class="num">0.3100</td>' in text
    assert "No champion yet" in text and "<th>champion" not in text and "✗" not in text
    named = _text(_render(_spec(fairness={"attributes": ["region"]}), _evaluation(champion=False)))
    assert "The spec names fairness attributes (region) but this evaluation holds no fairness report." in named


def test_scores_that_do_not_match_the_labels_are_refused():
    y, p = _scores(100)
    with pytest.raises(CardError, match="one score per test label"):
        _render(y=y, p=p[:-1])
