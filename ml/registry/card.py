"""The model card: one self-contained HTML page per registry version, rendered while the version is trained.

It says what the model predicts and from which rows, how it scored on the out-of-time test rows (with ROC,
precision-recall, reliability and score-distribution figures), per segment and per fairness group, which
features drive it, what the promotion gate decided and why, and what it was built from. Training writes it
into the challenger's directory before publishing, so it is one of the version's checksummed files. The
figures are inline SVG drawn by matplotlib: the page loads nothing, runs no script and opens offline.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ml.core.errors import TidemarkError
from ml.core.settings import Settings
from ml.core.spec import ModelSpec
from ml.registry.registry import Registry
from ml.registry.stores import IntegrityError, LocalStore, NotFound

CARD = "model_card.html"
MAX_CURVE_POINTS = 400  # a curve is thinned to this many points: enough for the eye, small enough for the page
TOP_FEATURES = 20  # bars in the feature chart; the table lists every feature

_LABELS = {
    "n": "test rows", "positives": "positives", "base_rate": "positive rate", "roc_auc": "ROC AUC",
    "pr_auc": "average precision (PR AUC)", "log_loss": "log loss", "brier": "Brier score",
    "ece": "expected calibration error", "threshold": "decision threshold", "precision": "precision at threshold",
    "recall": "recall at threshold", "f1": "F1 at threshold", "lift_top_decile": "lift in the top 10%",
    "score_min": "lowest score", "score_max": "highest score", "score_mean": "mean score",
}
_LINEAGE = {
    "git_commit": "git commit", "git_dirty": "working tree differs from the commit", "git_diff_sha256":
    "sha256 of the uncommitted diff", "git_untracked": "untracked files in spec and dbt folders",
    "dbt_manifest_sha256": "sha256 of the dbt manifest", "data_fingerprint": "fingerprint of the training rows",
    "spec_fingerprint": "fingerprint of the spec",
}
_FAIRNESS_COLUMNS = ("rows", "positives", "selection_rate", "tpr", "fpr", "mean_score", "observed_rate", "ece")
_FAIRNESS_NAMES = {"selection_rate": "selection rate", "tpr": "true positive rate", "fpr": "false positive rate",
                   "mean_score": "mean score", "observed_rate": "observed rate", "ece": "ECE"}
_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;margin:0;background:#f4f5f7}
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:2px solid #e3e6ea;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.lead{font-size:16px;margin:6px 0 12px}.muted{color:#5b6472}
table{border-collapse:collapse;margin:6px 0 10px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e3e6ea;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f4f5f7;font-weight:600}td.num{text-align:right}code{font-size:12.5px;word-break:break-all}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:600;color:#fff}
.promoted,.pass{background:#1e7b34}.rejected,.fail{background:#b42318}.note{background:#5b6472}
ul.reasons{list-style:none;padding:0}ul.reasons li{margin:4px 0}
ul.reasons .badge{font-size:11px;min-width:34px;text-align:center;margin-right:8px}
.figures{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:12px 24px}
figure{margin:0}figure svg{width:100%;height:auto}figure.bars{max-width:720px}figcaption{color:#5b6472;font-size:12.5px}
"""


class CardError(TidemarkError, RuntimeError):
    """A model card cannot be rendered from what the training run left; the message says what is missing."""


class NoCard(NotFound):
    """A version has no model card (published before training wrote one); the message says how to get one."""


class _Html(str):
    """Markup whose text is escaped already: a table cell takes it as it is."""


class _Num(str):
    """A number already formatted: a table cell aligns it right, as it does numbers."""


# -- rendering ------------------------------------------------------------------------------------
def render_card(spec: ModelSpec, *, extract_info: dict, evaluation: dict, decision: dict, lineage: dict,
                y_test: Any, p_test: Any) -> str:
    """The card of the challenger in `evaluation` as one HTML document (figures inline, nothing external)."""
    y, p = np.asarray(y_test).astype(np.int8), np.asarray(p_test, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise CardError(f"the card needs one score per test label; got {y.shape} labels and {p.shape} scores")
    challenger = evaluation["challenger"]
    sections = [
        _header(spec, extract_info, challenger, decision),
        _data(spec, extract_info),
        _metrics(spec, evaluation),
        _figures(y, p, challenger["test"]),
        _segments(spec, evaluation),
        _fairness(spec, evaluation),
        _attributions(challenger),
        _comparison(spec, evaluation),
        _decision(decision),
        _lineage(lineage),
    ]
    title = f"Model card: {spec.name} ({challenger['candidate']})"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>'
            f'<body><main>{"".join(sections)}</main></body></html>\n')


