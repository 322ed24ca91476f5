"""Training runs: extract, train each candidate, evaluate against the champion, gate, publish and promote.

Each step is a function of small JSON-able dicts, so an Airflow task can call one step and hand its
result to the next. `train()` runs them all in one process for the command line.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import re
import socket
import subprocess
import time
from datetime import date, datetime, timezone
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from ml.core.errors import NothingToDo
from ml.core.settings import Settings
from ml.core.spec import CandidateSpec, FeatureSchema, ModelSpec, dbt_relation
from ml.core.spec_check import require_ready
from ml.registry import Registry, promotion
from ml.registry.champion import usable_champion
from ml.registry.repair import repair
from ml.training.candidates import build_candidate, load_candidate
from ml.training.data import Extract, NoLabels, extract, load_split
from ml.training.evaluate import TrainingError, evaluate_step
from ml.training.gate import decide
from ml.training.metrics import METRICS, score
from ml.training.records import record_fairness, record_promotion

log = logging.getLogger(__name__)
LIBRARIES = ("lightgbm", "torch", "scikit-learn", "numpy", "pandas", "pyarrow", "dbt-core", "apache-airflow", "evidently")


def run_directory(settings: Settings, spec: ModelSpec, run_id: str) -> Path:
    return settings.home / "runs" / spec.name / re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)


# -- steps ----------------------------------------------------------------------------------------
def prepare_step(spec: ModelSpec, settings: Settings) -> dict:
    """Before anything is fitted: complete promotions a killed run left half done, then check that the champion
    downloads and loads, so a damaged champion stops the run here and not after every candidate was trained."""
    registry = Registry.from_settings(settings)
    report = repair(registry, spec.name, partial(record_promotion, settings))
    champion = usable_champion(settings, spec.name, load_candidate)
    return {"champion": champion and champion.version, "champion_as_of": champion and champion.manifest.get("as_of"),
            "repaired": report.lines()}


def scheduled_as_of(spec: ModelSpec, settings: Settings, champion_as_of: str | None) -> date | None:
    """The as-of date of a run that no one asked a date of: the features watermark, never the clock (None for a
    snapshot spec). NothingToDo before any features exist, or when the champion was trained as of that day."""
    from ml.orchestration.watermarks import latest_day

    if spec.time_column is None:
        return None
    relation = dbt_relation(settings.dbt_manifest, spec.features.relation)
    watermark = latest_day(settings, relation.qualified, spec.time_column)
    if watermark is None:
        raise NothingToDo(f"{relation.qualified} holds no features yet, so there is nothing to train {spec.name} on; "
                          "the bootstrap DAG (or build_features) builds them")
    if champion_as_of and date.fromisoformat(champion_as_of) >= watermark:
        raise NothingToDo(f"the champion of {spec.name} was trained as of {champion_as_of} and the features reach "
                          f"{watermark}: there is no newer data to train on")
    return watermark


def extract_step(spec: ModelSpec, settings: Settings, run_id: str, as_of: date | None, *,
                 scheduled: bool = False) -> dict:
    """Write the split training set under the run's directory and describe it. A `scheduled` run with no label
    known yet raises NothingToDo; a run asked for its date fails on it. A spec that is not ready (see
    ml.core.spec_check) fails first, with each problem and its fix."""
    require_ready(spec, settings)
    try:
        return extract(spec, settings, run_directory(settings, spec, run_id) / "data", as_of=as_of).to_dict()
    except NoLabels as exc:
        if scheduled:
            raise NothingToDo(f"no labels yet: {exc}") from None
        raise


def _better(metric: str, a: float, b: float) -> bool:
    return a > b if METRICS[metric].higher_is_better else a < b


def train_step(spec: ModelSpec, settings: Settings, extract_info: dict, candidate_name: str) -> dict:
    """Fit one candidate (with the spec's bounded search when it has one) and save it next to the data."""
    ex = Extract.from_dict(extract_info)
    cand = spec.candidate(candidate_name)
    X, y = load_split(ex, "train")
    X_val, y_val = load_split(ex, "validation")
    started = time.perf_counter()
    model, params, trials = _fit_with_search(spec, cand, ex.schema, X, y, X_val, y_val)
    seconds = time.perf_counter() - started
    p_val = model.predict_proba(X_val)[:, 1]
    directory = ex.directory.parent / "candidates" / cand.name
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory)
    np.save(directory.parent / f"{cand.name}.validation.npy", p_val)
    result = {
        "candidate": cand.name, "kind": cand.kind, "directory": str(directory), "params": params,
        "trials": trials, "fit_seconds": round(seconds, 2), "device": getattr(model, "device_", "cpu"),
        # Which worker fitted it: the Celery worker's name when set (ml/tools/service.py), else the host.
        "worker": settings.worker_name or socket.gethostname(),
        "validation": {spec.primary_metric: score(spec.primary_metric, y_val, p_val)},
    }
    log.info("trained %s in %.1f s on %s (%s): validation %s", cand.name, seconds, result["device"],
             result["worker"], result["validation"])
    return result


