"""The served models: the specs that get their own train, score and monitor DAGs.

A spec is served when it says `served: true`. Specs are read from the user's folder
(TIDEMARK_SPECS_DIR) and from ml/specs/; a user's spec replaces a shipped one of the same name, and
TIDEMARK_SERVED_MODELS narrows the set to the names it lists. The DAG files call `served_specs` at
parse time: it reads YAML files only, and a spec that does not load is returned with its error so
that the DAG files can show it as an import error of that model's DAGs alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from ml.core.settings import Settings
from ml.core.spec import SPEC_DIR, ModelSpec, SpecError, parse_spec


@dataclass(frozen=True)
class ServedSpec:
    """One served spec file: its model when it loads, else the error that stops it."""

    name: str
    path: Path
    spec: ModelSpec | None = None
    error: str | None = None
    # True when it comes from ml/specs/ or replaces a spec there: a model of the simulated business,
    # whose relations build_features builds and whose first champion the bootstrap trains.
    shipped: bool = False


def served_specs(settings: Settings) -> list[ServedSpec]:
    """The served specs by name, each with its model or its error; the user's folder wins on a name clash."""
    shipped = {path.stem: path for path in sorted(SPEC_DIR.glob("*.yaml"))}
    files = dict(shipped)
    if settings.specs_dir is not None and settings.specs_dir.is_dir():
        files.update({path.stem: path for path in sorted(settings.specs_dir.glob("*.yaml"))})
    found = []
    for stem, path in sorted(files.items()):
        if settings.served_models is None or stem in settings.served_models:
            entry = _read(stem, path, shipped=stem in shipped)
            if entry is not None:
                found.append(entry)
    return found


def _read(stem: str, path: Path, *, shipped: bool) -> ServedSpec | None:
    """The spec at `path` if it asks to be served (or cannot be read well enough to tell); else None."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return ServedSpec(stem, path, error=f"{path}: not valid YAML: {exc}", shipped=shipped)
    if isinstance(data, dict) and data.get("served") is not True:
        return None
    try:
        spec = parse_spec(data, source=str(path))
    except SpecError as exc:
        return ServedSpec(stem, path, error=str(exc), shipped=shipped)
    if spec.name != stem:
        return ServedSpec(stem, path, error=f"{path} names its model {spec.name!r}; a spec file is named after its "
                                            f"model: rename the file to {spec.name}.yaml or the model to {stem!r}",
                           shipped=shipped)
    return ServedSpec(stem, path, spec, shipped=shipped)


def loop_specs(settings: Settings) -> list[ModelSpec]:
    """The served models of the simulated business that load: build_features builds their relations."""
    return [s.spec for s in served_specs(settings) if s.spec is not None and s.shipped]


def build_selection(settings: Settings) -> tuple[list[str], list[str]]:
    """What build_features builds: the dbt selection (each feature and label relation of the loop's models,
    with everything upstream of it) and the feature relations it announces. When TIDEMARK_SERVED_MODELS
    leaves none of the shipped models, the simulated business is still built for all of them (never the
    whole project, which would take in every user's models)."""
    specs = loop_specs(settings) or loop_specs(replace(settings, served_models=None))
    select = sorted({f"+{relation}" for spec in specs for relation in (spec.features.relation, spec.label_relation)})
    return select, sorted({spec.features.relation for spec in specs})


def add_model_dags(namespace: dict[str, Any], prefix: str, build: Callable[[ModelSpec], Any],
                   settings: Settings) -> None:
    """Put `<prefix>_<model>` = build(spec) into a DAG file's `namespace` for each served spec that loads.

    The specs that do not load become one DAG that fails validation with all their errors: the DAG
    processor records it as an import error of the file, naming those models, and serves the file's
    other DAGs as usual.
    """
    served = served_specs(settings)
    for entry in served:
        if entry.spec is not None:
            namespace[f"{prefix}_{entry.name}"] = build(entry.spec)
    broken = [entry for entry in served if entry.spec is None]
    if broken:
        namespace[f"{prefix}_{broken[0].name}"] = _broken_specs_dag(f"{prefix}_{broken[0].name}", broken)


def _broken_specs_dag(dag_id: str, broken: list[ServedSpec]):
    from airflow.sdk import DAG

    names = ", ".join(repr(entry.name) for entry in broken)
    errors = "\n".join(entry.error or "" for entry in broken)

    class BrokenSpecDag(DAG):
        def validate(self) -> None:
            raise SpecError(f"served model(s) {names} have no DAGs: their specs do not load. Fix them (`python -m "
                            f"ml spec check NAME`) or set `served: false`.\n{errors}")

    return BrokenSpecDag(dag_id=dag_id, schedule=None, tags=["tidemark"])