def _header(spec: ModelSpec, extract_info: dict, challenger: dict, decision: dict) -> str:
    label = spec.label
    known = (f", known {label.horizon_days} day{'s' if label.horizon_days != 1 else ''} after "
             f"<code>{_e(spec.time_column)}</code>" if spec.time_column else " (a snapshot: no time column)")
    facts = [
        ("label", _Html(f"<code>{_e(label.column)}</code> of <code>{_e(spec.label_relation)}</code>{known}")),
        ("one row per", ", ".join(c for c in (spec.entity_key, spec.time_column) if c)),
        ("features from", _Html(f"<code>{_e(spec.features.relation)}</code>")),
        ("as of", extract_info.get("as_of") or "every label known (no as-of date)"),
        ("challenger", f"{challenger['candidate']} ({challenger['kind']}), fitted in "
                       f"{_seconds(challenger.get('fit_seconds'))} s on {challenger.get('device', 'cpu')}"),
        ("parameters", ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                                 for k, v in sorted((challenger.get("params") or {}).items())) or "defaults"),
        ("primary metric", spec.primary_metric),
        ("gate", _Html(_badge(decision.get("decision", "undecided")))),
    ]
    predicts = spec.description or f"The probability that {label.column} is 1."
    return (f"<h1>{_e(spec.name)}: model card</h1><p class=\"lead\">{_e(predicts)}</p>"
            + _table(["", ""], facts, header=False))


def _data(spec: ModelSpec, extract_info: dict) -> str:
    from ml.training.data import SPLITS

    windows = extract_info.get("windows") or {}
    rows = []
    for name in sorted(windows, key=lambda n: (SPLITS.index(n) if n in SPLITS else len(SPLITS), n)):
        w = windows[name]
        n, pos = w.get("rows"), w.get("positives")
        rate = pos / n if isinstance(n, int) and n and isinstance(pos, int) else None
        rows.append([name, w.get("start", ""), w.get("end", ""), n, pos, rate])
    s = spec.split
    if s.strategy == "time":
        sampling = (f"Split by {spec.time_column}: the last {s.test_days} days are the test window and the "
                    f"{s.validation_days} before them validation, with gaps of {spec.gap_days} days between windows "
                    f"(the label horizon is {spec.label.horizon_days}), so no label crosses a boundary. Training "
                    + (f"uses at most the {s.train_days} days before the first gap" if s.train_days else
                       "uses all the history before the first gap")
                    + (f", keeping every {_ordinal(s.sample_every_days)} date" if s.sample_every_days > 1 else "")
                    + ".")
    else:
        sampling = (f"A stratified random split (seed {spec.seed}): {s.test_fraction:.0%} test, "
                    f"{s.validation_fraction:.0%} validation, the rest training.")
    schema = extract_info.get("schema") or {}
    numeric, categorical = schema.get("numeric", []), schema.get("categorical", [])
    features = (f"<p>{len(numeric) + len(categorical)} features: {len(numeric)} numeric, {len(categorical)} "
                f"categorical.</p><details><summary>feature columns</summary><p><code>"
                f"{_e(', '.join([*numeric, *categorical]))}</code></p></details>") if schema else ""
    return ("<h2>Data</h2>" + _table(["split", "from", "to", "rows", "positives", "positive rate"], rows)
            + f"<p>{_e(sampling)} Training rows: {_e(_fmt((windows.get('train') or {}).get('rows')))}; the "
            f"challenger was chosen on validation {_e(spec.primary_metric)} and scored on the test rows.</p>"
            + features)


