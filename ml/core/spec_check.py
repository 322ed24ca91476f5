"""Is a spec ready to train on? Its dbt models, their columns and their rows, checked against the spec.

`check_spec` lists each problem with what to do about it, in the order a user meets them: the dbt
manifest, the models in it, the models built in the warehouse, the spec's columns in them, and then
what the rows hold (one row per entity per date, a binary label with both classes, a date as the time
column, the label horizon the label model declares). It stops where a later check cannot run.
`require_ready` turns the list into one SpecError, which training raises before it reads anything.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Iterable, Sequence

import sqlalchemy as sa

from ml.core.settings import Settings
from ml.core.spec import ModelSpec, Relation, SpecError, manifest_models, relation_of
from ml.core.sql import named_table
from ml.core.warehouse import Warehouse

# The column and the model meta key through which a label model declares its horizon in days.
HORIZON_COLUMN = "horizon_days"
HORIZON_META = "label_horizon_days"
_SHOWN = 10  # distinct label values named in a problem


@dataclass(frozen=True)
class Problem:
    """One thing that stops a spec from training, and what to do about it."""

    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.message}\n    fix: {self.fix}"


@dataclass(frozen=True)
class Summary:
    """What a ready spec trains on: the feature relation's rows and as-of dates, and its labels."""

    relation: str
    rows: int
    dates: int | None
    first: date | None
    last: date | None
    labels: str
    labelled: int
    positives: int

    def lines(self) -> list[str]:
        rate = f"label rate {self.positives / self.labelled:.4f}" if self.labelled else "no labelled rows yet"
        dates = (f"{self.dates:,} as-of dates, {self.first} .. {self.last}" if self.dates
                 else "none: no time column (a snapshot)" if self.dates is None else "none yet")
        return [f"relation  {self.relation}: {self.rows:,} rows", f"dates     {dates}",
                f"labels    {self.labels}: {self.labelled:,} labelled, {self.positives:,} positive, {rate}"]


def near_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to `n` of `known` that are spelled like `name`, closest first."""
    return difflib.get_close_matches(name, list(known), n=n, cutoff=0.6)


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    near = near_names(name, known)
    return f" (near names: {', '.join(near)})" if near else ""


def label_problem(relation: str, column: str, counts: Sequence[tuple[Any, int]], more: bool = False) -> Problem | None:
    """A problem when a label's (value, rows) counts are not 0/1 or booleans with both classes; None if they are."""
    values = [value for value, _ in counts]
    where = f"label.column {column!r} of {relation}"
    if more or any(isinstance(v, str) or v not in (0, 1) for v in values):
        shown = ", ".join(repr(v) for v in values[:_SHOWN]) + (", ..." if more or len(values) > _SHOWN else "")
        example = (f"cast(case {column} when 'yes' then 1 when 'no' then 0 end as integer)"
                   if any(isinstance(v, str) for v in values) else f"cast({column} > 0 as integer)")
        return Problem(f"{where} is not binary: it holds {shown}",
                       f"make it 0/1 in the dbt model, e.g. {example}, or name a 0/1 column in the spec")
    if len(values) == 1:
        return Problem(f"{where} is {values[0]!r} on all {counts[0][1]:,} labelled rows: there is nothing to learn",
                       "check how the dbt model computes the label, or load data that holds both outcomes")
    return None


def horizon_problem(spec: ModelSpec, declared: Sequence[int], source: str) -> Problem | None:
    """A problem when the label model declares (in `source`) a horizon other than the spec's; None if it agrees."""
    wanted = spec.label.horizon_days
    if not declared or set(declared) == {wanted}:
        return None
    numbers = ", ".join(str(d) for d in sorted(set(declared)))
    fix = (f"set label.horizon_days: {declared[0]} in the spec, or rebuild {spec.label_relation} with a "
           f"{wanted}-day horizon" if len(set(declared)) == 1
           else f"rebuild {spec.label_relation} with one horizon, {wanted} days")
    return Problem(f"label.horizon_days is {wanted} in the spec but {spec.label_relation} declares {numbers} "
                   f"({source}): labels would leak across the split", fix)


