"""Model specs: what a model reads, how it is split, which candidates compete and how one is promoted.

A spec is a YAML file validated with pydantic. The feature columns come from the dbt contract of the
feature relation unless the spec lists them, so `ml/` knows nothing about any one business.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ml.core.errors import TidemarkError
from ml.core.metric_names import FLOOR_METRICS, SCORE_METRICS
from ml.core.settings import REPO_ROOT

SPEC_DIR = REPO_ROOT / "ml" / "specs"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CATEGORICAL_TYPES = ("char", "text", "string", "bool", "enum")
TEMPORAL_TYPES = ("date", "time", "interval")


class SpecError(TidemarkError, ValueError):
    """A spec file is missing, malformed, or disagrees with the dbt contract; the message names the field."""


@dataclass(frozen=True)
class FeatureSchema:
    """The model's input columns, split into numeric and categorical."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    def to_dict(self) -> dict[str, list[str]]:
        return {"numeric": list(self.numeric), "categorical": list(self.categorical)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureSchema":
        return cls(numeric=tuple(data["numeric"]), categorical=tuple(data["categorical"]))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _identifier(value: str | None) -> str | None:
    if value is not None and not IDENTIFIER.match(value):
        raise ValueError(f"{value!r} is not a plain column or relation name")
    return value


class FeatureSpec(_Strict):
    relation: str = Field(description="dbt model holding one row per entity per time value")
    include: tuple[str, ...] | None = Field(None, description="feature columns; default: the whole contract")
    exclude: tuple[str, ...] = ()
    categorical: tuple[str, ...] | None = Field(None, description="override which columns are categorical")

    _names = field_validator("relation")(_identifier)


class LabelSpec(_Strict):
    column: str
    relation: str | None = Field(None, description="dbt model with the label; default: the feature relation")
    horizon_days: int = Field(0, ge=0, description="days after the time column until the label is known")

    _names = field_validator("column", "relation")(_identifier)


class SplitSpec(_Strict):
    strategy: Literal["time", "random"] = "time"
    validation_days: int = Field(14, ge=1)
    test_days: int = Field(14, ge=1)
    gap_days: int | None = Field(None, ge=0, description="days between windows; default: the label horizon")
    train_days: int | None = Field(None, ge=1, description="cap on the training window; default: all history")
    sample_every_days: int = Field(1, ge=1, description="keep every k-th date in the training window")
    validation_fraction: float = Field(0.2, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)


class CandidateSpec(_Strict):
    name: str
    kind: Literal["lightgbm", "torch_mlp", "logistic"]
    params: dict[str, Any] = {}
    search: dict[str, list[Any]] = Field(default_factory=dict, description="parameter grid for the bounded search")

    _names = field_validator("name")(_identifier)

    @property
    def uses_gpu(self) -> bool:
        return self.kind == "torch_mlp"


class ThresholdSpec(_Strict):
    strategy: Literal["max_f1", "fixed"] = "max_f1"
    value: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _fixed_needs_value(self) -> "ThresholdSpec":
        if self.strategy == "fixed" and self.value is None:
            raise ValueError("strategy 'fixed' needs a value between 0 and 1")
        return self


class ApprovalSpec(_Strict):
    """A person approves a promotion that the gate passed before it happens (train_<model> waits in the UI)."""

    required: bool = Field(False, description="the train DAG waits for a person to approve a passed gate")
    timeout_hours: float = Field(72.0, gt=0, description="no answer within this long rejects the promotion")


class PromotionSpec(_Strict):
    floors: dict[str, float] = Field(default_factory=dict, description="absolute minimum per metric")
    min_improvement: float = Field(0.0, description="the CI lower bound on the primary metric gain must exceed this")
    segment_tolerance: float = Field(0.02, ge=0)
    min_segment_rows: int = Field(200, ge=1)
    max_ece: float = Field(0.1, gt=0, le=1)
    bootstrap_samples: int = Field(500, ge=50, le=10_000)
    max_disparity: float | None = Field(
        None, gt=0, le=1, description="bound on every fairness attribute's disparity (disparity_metric); none: reported only"
    )
    disparity_metric: Literal["equalized_odds", "demographic_parity"] = Field(
        "equalized_odds", description="the difference that max_disparity bounds"
    )
    approval: ApprovalSpec = ApprovalSpec()

    @field_validator("floors")
    @classmethod
    def _known_floors(cls, floors: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(floors) - set(FLOOR_METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; floors may name {', '.join(FLOOR_METRICS)} "
                             "(calibration has its own bound, max_ece)")
        return floors


class ExplainSpec(_Strict):
    """Reason codes: the top contributions per explained row, written next to its score."""

    top_k: int = Field(3, ge=0, le=20, description="contributions kept per row; 0 explains nothing")
    rows: Literal["all", "top_fraction"] = Field("top_fraction", description="which rows of a day are explained")
    fraction: float = Field(0.1, gt=0, le=1, description="with rows: top_fraction, the share of a day's highest scores")


class FairnessSpec(_Strict):
    """The grouping or sensitive attributes that evaluation and monitoring report per group."""

    attributes: tuple[str, ...] = Field((), description="columns of the feature relation to group by")
    min_group_rows: int = Field(50, ge=1, description="groups with fewer rows get counts but no rates")


class SearchSpec(_Strict):
    budget_s: float = Field(0, ge=0, description="wall-clock budget for the parameter search; 0 disables it")
    max_trials: int = Field(8, ge=1)


class ScoringSpec(_Strict):
    shards: int = Field(1, ge=1, le=64, description="entity-hash shards scored by parallel mapped tasks")
    batch_rows: int = Field(200_000, ge=1_000, description="rows per Arrow record batch read from the warehouse")


class MonitoringSpec(_Strict):
    sample_rows: int = Field(5_000, ge=100, description="rows sampled in the warehouse for each drift check")
    columns: tuple[str, ...] | None = Field(None, description="columns checked for drift; default: every feature")
    exclude: tuple[str, ...] = Field((), description="columns never checked, e.g. ones that age by design")
    drift_share: float = Field(0.3, gt=0, le=1, description="dataset drift when this share of columns drifted")
    consecutive_days: int = Field(2, ge=1, description="days of dataset drift in a row that request a retrain")
    decay_tolerance: float = Field(0.05, ge=0, description="realized primary metric below the champion's test metric by more")
    cooldown_days: int = Field(14, ge=0, description="no new drift or decay request within this many days of the last")


class ModelSpec(_Strict):
    name: str
    description: str = ""
    entity_key: str
    time_column: str | None = None
    features: FeatureSpec
    label: LabelSpec
    segments: tuple[str, ...] = ()
    split: SplitSpec = SplitSpec()
    candidates: tuple[CandidateSpec, ...] = Field(min_length=1)
    primary_metric: str = Field("roc_auc", description="the metric the champion comparison is decided on")
    threshold: ThresholdSpec = ThresholdSpec()
    promotion: PromotionSpec = PromotionSpec()
    search: SearchSpec = SearchSpec()
    scoring: ScoringSpec = ScoringSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    explain: ExplainSpec = ExplainSpec()
    fairness: FairnessSpec = FairnessSpec()
    # Cron of the regular retraining; null retrains only when monitoring asks (the retrain_requested asset).
    schedule: str | None = "@weekly"
    seed: int = 0
    served: bool = Field(False, description="the platform runs train, score and monitor DAGs for this model")
    cadence: Literal["daily", "weekly", "monthly"] | None = Field(
        None, description="the as-of grid of the feature relation; default: read from the relation's dates"
    )

    _names = field_validator("name", "entity_key", "time_column")(_identifier)

    @field_validator("primary_metric")
    @classmethod
    def _known_primary(cls, name: str) -> str:
        if name not in SCORE_METRICS:
            raise ValueError(f"unknown metric {name!r}; the primary metric is one of {', '.join(SCORE_METRICS)}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError(f"candidate names must be unique, got {names}")
        if self.split.strategy == "time" and self.time_column is None:
            raise ValueError("split.strategy 'time' needs a time_column; use strategy 'random' for a snapshot")
        if self.promotion.max_disparity is not None and not self.fairness.attributes:
            raise ValueError("promotion.max_disparity bounds the disparity of fairness.attributes, which is empty: "
                             "list the columns to group by, or remove max_disparity")
        if self.split.gap_days is not None and self.split.gap_days < self.label.horizon_days:
            raise ValueError(
                f"split.gap_days={self.split.gap_days} is shorter than label.horizon_days="
                f"{self.label.horizon_days}: labels would leak across the split"
            )
        return self

    @property
    def gap_days(self) -> int:
        return self.split.gap_days if self.split.gap_days is not None else self.label.horizon_days

    @property
    def label_relation(self) -> str:
        return self.label.relation or self.features.relation

    def candidate(self, name: str) -> CandidateSpec:
        for cand in self.candidates:
            if cand.name == name:
                return cand
        raise SpecError(f"spec {self.name!r} has no candidate {name!r}; it has {[c.name for c in self.candidates]}")

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def spec_folders(specs_dir: Path | None = None) -> tuple[Path, ...]:
    """Where specs are looked up by name, in order: the user's folder (TIDEMARK_SPECS_DIR), then ml/specs/."""
    if specs_dir is None:
        from ml.core.settings import Settings

        specs_dir = Settings.from_env().specs_dir
    return (specs_dir, SPEC_DIR) if specs_dir is not None else (SPEC_DIR,)


def load_spec(path_or_name: str | Path, *, specs_dir: Path | None = None) -> ModelSpec:
    """Read and validate a spec, by path or by name (see spec_folders); errors name the field and the file."""
    path = Path(path_or_name)
    folders = spec_folders(specs_dir)
    if not path.suffix and not path.exists():
        path = next((f / f"{path_or_name}.yaml" for f in folders if (f / f"{path_or_name}.yaml").exists()),
                    folders[-1] / f"{path_or_name}.yaml")
    if not path.exists():
        known = sorted({p.stem for f in folders for p in f.glob("*.yaml")})
        looked = ", ".join(str(f) for f in folders)
        raise SpecError(f"model spec {str(path_or_name)!r} not found (looked in {looked}); known specs: {known}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(data, source=str(path))


def parse_spec(data: Any, *, source: str = "<spec>") -> ModelSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec is a mapping of fields, got {type(data).__name__}")
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"  {field}: {err['msg']}")
        raise SpecError(f"{source}: invalid model spec\n" + "\n".join(problems)) from None


# -- the dbt contract -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Relation:
    """A dbt model as the warehouse knows it, with its contract columns and their types."""

    name: str
    schema: str
    identifier: str
    columns: dict[str, str]
    enforced: bool

    @property
    def qualified(self) -> str:
        """"schema"."identifier" as SQL, quoted by the one quoting rule."""
        from ml.core.sql import quote

        return f"{quote(self.schema)}.{quote(self.identifier)}"


def manifest_models(manifest_path: Path) -> dict[str, dict]:
    """The parsed manifest's model nodes by name; a clear error when the manifest was never built."""
    if not manifest_path.exists():
        raise SpecError(f"dbt manifest not found at {manifest_path}; run `python -m ml dbt parse` first")
    models: dict[str, dict] = {}
    for node in json.loads(manifest_path.read_text())["nodes"].values():
        if node["resource_type"] == "model":
            models.setdefault(node["name"], node)
    return models


def relation_of(node: dict) -> Relation:
    """A manifest model node as a Relation: where it is built, and its contract's columns and types."""
    columns = {name: (col.get("data_type") or "").lower() for name, col in node["columns"].items()}
    enforced = bool(node["config"].get("contract", {}).get("enforced"))
    return Relation(node["name"], node["schema"], node.get("alias") or node["name"], columns, enforced)


def dbt_relation(manifest_path: Path, model: str) -> Relation:
    """Look a dbt model up in the parsed manifest; a clear error when it is not there."""
    node = manifest_models(manifest_path).get(model)
    if node is None:
        raise SpecError(f"relation {model!r} is not a model in the dbt project ({manifest_path}); add it under "
                        "dbt_project/models/ or fix the spec, then run `python -m ml dbt parse`")
    return relation_of(node)


def feature_schema(spec: ModelSpec, relation: Relation) -> FeatureSchema:
    """Resolve the feature columns: listed in the spec, or every contract column but key, time and label."""
    fs = spec.features
    if fs.include is None and not relation.enforced:
        raise SpecError(
            f"features.relation {relation.name!r} has no enforced dbt contract; list features.include in the "
            "spec or enforce a contract on the model"
        )
    reserved = {spec.entity_key, spec.time_column, spec.label.column}
    names = list(fs.include) if fs.include is not None else [c for c in relation.columns if c not in reserved]
    unknown = [c for c in [*names, *fs.exclude, *(fs.categorical or ()), *spec.segments] if c not in relation.columns]
    if unknown:
        raise SpecError(f"features of spec {spec.name!r}: {unknown} not in {relation.name!r} (columns: {list(relation.columns)})")
    names = [c for c in names if c not in fs.exclude]
    if not names:
        raise SpecError(f"spec {spec.name!r} leaves no feature columns")
    numeric, categorical = [], []
    for col in names:
        dtype = relation.columns[col]
        if fs.categorical is not None:
            (categorical if col in fs.categorical else numeric).append(col)
        elif any(t in dtype for t in CATEGORICAL_TYPES):
            categorical.append(col)
        elif any(t in dtype for t in TEMPORAL_TYPES):
            raise SpecError(f"feature {col!r} has type {dtype!r}; dates are not features, exclude it or derive a number in dbt")
        elif not dtype:
            raise SpecError(f"feature {col!r} has no data_type in the contract of {relation.name!r}")
        else:
            numeric.append(col)
    return FeatureSchema(numeric=tuple(numeric), categorical=tuple(categorical))