def _metrics(spec: ModelSpec, evaluation: dict) -> str:
    test = evaluation["challenger"]["test"]
    champion = (evaluation.get("champion") or {}).get("test")
    headers = ["metric", "", "challenger"] + (["champion " + evaluation["champion"]["version"]] if champion else [])
    rows = [[name, _LABELS.get(name, ""), value] + ([champion.get(name)] if champion else [])
            for name, value in test.items() if _scalar(value)]
    metric = spec.primary_metric
    board = [[_Html(f"{_e(t['candidate'])} <span class=\"muted\">(challenger)</span>")
              if t["candidate"] == evaluation["challenger"]["candidate"] else t["candidate"],
              t.get("kind"), t.get("validation", {}).get(metric), t.get("test", {}).get(metric), t.get("threshold"),
              t.get("trials"), _seconds(t.get("fit_seconds")), t.get("device")]
             for t in evaluation.get("leaderboard") or []]
    return ("<h2>Test metrics</h2>" + _table(headers, rows)
            + "<h3>Candidates</h3>"
            + _table(["candidate", "kind", f"validation {metric}", f"test {metric}", "threshold", "trials",
                      "fit s", "device"], board))


def _figures(y: np.ndarray, p: np.ndarray, test: dict) -> str:
    both = 0 < int(y.sum()) < len(y)
    figures = [_roc(y, p), _pr(y, p)] if both else []
    figures += [_reliability(y, p, test.get("reliability")), _distribution(y, p, test.get("threshold"))]
    note = "" if both else "<p>The test rows hold one class only, so there are no ROC or PR curves.</p>"
    return "<h2>Curves on the test rows</h2>" + note + f'<div class="figures">{"".join(figures)}</div>'


def _segments(spec: ModelSpec, evaluation: dict) -> str:
    segments = evaluation["challenger"]["test"].get("segments") or {}
    if not segments:
        return "<h2>Segments</h2><p>The spec names no segment columns.</p>"
    metric = spec.primary_metric
    champion = ((evaluation.get("champion") or {}).get("test") or {}).get("segments") or {}
    regressed = {(r.get("column"), r.get("value")) for r in evaluation.get("regressions") or []}
    marked = (f" Rows marked ✗ regress against the champion by more than {spec.promotion.segment_tolerance}."
              if champion else "")
    parts = [f"<h2>Segments</h2><p>Metrics are left out for segments of fewer than "
             f"{_e(spec.promotion.min_segment_rows)} rows.{_e(marked)}</p>"]
    for column, values in segments.items():
        names = [k for k in next(iter(values.values()), {}) if k not in ("n", "positives")]
        headers = ["value", "rows", "positives", "positive rate", *names] + (
            [f"champion {metric}", "regressed"] if champion else [])
        rows = []
        for value, m in values.items():
            row = [value, m.get("n"), m.get("positives"), m["positives"] / m["n"] if m.get("n") else None,
                   *(m.get(k) for k in names)]
            if champion:
                row += [(champion.get(column, {}).get(value) or {}).get(metric),
                        "✗" if (column, value) in regressed else ""]
            rows.append(row)
        parts.append(f"<h3>{_e(column)}</h3>" + _table(headers, rows))
    return "".join(parts)