def check_spec(spec: ModelSpec, settings: Settings, *, manifest: Path | None = None) -> list[Problem]:
    """Every problem that stops `spec` from training, each with its fix; empty when it is ready.

    `manifest` is the parsed dbt manifest to look the models up in (default: the settings').
    """
    manifest = manifest or settings.dbt_manifest
    if not manifest.exists():
        return [Problem(f"the dbt manifest {manifest} does not exist", "run `python -m ml dbt parse`")]
    nodes = manifest_models(manifest)
    roles = {spec.features.relation: "features.relation"}
    roles.setdefault(spec.label_relation, "label.relation")
    missing = [Problem(f"{role} {name!r} is not a model in the dbt project{_did_you_mean(name, nodes)}",
                       "add the model under dbt_project/models/ (or fix the spec), then run `python -m ml dbt parse`")
               for name, role in roles.items() if name not in nodes]
    if missing:
        return missing
    relations = {name: relation_of(nodes[name]) for name in roles}
    with Warehouse.connect(settings, read_only=True) as wh:
        unbuilt = [Problem(f"{name} ({rel.schema}.{rel.identifier}) is not built in the warehouse",
                           f"run `python -m ml dbt build --select +{name}` (the model and its parents)")
                   for name, rel in relations.items() if not wh.table_exists(rel.qualified)]
        if unbuilt:
            return unbuilt
        columns = {name: wh.column_types(f"{rel.schema}.{rel.identifier}") for name, rel in relations.items()}
        absent = _absent_columns(spec, columns)
        if absent:
            return absent
        labels = relations[spec.label_relation]
        duplicates = [_duplicates(wh, spec, rel) for rel in relations.values()]
        counts, more = _label_counts(wh, labels, spec.label.column)
        declared, source = _declared_horizon(wh, labels, columns[spec.label_relation], nodes[spec.label_relation])
    label = label_problem(spec.label_relation, spec.label.column, counts, more) if counts else None
    found = [*duplicates, label, *_time_types(spec, columns), horizon_problem(spec, declared, source)]
    return [problem for problem in found if problem]


def require_ready(spec: ModelSpec, settings: Settings) -> None:
    """Raise a SpecError listing every problem of `spec` with its fix; return when it is ready to train."""
    problems = check_spec(spec, settings)
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise SpecError(f"spec {spec.name!r} is not ready to train:\n{listed}\n"
                        f"  then check it again with `python -m ml spec check {spec.name}`")


def summarize(spec: ModelSpec, settings: Settings, *, manifest: Path | None = None) -> Summary:
    """The rows, as-of dates and label rate that a spec, already checked, trains on."""
    manifest = manifest or settings.dbt_manifest
    models = manifest_models(manifest)
    features, labels = relation_of(models[spec.features.relation]), relation_of(models[spec.label_relation])
    f = named_table(features.qualified, *filter(None, [spec.time_column]))
    stats = [sa.func.count().label("rows")]
    if spec.time_column:
        time = f.c[spec.time_column]
        stats += [sa.func.count(sa.distinct(time)).label("dates"), sa.func.min(time).label("first"),
                  sa.func.max(time).label("last")]
    with Warehouse.connect(settings, read_only=True) as wh:
        row = wh.rows(sa.select(*stats).select_from(f))[0]
        counts, _ = _label_counts(wh, labels, spec.label.column)
    return Summary(
        relation=f"{features.name} ({features.schema}.{features.identifier})", rows=row["rows"],
        dates=row.get("dates"), first=row.get("first"), last=row.get("last"),
        labels=f"{labels.name}.{spec.label.column}", labelled=sum(n for _, n in counts),
        positives=sum(n for value, n in counts if value),
    )


