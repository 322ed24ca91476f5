"""Exact path-dependent TreeSHAP for LightGBM boosters: the values LightGBM's `pred_contrib` gives, computed
about 20 times faster (measured: 100,000 rows of a 125-tree churn model, where `pred_contrib` took 45 s on
two cores). Leaves are tabulated per pattern of agreement with their path, and the per-row loop is compiled
with numba and run in threads.
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import numpy as np

# -- TreeSHAP ---------------------------------------------------------------------------------------
# Leaves whose values are tabulated for every agreement pattern, fewest distinct path features first, up to
# this many table entries in all (128 MiB); the others compute a row's values as it comes.
_TABLE_ENTRIES = 1 << 24
_NAN_MISSING, _ZERO_MISSING, _NO_MISSING, _CATEGORICAL = 0, 1, 2, 3
_THREAD_ROWS = 2048  # rows per thread at the least


class _TreeShap:
    """Exact path-dependent TreeSHAP of a LightGBM model: the values LightGBM's `pred_contrib` gives, faster.

    A leaf adds to a row's values through the d distinct features on its path only, and depends on the row only
    through its agreement pattern: for each of those features, whether all of the path's splits on it go the
    row's way. Feature i gets value x (agrees_i - zero_i) x sum_k w(k) [t^k] prod_{j != i} (zero_j + agrees_j t),
    with w(k) = k! (d - k - 1)! / d! and zero_j the share of the training rows that the path's splits on feature j
    send towards the leaf: the Shapley-weighted sum over the subsets of the other features. Each leaf's values
    are tabulated once per pattern (as many leaves as `_TABLE_ENTRIES` allows; the others compute them row by
    row), so a compiled loop (numba) only decides a block of rows' splits, tree by tree, and adds each leaf's
    values for each row's pattern: per row and leaf a few bit tests and additions instead of TreeSHAP's
    recursion over paths. Splits are decided as LightGBM decides them (missing values, the zero bucket,
    categorical sets).
    """

    def __init__(self, dump: dict[str, Any]):
        """Read the trees of a dumped model (`Booster.dump_model`); `of` also tabulates them."""
        self.n_features, self.base = int(dump["max_feature_idx"]) + 1, 0.0
        self.columns: dict[str, list] = {name: [] for name in (
            "feature", "kind", "threshold", "default_left", "cat_start", "cat_end", "cats", "tree_splits",
            "tree_leaves", "leaf_value", "leaf_parts", "part_feature", "part_zero", "part_conditions",
            "condition_split", "condition_left")}
        c = self.columns
        c["tree_splits"].append(0), c["tree_leaves"].append(0), c["leaf_parts"].append(0)
        c["part_conditions"].append(0)
        for info in dump["tree_info"]:
            self._walk(info["tree_structure"], [], c["tree_splits"][-1])
            c["tree_splits"].append(len(c["feature"]))
            c["tree_leaves"].append(len(c["leaf_value"]))
        self.arrays = {name: np.array(values, np.bool_ if name in ("default_left", "condition_left") else
                                      np.float64 if name in ("threshold", "leaf_value", "part_zero") else np.int64)
                       for name, values in c.items()}

    @classmethod
    def of(cls, dump: dict[str, Any]) -> "_TreeShap | None":
        """The explainer of a dumped model; None for one whose trees it does not read (linear trees, a path through
        more distinct features than a pattern's 62 bits hold)."""
        if any(info.get("is_linear") for info in dump["tree_info"]):
            return None
        explainer = cls(dump)
        if len(explainer.arrays["leaf_parts"]) > 1 and np.diff(explainer.arrays["leaf_parts"]).max() > 62:
            return None
        explainer._tabulate()
        return explainer

    def _walk(self, node: dict[str, Any], path: list[tuple[int, bool, int, float]], first: int) -> None:
        c = self.columns
        if "leaf_value" in node:
            value = float(node["leaf_value"])
            self.base += value * float(np.prod([fraction for *_, fraction in path]))
            if path:
                self._leaf(value, path)
            return
        categorical = node["decision_type"] == "=="
        cats = [int(v) for v in str(node["threshold"]).split("||")] if categorical else []
        c["feature"].append(node["split_feature"])
        c["kind"].append(_CATEGORICAL if categorical else {"NaN": _NAN_MISSING, "Zero": _ZERO_MISSING}.get(
            node["missing_type"], _NO_MISSING))
        c["threshold"].append(0.0 if categorical else float(node["threshold"]))
        c["default_left"].append(bool(node["default_left"]))
        c["cat_start"].append(len(c["cats"]))
        c["cats"] += cats
        c["cat_end"].append(len(c["cats"]))
        k = len(c["feature"]) - 1 - first  # the split's place in its tree
        for child, left in ((node["left_child"], True), (node["right_child"], False)):
            count = child["leaf_count"] if "leaf_value" in child else child["internal_count"]
            self._walk(child, path + [(k, left, node["split_feature"], count / node["internal_count"])], first)

    def _leaf(self, value: float, path: list[tuple[int, bool, int, float]]) -> None:
        c = self.columns
        parts: dict[int, list[tuple[int, bool, float]]] = {}
        for k, left, feature, fraction in path:
            parts.setdefault(feature, []).append((k, left, fraction))
        for feature, conditions in parts.items():
            c["part_feature"].append(feature)
            c["part_zero"].append(float(np.prod([fraction for *_, fraction in conditions])))
            c["condition_split"] += [k for k, _, _ in conditions]
            c["condition_left"] += [left for _, left, _ in conditions]
            c["part_conditions"].append(len(c["condition_split"]))
        c["leaf_value"].append(value)
        c["leaf_parts"].append(len(c["part_feature"]))

    def _tabulate(self) -> None:
        """Tabulate the leaves' values per pattern, the leaves with the fewest path features first."""
        depth = np.diff(self.arrays["leaf_parts"])
        sizes = depth << depth  # 2^d patterns x d values
        order = np.argsort(depth, kind="stable")
        fits = np.cumsum(sizes[order]) <= _TABLE_ENTRIES
        start = np.full(len(depth), -1, np.int64)
        start[order[fits]] = np.concatenate([[0], np.cumsum(sizes[order[fits]])[:-1]]) if fits.any() else []
        self.arrays["table_start"] = start
        d = int(depth.max()) if len(depth) else 1
        weights = np.zeros((d + 1, d + 1))
        for n in range(1, d + 1):
            weights[n, :n] = [math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)]
        self.arrays["weights"] = weights
        self.arrays["tables"] = np.zeros(int(sizes[order[fits]].sum()))
        a = self.arrays
        _numba()[0](a["leaf_value"], a["leaf_parts"], a["part_zero"], a["table_start"], weights, a["tables"])

    def __call__(self, matrix: np.ndarray) -> tuple[np.ndarray, float]:
        """The TreeSHAP values of each row of LightGBM's input matrix, and the expected raw score."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float64)
        out = np.zeros((len(matrix), self.n_features))
        a, explain = self.arrays, _numba()[1]
        model = [a[name] for name in ("feature", "kind", "threshold", "default_left", "cat_start", "cat_end", "cats",
                                      "tree_splits", "tree_leaves", "leaf_value", "leaf_parts", "part_feature",
                                      "part_zero", "part_conditions", "condition_split", "condition_left",
                                      "table_start", "weights", "tables")]
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = max(1, min(cpus, -(-len(matrix) // _THREAD_ROWS)))
        step = -(-len(matrix) // workers) if len(matrix) else 1
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda lo: explain(matrix[lo:lo + step], *model, out[lo:lo + step]),
                          range(0, len(matrix), step)))
        return out, self.base


_EXPLAINERS: dict[str, "_TreeShap | None"] = {}  # by model text: a model loaded again is not read again


def tree_shap(booster, iterations: int) -> "_TreeShap | None":
    """The _TreeShap of a booster's first `iterations` trees, kept for the few models a process explains."""
    text = booster.model_to_string(num_iteration=iterations)
    key = hashlib.sha256(text.encode()).hexdigest()
    if key not in _EXPLAINERS:
        if len(_EXPLAINERS) >= 4:
            _EXPLAINERS.pop(next(iter(_EXPLAINERS)))
        _EXPLAINERS[key] = _TreeShap.of(booster.dump_model(num_iteration=iterations))
    return _EXPLAINERS[key]