def _fairness(spec: ModelSpec, evaluation: dict) -> str:
    report = evaluation["challenger"].get("fairness")
    if not report:
        named = ", ".join(spec.fairness.attributes)
        text = (f"The spec names fairness attributes ({named}) but this evaluation holds no fairness report."
                if named else "No fairness attributes in the spec.")
        return f"<h2>Fairness</h2><p>{_e(text)}</p>"
    bound = spec.promotion.max_disparity
    policy = (f"The gate bounds the {spec.promotion.disparity_metric.replace('_', ' ')} difference at {bound}."
              if bound is not None else "The differences are reported; the gate does not bound them.")
    champion = evaluation.get("champion") or {}
    threshold = _fmt(evaluation["challenger"].get("threshold"))
    parts = [f"<h2>Fairness</h2><p>{_e(policy)} Decisions at the threshold {_e(threshold)}; groups of fewer than "
             f"{spec.fairness.min_group_rows} rows get counts but no rates.</p>"]
    for attribute, result in report.items():
        groups = result.get("groups") or {}
        found = {k for g in groups.values() for k in g}
        columns = [c for c in _FAIRNESS_COLUMNS if c in found] + sorted(found - set(_FAIRNESS_COLUMNS))
        rows = [[value, *(g.get(c) for c in columns)] for value, g in groups.items()]
        summary = (f"demographic parity difference {_fmt(result.get('demographic_parity_difference'))}, "
                   f"equalized odds difference {_fmt(result.get('equalized_odds_difference'))}")
        before = (champion.get("fairness") or {}).get(attribute)
        if before:
            summary += (f" (champion {champion.get('version')}: {_fmt(before.get('demographic_parity_difference'))} "
                        f"and {_fmt(before.get('equalized_odds_difference'))})")
        note = f"<p class=\"muted\">{_e(result['note'])}</p>" if result.get("note") else ""
        parts.append(f"<h3>{_e(attribute)}</h3><p>{_e(summary)}</p>" + note
                     + _table(["group", *(_FAIRNESS_NAMES.get(c, c.replace("_", " ")) for c in columns)], rows))
    return "".join(parts)


def _attributions(challenger: dict) -> str:
    shap = challenger.get("shap_summary")
    if shap:
        values, title = shap, "mean |SHAP contribution| on the test rows"
        text = "The mean absolute SHAP contribution of each feature to the score, over the test rows."
    elif challenger.get("importance"):
        values, title = challenger["importance"], "feature importance"
        text = ("This evaluation holds no SHAP summary; shown instead is the feature importance that evaluation "
                "computed (the model's own, or the permutation importance on the test rows).")
    else:
        return "<h2>What drives the score</h2><p>This evaluation holds no feature attributions.</p>"
    ranked = sorted(((str(k), float(v)) for k, v in values.items() if _number(v)), key=lambda kv: -abs(kv[1]))
    return (f"<h2>What drives the score</h2><p>{_e(text)}</p>" + _bars(ranked[:TOP_FEATURES], title)
            + f"<details><summary>all {len(ranked)} features</summary>"
            + _table(["feature", title], [[k, v] for k, v in ranked]) + "</details>")


def _comparison(spec: ModelSpec, evaluation: dict) -> str:
    champion, comparison = evaluation.get("champion"), evaluation.get("comparison")
    if champion is None:
        return "<h2>Against the champion</h2><p>No champion yet: this is the first version the gate judged.</p>"
    if not comparison:
        return (f"<h2>Against the champion</h2><p>No comparison with champion {_e(champion['version'])} was "
                "computed.</p>")
    metric = comparison.get("metric", spec.primary_metric)
    alpha = comparison.get("alpha", 0.05)  # paired_bootstrap's default when the comparison does not say
    rows = [["challenger", comparison.get("challenger")],
            [f"champion {champion['version']}", comparison.get("champion")],
            ["gain (positive: the challenger is better)", _signed(comparison.get("diff"))],
            [f"{100 * (1 - alpha):g}% bootstrap interval of the gain",
             _Num(f"[{_signed(comparison.get('ci_low'))}, {_signed(comparison.get('ci_high'))}]")],
            ["share of resamples where the challenger is better", comparison.get("p_better")],
            ["bootstrap resamples (skipped: one class)",
             _Num(f"{_fmt(comparison.get('n_boot'))} ({_fmt(comparison.get('n_skipped'))})")]]
    regressions = evaluation.get("regressions") or []
    listed = (_table(["column", "value", "rows", "challenger", "champion", "change"],
                     [[r.get("column"), r.get("value"), r.get("n"), r.get("challenger"), r.get("champion"),
                       _signed(r.get("delta"))] for r in regressions])
              if regressions else "<p>No segment regresses beyond the tolerance.</p>")
    return (f"<h2>Against the champion</h2><p>{_e(metric)} of both models on the same test rows, with a paired "
            "bootstrap of the difference.</p>" + _table([metric, ""], rows) + "<h3>Segment regressions</h3>" + listed)