def _fit_with_search(spec, cand: CandidateSpec, schema: FeatureSchema, X, y, X_val, y_val):
    """Fit once, or run an Optuna search over the candidate's grid within the spec's budget."""
    if not cand.search or spec.search.budget_s <= 0:
        model = build_candidate(cand.kind, dict(cand.params), schema, spec.seed).fit(X, y, X_val, y_val)
        return model, dict(cand.params), 1
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    best: dict = {}

    def objective(trial) -> float:
        params = {**cand.params, **{k: trial.suggest_categorical(k, list(v)) for k, v in cand.search.items()}}
        model = build_candidate(cand.kind, params, schema, spec.seed).fit(X, y, X_val, y_val)
        value = score(spec.primary_metric, y_val, model.predict_proba(X_val)[:, 1])
        log.info("search %s trial %d: %s -> %s %.4f", cand.name, trial.number, params, spec.primary_metric, value)
        if not best or _better(spec.primary_metric, value, best["value"]):
            best.update(value=value, model=model, params=params)
        return value

    direction = "maximize" if METRICS[spec.primary_metric].higher_is_better else "minimize"
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=spec.seed))
    study.optimize(objective, n_trials=spec.search.max_trials, timeout=spec.search.budget_s)
    return best["model"], best["params"], len(study.trials)


def gate_step(spec: ModelSpec, settings: Settings, extract_info: dict, evaluation: dict) -> dict:
    """The gate's decision, with a reason per check, and the challenger's model card written into its directory
    (so that publishing stores it with the version); `card` is where the card is until then."""
    from ml.registry.card import write_card

    champion = evaluation["champion"]
    decision = decide(spec, evaluation["challenger"]["test"], champion and champion["test"],
                      evaluation["comparison"], evaluation["regressions"],
                      fairness=evaluation["challenger"].get("fairness"))
    log.info("gate for %s: %s\n  %s", evaluation["challenger"]["candidate"], decision.to_dict()["decision"],
             "\n  ".join(decision.reasons))
    decided = decision.to_dict()
    return {**decided, "card": str(write_card(spec, settings, extract_info, evaluation, decided))}


def promote_step(spec: ModelSpec, settings: Settings, extract_info: dict, evaluation: dict, decision: dict,
                 *, run_id: str, actor: str = "train_model") -> dict:
    """Publish the challenger as a version, then promote it as one recoverable unit: the decision with its
    intent, the champion alias (if the gate passed), the warehouse row. A rerun of this step with the same
    inputs, or `python -m ml registry repair`, completes what a killed process left half done."""
    ex = Extract.from_dict(extract_info)
    challenger, champion = evaluation["challenger"], evaluation["champion"]
    registry = Registry.from_settings(settings)
    write_row = partial(record_promotion, settings)
    repair(registry, spec.name, write_row)
    attempt = promotion.attempt_key(run_id, evaluation, decision)
    version = promotion.published_by(registry, spec.name, attempt)
    if version and promotion.is_decided(registry, spec.name, version):  # an earlier try got this far
        return _finished(spec, settings, registry, version, ex, challenger, write_row)
    before = champion and champion["version"]
    current = registry.alias(spec.name, "champion")
    if decision["promote"] and current.version != before:
        raise TrainingError(
            f"the champion of {spec.name!r} moved from {before} to {current.version} while the challenger was "
            f"evaluated; the decision is stale, so rerun the training"
        )
    if version is None:
        version = registry.publish(spec.name, Path(challenger["directory"]),
                                   {**_provenance(spec, settings, ex, challenger, run_id), "attempt": attempt}).version
    comparison = evaluation["comparison"] or {}
    row = {
        "model_name": spec.name, "candidate": challenger["candidate"], "candidate_version": version,
        "champion_version": before, "decision": decision["decision"], "primary_metric": spec.primary_metric,
        "challenger_metric": challenger["test"][spec.primary_metric],
        "champion_metric": champion and champion["test"][spec.primary_metric],
        "diff_ci_low": comparison.get("ci_low"), "diff_ci_high": comparison.get("ci_high"),
        "reasons": decision["reasons"], "run_id": run_id, "decided_at": datetime.now(timezone.utc).isoformat(),
    }
    record = {"decision": decision["decision"], "reasons": decision["reasons"], "champion_before": before,
              "champion_after": version if decision["promote"] else before, "comparison": comparison,
              "run_id": run_id, "attempt": attempt}
    reason = f"gate passed for run {run_id}: " + "; ".join(decision["reasons"])
    promotion.begin(registry, spec.name, version, record, promote=decision["promote"], expected=before, actor=actor,
                    reason=reason, row=row)
    return _finished(spec, settings, registry, version, ex, challenger, write_row)


