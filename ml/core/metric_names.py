"""The metric names a spec may name, each with its direction; free of heavy imports, as DAG files read specs."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

# name -> whether higher is better. Scored metrics have a score function over labels and probabilities, so
# they can be the primary metric that the champion comparison, the bootstrap and the segments use.
SCORE_METRICS: Mapping[str, bool] = MappingProxyType(
    {"roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False}
)
# Every number of the test evaluation that a promotion floor may bound (for a loss the floor is a ceiling).
# Calibration is left out: promotion.max_ece bounds it.
FLOOR_METRICS: Mapping[str, bool] = MappingProxyType(
    {**SCORE_METRICS, "precision": True, "recall": True, "f1": True, "lift_top_decile": True}
)