def _decision(decision: dict) -> str:
    items = []
    for reason in decision.get("reasons") or []:
        head, _, rest = str(reason).partition(":")
        kind = head.strip().lower() if head.strip().lower() in ("pass", "fail") and rest else ""
        badge = (f'<span class="badge {kind}">{"pass" if kind == "pass" else "FAIL"}</span>' if kind
                 else '<span class="badge note">note</span>')
        items.append(f"<li>{badge}{_e(rest.strip() if kind else str(reason))}</li>")
    return (f"<h2>The gate's decision: {_badge(decision.get('decision', 'undecided'))}</h2>"
            f'<ul class="reasons">{"".join(items)}</ul>')


def _lineage(lineage: dict) -> str:
    rows = [[_LINEAGE.get(k, k.replace("_", " ")), _Html(f"<code>{_e(_plain(v))}</code>")]
            for k, v in lineage.items() if k != "libraries"]
    libraries = [[name, version] for name, version in (lineage.get("libraries") or {}).items()]
    return ("<h2>Lineage</h2>" + _table(["", ""], rows, header=False)
            + ("<h3>Library versions</h3>" + _table(["library", "version"], libraries) if libraries else ""))


# -- figures --------------------------------------------------------------------------------------
def _figure(name: str, draw, caption: str = "", size: tuple[float, float] = (5.0, 3.8)) -> str:
    """`draw(ax)` on a new figure, as inline SVG markup in a <figure>: text kept as text, no metadata, and ids
    unique to the figure, so that several figures share one page."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend to choose

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "model-card", "font.size": 9,
                                "axes.spines.top": False, "axes.spines.right": False}):
        fig = Figure(figsize=size)
        ax = fig.subplots()
        draw(ax)
        ax.grid(alpha=0.25)
        fig.tight_layout()
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    svg = re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg"):], flags=re.DOTALL)
    prefix = re.sub(r"[^a-z0-9]+", "-", name.lower())  # matplotlib numbers its ids per figure, from 1
    svg = re.sub(r'(\bid="|url\(#|href="#)', lambda m: f"{m.group(1)}{prefix}-", svg)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{_e(name)}" ', 1)
    return f"<figure>{svg}" + (f"<figcaption>{_e(caption)}</figcaption>" if caption else "") + "</figure>"


def _thin(*arrays: np.ndarray) -> list[np.ndarray]:
    """At most MAX_CURVE_POINTS points of a curve, first and last kept."""
    n = len(arrays[0])
    if n <= MAX_CURVE_POINTS:
        return list(arrays)
    keep = np.unique(np.linspace(0, n - 1, MAX_CURVE_POINTS).round().astype(int))
    return [a[keep] for a in arrays]


def _roc(y: np.ndarray, p: np.ndarray) -> str:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    auc = roc_auc_score(y, p)

    def draw(ax):
        ax.plot(*_thin(fpr, tpr), color="#1f5fbf", lw=1.8, label=f"challenger (AUC {auc:.4f})")
        ax.plot([0, 1], [0, 1], ls="--", color="#8a94a3", lw=1, label="chance")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
               title=f"ROC curve, AUC {auc:.4f}")
        ax.legend(loc="lower right", frameon=False)

    return _figure("ROC curve", draw, f"ROC over {len(y):,} test rows.")


def _pr(y: np.ndarray, p: np.ndarray) -> str:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, p, drop_intermediate=True)
    ap, base = average_precision_score(y, p), float(y.mean())

    def draw(ax):
        ax.step(*_thin(recall, precision), where="post", color="#1f5fbf", lw=1.8, label=f"challenger (AP {ap:.4f})")
        ax.axhline(base, ls="--", color="#8a94a3", lw=1, label=f"positive rate {base:.4f}")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01),
               title=f"Precision-recall, AP {ap:.4f}")
        ax.legend(loc="upper right", frameon=False)

    return _figure("precision-recall curve", draw, "Precision against recall over every threshold.")


def _reliability(y: np.ndarray, p: np.ndarray, table: list[dict] | None) -> str:
    if table:
        bins = [b for b in table if b.get("n")]
        mean, observed, n = (np.array([b[k] for b in bins], dtype=float) for k in ("mean_score", "observed_rate", "n"))
    else:
        edges = np.linspace(0, 1, 11)
        ids = np.searchsorted(edges[1:-1], p)
        n = np.bincount(ids, minlength=10).astype(float)
        filled = n > 0
        mean = (np.bincount(ids, weights=p, minlength=10)[filled] / n[filled])
        observed = (np.bincount(ids, weights=y, minlength=10)[filled] / n[filled])
        n = n[filled]
    top = float(max(mean.max(initial=0), observed.max(initial=0))) if len(mean) else 1.0
    limit = min(1.0, max(0.05, top * 1.1))

    def draw(ax):
        ax.plot([0, limit], [0, limit], ls="--", color="#8a94a3", lw=1, label="perfect calibration")
        ax.plot(mean, observed, color="#1f5fbf", lw=1.2, label="challenger")
        ax.scatter(mean, observed, s=12 + 240 * n / max(n.max(initial=1), 1), color="#1f5fbf", alpha=0.6, zorder=3)
        ax.set(xlabel="mean score in bin", ylabel="observed positive rate", xlim=(0, limit), ylim=(0, limit),
               title="Reliability")
        ax.legend(loc="upper left", frameon=False)

    return _figure("reliability diagram", draw, "Observed rate against the mean score in ten equal-width bins (a "
                                                "marker's area grows with its rows); on the diagonal the scores are "
                                                "calibrated.")


def _distribution(y: np.ndarray, p: np.ndarray, threshold: float | None) -> str:
    top = float(p.max()) if p.max() > 0 else 1.0
    bins = np.linspace(0.0, min(1.0, top * 1.02), 41)

    def draw(ax):
        for label, colour, name in ((0, "#8a94a3", "negatives"), (1, "#d9480f", "positives")):
            scores = p[y == label]
            if len(scores):
                ax.hist(scores, bins=bins, density=True, histtype="stepfilled", alpha=0.45, color=colour,
                        label=f"{name} ({len(scores):,})")
        if threshold is not None:
            ax.axvline(threshold, color="#1d2330", lw=1.2, ls="-.", label=f"threshold {threshold:.4f}")
        ax.set(xlabel="score", ylabel="density", title="Score distribution by class")
        ax.legend(loc="upper right", frameon=False)

    return _figure("score distribution", draw, "Scores of the test rows by their label, each class scaled to area "
                                               "one, with the decision threshold.")


def _bars(ranked: list[tuple[str, float]], title: str) -> str:
    names, values = [k for k, _ in ranked][::-1], [v for _, v in ranked][::-1]

    def draw(ax):
        ax.barh(range(len(names)), values, color="#1f5fbf")
        ax.set_yticks(range(len(names)), names)
        ax.set(xlabel=title, title=f"Top {len(names)} features")

    return _figure("feature attributions", draw, size=(7.0, 0.8 + 0.24 * len(names))).replace(
        "<figure>", '<figure class="bars">', 1)


# -- cells ----------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, np.integer, np.floating))


def _number(value: Any) -> bool:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return numeric and math.isfinite(value)


def _fmt(value: Any) -> str:
    """A number as the card shows it: counts with separators, the rest with four decimals; – for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4f}" if value == 0 or abs(value) >= 1e-4 else f"{float(value):.2e}"
    return str(value)