@cache
def _numba() -> tuple:
    """_TreeShap's compiled loops, (tabulate, explain): numba, compiled on first use and cached on disk. They
    release the GIL, and _TreeShap runs `explain` on parts of the rows in threads: numba's own parallel loops
    would bring a second OpenMP runtime beside LightGBM's, which slows LightGBM's predictions afterwards."""
    from numba import njit

    def compiled(function):
        try:
            return njit(cache=True, nogil=True)(function)
        except RuntimeError:  # no folder to cache compiled code in: compile in each process
            return njit(nogil=True)(function)

    @compiled
    def leaf_values(value, zero, pattern, weights, out):
        """The values a leaf adds to its path's features for one agreement pattern (see _TreeShap)."""
        d = len(zero)
        poly = np.empty(d)
        for i in range(d):
            poly[:] = 0.0
            poly[0] = 1.0
            degree = 0
            for j in range(d):
                if j != i:  # poly *= zero_j + agrees_j t
                    agrees = (pattern >> j) & 1
                    for k in range(degree + 1, 0, -1):
                        poly[k] = poly[k] * zero[j] + (poly[k - 1] if agrees else 0.0)
                    poly[0] *= zero[j]
                    degree += 1
            total = 0.0
            for k in range(d):
                total += weights[k] * poly[k]
            out[i] = value * (((pattern >> i) & 1) - zero[i]) * total

    @compiled
    def tabulate(leaf_value, leaf_parts, part_zero, table_start, weights, tables):
        for leaf in range(len(leaf_value)):
            if table_start[leaf] >= 0:
                p0, p1 = leaf_parts[leaf], leaf_parts[leaf + 1]
                d = p1 - p0
                for pattern in range(1 << d):
                    at = table_start[leaf] + pattern * d
                    leaf_values(leaf_value[leaf], part_zero[p0:p1], pattern, weights[d], tables[at:at + d])

    @compiled
    def explain(x, feature, kind, threshold, default_left, cat_start, cat_end, cats, tree_splits, tree_leaves,
                leaf_value, leaf_parts, part_feature, part_zero, part_conditions, condition_split, condition_left,
                table_start, weights, tables, out):
        most = 1
        for t in range(len(tree_splits) - 1):
            most = max(most, tree_splits[t + 1] - tree_splits[t])
        block = 2048
        for b in range((x.shape[0] + block - 1) // block):  # a block of rows goes through one tree, then the next
            r0, r1 = b * block, min(x.shape[0], b * block + block)
            n = r1 - r0
            goes = np.empty((most, block), np.bool_)
            agrees = np.empty(block, np.bool_)
            pattern = np.empty(block, np.int64)
            acc = np.zeros((out.shape[1], block))  # feature-major, so that the inner loops run over rows
            values = np.empty(weights.shape[0])
            for t in range(len(tree_splits) - 1):
                first = tree_splits[t]
                for s in range(first, tree_splits[t + 1]):  # LightGBM's NumericalDecision / CategoricalDecision
                    for r in range(n):
                        v = x[r0 + r, feature[s]]
                        if kind[s] == 3:  # left when the code is in the split's set; missing and negative go right
                            left = False
                            if v == v and v >= 0:
                                code = np.int64(v)
                                for c in range(cat_start[s], cat_end[s]):
                                    if cats[c] == code:
                                        left = True
                                        break
                        elif v != v and kind[s] == 0:  # missing, where the split learned where missing goes
                            left = default_left[s]
                        else:
                            if v != v:
                                v = 0.0
                            if kind[s] == 1 and -1e-35 <= v <= 1e-35:  # the zero bucket
                                left = default_left[s]
                            else:
                                left = v <= threshold[s]
                        goes[s - first, r] = left
                for leaf in range(tree_leaves[t], tree_leaves[t + 1]):
                    p0, p1, start = leaf_parts[leaf], leaf_parts[leaf + 1], table_start[leaf]
                    d = p1 - p0
                    pattern[:n] = 0
                    for q in range(p0, p1):
                        bit = np.int64(1) << (q - p0)
                        c0, c1 = part_conditions[q], part_conditions[q + 1]
                        if c1 - c0 == 1:  # one split on this feature: its bit is whether the row goes its way
                            s, side = condition_split[c0], condition_left[c0]
                            for r in range(n):
                                pattern[r] |= bit if goes[s, r] == side else 0
                            continue
                        agrees[:n] = True
                        for c in range(c0, c1):
                            s, side = condition_split[c], condition_left[c]
                            for r in range(n):
                                agrees[r] &= goes[s, r] == side
                        for r in range(n):
                            pattern[r] |= bit if agrees[r] else 0
                    if start >= 0:
                        for r in range(n):
                            pattern[r] = start + pattern[r] * d
                        for q in range(d):
                            row = acc[part_feature[p0 + q]]
                            for r in range(n):
                                row[r] += tables[pattern[r] + q]
                    else:
                        for r in range(n):
                            leaf_values(leaf_value[leaf], part_zero[p0:p1], pattern[r], weights[d], values[:d])
                            for q in range(d):
                                acc[part_feature[p0 + q], r] += values[q]
            for f in range(out.shape[1]):
                for r in range(n):
                    out[r0 + r, f] = acc[f, r]

    return tabulate, explain