def _finished(spec: ModelSpec, settings: Settings, registry: Registry, version: str, ex: Extract, challenger: dict,
              write_row: Callable[[dict], None]) -> dict:
    """Complete a begun promotion, write the version's test fairness rows, and say where its model card is."""
    from ml.registry.card import NoCard, card_location

    outcome = promotion.finish(registry, spec.name, version, write_row)
    record_fairness(settings, model_name=spec.name, model_version=version, as_of=ex.as_of,
                    report=challenger.get("fairness") or {})
    try:
        card = card_location(registry, spec.name, version)
    except NoCard:
        card = None
    return {**_logged(outcome), "model_card": card}


def _provenance(spec: ModelSpec, settings: Settings, ex: Extract, challenger: dict, run_id: str) -> dict:
    """The manifest metadata of a published challenger: what it is, what it was trained on, with what."""
    return {
        "candidate": challenger["candidate"], "kind": challenger["kind"], "params": challenger["params"],
        "threshold": challenger["threshold"], "metrics": challenger["test"], "validation": challenger["validation"],
        "importance": challenger.get("importance"), "fairness": challenger.get("fairness"),
        "shap_summary": challenger.get("shap_summary"), "training_window": ex.windows, "as_of": ex.as_of,
        "data_fingerprint": ex.fingerprint, "feature_schema": ex.schema.to_dict(),
        "entity_key": spec.entity_key, "time_column": spec.time_column, "spec": spec.model_dump(mode="json"),
        "spec_fingerprint": spec.fingerprint(), "libraries": library_versions(), "git_commit": git_commit(settings),
        "git": git_state(settings),
        "dbt_manifest_sha256": _sha256(settings.dbt_manifest), "run_id": run_id, "device": challenger["device"],
        "fit_seconds": challenger["fit_seconds"],
    }


def _logged(outcome: dict) -> dict:
    log.info("%s %s: %s (champion %s -> %s)", outcome["model"], outcome["version"], outcome["decision"],
             outcome["champion_before"], outcome["champion_after"])
    return {key: outcome[key] for key in ("model", "version", "decision", "reasons", "champion_before",
                                          "champion_after")}


# -- provenance -----------------------------------------------------------------------------------
def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


GIT_UNTRACKED_DIRS = ("ml/specs", "specs", "dbt_project")  # where a new, not yet committed spec or model usually is


def _git(repo_root: Path, *args: str) -> bytes | None:
    """The output of `git args` in `repo_root`; None when git is missing, fails, or the folder is not a repository."""
    try:
        proc = subprocess.run(["git", *args], cwd=repo_root, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_commit(settings: Settings) -> str | None:
    out = _git(settings.repo_root, "rev-parse", "HEAD")
    return out and out.decode().strip() or None


def git_state(settings: Settings) -> dict:
    """The commit, whether the tree differs from it (changed files, or untracked ones under GIT_UNTRACKED_DIRS),
    the sha256 of `git diff HEAD`, and those untracked files; every value None where git cannot tell."""
    commit = git_commit(settings)
    diff = commit and _git(settings.repo_root, "diff", "HEAD", "--no-ext-diff", "--no-color")
    listed = commit and _git(settings.repo_root, "ls-files", "--others", "--exclude-standard", "-z", "--",
                             *GIT_UNTRACKED_DIRS)
    if diff is None or listed is None:
        return {"commit": commit, "dirty": None, "diff_sha256": None, "untracked": None}
    untracked = sorted(name for name in listed.decode(errors="replace").split("\0") if name)
    return {"commit": commit, "dirty": bool(diff or untracked),
            "diff_sha256": hashlib.sha256(diff).hexdigest() if diff else None, "untracked": untracked}


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


# -- one process ----------------------------------------------------------------------------------
def train(spec: ModelSpec, settings: Settings, *, as_of: date | None, run_id: str, actor: str,
          on_step: Callable[[str], None] = lambda step: None) -> dict:
    """Every step in order, in this process: what `python -m ml train` runs."""
    on_step("check the champion")
    prepare_step(spec, settings)
    on_step("extract")
    ex = extract_step(spec, settings, run_id, as_of)
    trained = []
    for cand in spec.candidates:
        on_step(f"train {cand.name}")
        trained.append(train_step(spec, settings, ex, cand.name))
    on_step("evaluate")
    evaluation = evaluate_step(spec, settings, ex, trained)
    on_step("gate")
    decision = gate_step(spec, settings, ex, evaluation)
    on_step("promote")
    outcome = promote_step(spec, settings, ex, evaluation, decision, run_id=run_id, actor=actor)
    return {"extract": ex, "evaluation": evaluation, "decision": decision, "outcome": outcome}