# -- the parts --------------------------------------------------------------------------------------
def _absent_columns(spec: ModelSpec, columns: dict[str, dict[str, str]]) -> list[Problem]:
    """A problem per spec column that a relation lacks: the keys in every relation, the label in its own."""
    wanted = [("entity_key", spec.entity_key, name) for name in columns]
    wanted += [("time_column", spec.time_column, name) for name in columns if spec.time_column]
    wanted.append(("label.column", spec.label.column, spec.label_relation))
    wanted += [("fairness.attributes", column, spec.features.relation) for column in spec.fairness.attributes]
    return [Problem(f"{field} {column!r} is not a column of {relation}{_did_you_mean(column, columns[relation])}",
                    f"name one of its columns in the spec, or add {column!r} to the dbt model "
                    f"(its columns: {', '.join(columns[relation])})")
            for field, column, relation in wanted if column not in columns[relation]]


def _duplicates(wh: Warehouse, spec: ModelSpec, relation: Relation) -> Problem | None:
    """A problem when an entity has more than one row per as-of date (per relation, for a snapshot)."""
    keys = [spec.entity_key, *filter(None, [spec.time_column])]
    t = named_table(relation.qualified, *keys)
    groups = (sa.select(*(t.c[k] for k in keys), sa.func.count().label("n")).group_by(*(t.c[k] for k in keys))
              .having(sa.func.count() > 1).subquery())
    query = (sa.select(sa.func.count().over().label("groups"), *groups.c)
             .order_by(*(groups.c[k] for k in keys)).limit(1))
    found = wh.rows(query)
    if not found:
        return None
    row = found[0]
    per = f" per {spec.time_column}" if spec.time_column else ""
    example = f"{spec.entity_key} = {row[spec.entity_key]!r}" + (
        f" on {row[spec.time_column]}" if spec.time_column else "")
    return Problem(f"{relation.name} has {row['groups']:,} {spec.entity_key} value(s) with more than one row{per} "
                   f"(e.g. {example}: {row['n']} rows)",
                   f"make the dbt model one row per {spec.entity_key}{per} (deduplicate or aggregate), "
                   "or name the key that is unique in the spec's entity_key")


def _label_counts(wh: Warehouse, relation: Relation, column: str) -> tuple[list[tuple[Any, int]], bool]:
    """(value, rows) of the label's distinct non-null values, at most a few; and whether there are more."""
    t = named_table(relation.qualified, column)
    label = t.c[column]
    query = (sa.select(label.label("value"), sa.func.count().label("n")).where(label.is_not(None))
             .group_by(label).order_by(label).limit(_SHOWN + 1))
    counts = [(row["value"], row["n"]) for row in wh.rows(query)]
    return counts[:_SHOWN], len(counts) > _SHOWN


def _time_types(spec: ModelSpec, columns: dict[str, dict[str, str]]) -> list[Problem]:
    """A problem per relation whose time column is not a date in the warehouse."""
    if spec.time_column is None:
        return []
    column = spec.time_column
    return [Problem(f"time_column {column!r} of {name} is {types[column]}, not a date",
                    f"cast it in the dbt model: cast({column} as date)")
            for name, types in columns.items() if types[column] != "date"]


def _declared_horizon(wh: Warehouse, relation: Relation, columns: dict[str, str], node: dict
                      ) -> tuple[list[int], str]:
    """The horizon(s) in days that a label model declares, and where: its horizon_days values, else its meta."""
    if HORIZON_COLUMN in columns:
        t = named_table(relation.qualified, HORIZON_COLUMN)
        values = wh.rows(sa.select(t.c[HORIZON_COLUMN]).where(t.c[HORIZON_COLUMN].is_not(None)).distinct().limit(5))
        if values:
            return [int(row[HORIZON_COLUMN]) for row in values], f"its {HORIZON_COLUMN} column"
    meta = {**node.get("meta", {}), **node.get("config", {}).get("meta", {})}
    if HORIZON_META in meta:
        return [int(meta[HORIZON_META])], f"meta {HORIZON_META} in the dbt project"
    return [], ""