def _signed(value: Any) -> str:
    return _Num(f"{value:+.4f}" if _number(value) else _fmt(value))


def _seconds(value: Any) -> str:
    return _Num(f"{value:.1f}" if _number(value) else _fmt(value))


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_plain, value)) or "none"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return _fmt(value)


def _badge(decision: str) -> str:
    kind = decision if decision in ("promoted", "rejected") else "note"
    return f'<span class="badge {kind}">{_e(decision)}</span>'


def _table(headers: list[str], rows: Iterable[Iterable[Any]], *, header: bool = True) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, _Html):
            return f"<td>{value}</td>"
        number = isinstance(value, (int, float, np.integer, np.floating, _Num)) and not isinstance(value, bool)
        return f'<td class="num">{_e(_fmt(value))}</td>' if number else f"<td>{_e(_fmt(value))}</td>"

    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


# -- training and the registry --------------------------------------------------------------------
def card_lineage(spec: ModelSpec, settings: Settings, extract_info: dict) -> dict:
    """What the version was built from: the code's commit and state, the dbt manifest, the rows, the libraries."""
    from ml.training.steps import _sha256, git_state, library_versions

    git = git_state(settings)
    return {"git_commit": git["commit"], "git_dirty": git["dirty"], "git_diff_sha256": git["diff_sha256"],
            "git_untracked": git["untracked"], "dbt_manifest_sha256": _sha256(settings.dbt_manifest),
            "data_fingerprint": extract_info["fingerprint"], "spec_fingerprint": spec.fingerprint(),
            "libraries": library_versions()}


def write_card(spec: ModelSpec, settings: Settings, extract_info: dict, evaluation: dict, decision: dict) -> Path:
    """Render the challenger's card from the run's test rows and scores into `<challenger directory>/model_card.html`,
    where publishing picks it up with the version's other files; its path."""
    import pyarrow.parquet as pq

    from ml.training.data import Extract, load_split

    ex = Extract.from_dict(extract_info)
    challenger = evaluation["challenger"]
    directory = Path(challenger["directory"])
    scores = directory.parent / f"{challenger['candidate']}.test.npy"
    if not scores.is_file():
        raise CardError(f"the test scores of {challenger['candidate']} are missing ({scores}); the evaluate step "
                        "writes them, so rerun the training from evaluate")
    _, y_test = load_split(ex, "test")
    p_test = np.load(scores)
    if len(p_test) != len(y_test):
        raise CardError(f"{scores} holds {len(p_test)} scores but the test split has {len(y_test)} rows; they come "
                        "from different runs, so rerun the training from evaluate")
    windows = {name: w if "rows" in w else {**w, "rows": pq.read_metadata(ex.directory / f"{name}.parquet").num_rows}
               for name, w in ex.windows.items()}
    page = render_card(spec, extract_info={**extract_info, "windows": windows}, evaluation=evaluation,
                       decision=decision, lineage=card_lineage(spec, settings, extract_info), y_test=y_test,
                       p_test=p_test)
    path = directory / CARD
    # Written beside the directory, then moved in: publishing takes every file in it, never half a card.
    tmp = directory.parent / f".{directory.name}.{CARD}.{os.getpid()}.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def card_key(model: str, version: str) -> str:
    return f"{model}/versions/{version}/{CARD}"


def _require_card(registry: Registry, model: str, version: str) -> dict:
    """The manifest entry of a version's card; NoCard when the version was published without one."""
    files = registry.get(model, version).manifest.get("files", {})
    if CARD not in files:
        raise NoCard(f"{model} {version} has no model card: it was published before training wrote cards, and a "
                     f"card is rendered only while a version is trained. Train a new version for one (`python -m ml "
                     f"train --spec {model}` or the train_{model} DAG)")
    return files[CARD]


def card_location(registry: Registry, model: str, version: str) -> str:
    """Where a version's card is stored: a file:// URI (which a browser opens) for a local registry, else its
    s3:// URI. NoCard for a version without one, the registry's NotFound for an unknown version."""
    _require_card(registry, model, version)
    key = card_key(model, version)
    if isinstance(registry.store, LocalStore) and not registry.store.exists(key):
        raise IntegrityError(f"{registry.store.uri_for(key)} is in the manifest of {model} {version} but missing")
    return registry.store.uri_for(key)


def read_card(registry: Registry, model: str, version: str) -> bytes:
    """A version's card, checked against the sha256 its manifest records."""
    expected = _require_card(registry, model, version)
    key = card_key(model, version)
    try:
        data = registry.get_bytes(key)
    except NotFound:
        raise IntegrityError(f"{registry.store.uri_for(key)} is in the manifest of {model} {version} but missing"
                             ) from None
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise IntegrityError(f"{registry.store.uri_for(key)} does not match the sha256 in the manifest of {model} "
                             f"{version} (altered or truncated)")
    return data
