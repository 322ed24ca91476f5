"""The end-to-end demo: real Airflow task runs over a simulated history, embedded or on servers.

1. `ingest_raw` lands a history with a drift event, and `build_features` builds its marts;
2. for each of the two served models (churn, and payment default), `train_<model>` trains the
   candidates and promotes the first champion before the drift;
3. `score_<model>` and `monitor_<model>` score and watch the following weeks, a week per run;
4. when a model's monitoring requests a retrain, its `train_<model>` runs for that date and the gate
   decides;
5. a timeline per model is printed and `<TIDEMARK_HOME>/demo/summary.json` is written.

The embedded demo keeps all its state in `<TIDEMARK_HOME>/demo/`. The server demo (`server=True`)
runs the same steps on PostgreSQL and a registry on an S3 API (see `server_targets`), with its
Airflow state and summary in `<TIDEMARK_HOME>/demo-server/`. Both start from an empty state each
time, so a second run makes the same decisions as the first.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, timedelta
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.table import Table

from ml.core.errors import TidemarkError
from ml.core.settings import (
    PIPELINE_SCHEMAS,
    Settings,
    WarehouseTarget,
    parse_warehouse_url,
    redacted_url,
)
from ml.ingest.world import DEFAULT_HISTORY_END, DEFAULT_WORLD

# Wide enough for the timeline when the output goes to a file or a CI log rather than a terminal.
console = Console(width=None if sys.stdout.isatty() else 140)

# The default world of ml.ingest.world, which `make airflow` bootstraps too: the same history and first champion.
DEMO_SIM = DEFAULT_WORLD.params()
HISTORY_END = date(2025, 4, 20)
FIRST_TRAIN_AS_OF = DEFAULT_HISTORY_END
CHUNK_DAYS = 7
# The served models of the simulated business, in the order the demo runs them.
MODELS = ("churn", "payment_default")

# The server demo's defaults: a database it may drop and recreate, and a bucket on a local S3 API.
SERVER_DATABASE = "tidemark_demo"
SERVER_WAREHOUSE_URL = f"postgresql://postgres@127.0.0.1:5432/{SERVER_DATABASE}"
SERVER_BUCKET = "tidemark-demo"
SERVER_REGISTRY_URI = f"s3://{SERVER_BUCKET}/registry"
# The Spark demo's default: a local Spark of two cores in the demo's process.
SPARK_WAREHOUSE_URL = "spark://local[2]"


class DemoError(TidemarkError, RuntimeError):
    """The demo could not prepare its warehouse or registry; the message says what to change."""


def demo_settings(settings: Settings, sandbox: str = "demo") -> Settings:
    """The demo's own sandbox under TIDEMARK_HOME: Airflow state, and the embedded warehouse and registry
    (on Spark, the catalog's folder in the sandbox)."""
    home = settings.home / sandbox
    if settings.warehouse.kind == "duckdb":
        warehouse = parse_warehouse_url(f"duckdb:///{home / 'warehouse.duckdb'}")
    elif settings.warehouse.kind == "spark":
        warehouse = replace(settings.warehouse, spark_dir=home / "spark")
    else:
        warehouse = settings.warehouse
    registry = (home / "registry").as_uri() if settings.registry_uri.startswith("file:") else settings.registry_uri
    return replace(settings, home=home, warehouse=warehouse, registry_uri=registry)


def run_demo(settings: Settings | None = None, *, server: bool = False, spark: bool = False,
             database: str | None = None, until: date = HISTORY_END) -> dict[str, Any]:
    """Run the demo and return its summary; `until` is the last simulated day (earlier: a shorter demo).

    With `server`, the warehouse is PostgreSQL and the registry is on an S3 API (see `server_targets`;
    `database` names a PostgreSQL database the demo may drop and recreate). With `spark`, the warehouse
    is Spark (TIDEMARK_WAREHOUSE_URL when it is spark://, else spark://local[2]), in `demo-spark/`.
    """
    started = time.perf_counter()
    settings = settings or Settings.from_env()
    if until <= FIRST_TRAIN_AS_OF:
        raise DemoError(f"the demo's history must end after its first training date {FIRST_TRAIN_AS_OF} "
                        f"(asked to end on {until})")
    if spark:
        if settings.warehouse.kind != "spark":
            settings = replace(settings, warehouse=replace(parse_warehouse_url(SPARK_WAREHOUSE_URL),
                                                           spark_dir=settings.home / "spark"))
        return _run(demo_settings(settings, "demo-spark"), until, started)
    if not server:
        return _run(demo_settings(settings), until, started)
    with server_targets(settings, database) as targets:
        return _run(demo_settings(targets, "demo-server"), until, started)


def demo_run_settings(settings: Settings) -> Settings:
    """The settings the embedded demo runs with: its sandbox, and the shipped specs of its two models."""
    return _shipped_models(demo_settings(settings))


def _shipped_models(settings: Settings) -> Settings:
    """Serve the two shipped models alone, from ml/specs/: the user's specs folder is an empty one of the demo's."""
    return replace(settings, model_spec=MODELS[0], specs_dir=settings.home / "specs", served_models=MODELS)


def _run(settings: Settings, until: date, started: float) -> dict[str, Any]:
    settings = _shipped_models(settings)
    if settings.home.exists():
        from ml.tools.monitoring_ui import stop

        stop(settings, progress=console.print)  # a monitoring UI on the previous demo's workspace: stopped first
        console.print(f"starting over: removing the previous demo state in {settings.home}")
        shutil.rmtree(settings.home)
    settings.home.mkdir(parents=True)
    os.environ.update(settings.airflow_env())  # before Airflow is imported: it reads its config once
    os.environ.update({k: v for k, v in settings.dbt_env().items() if k.startswith(("DBT_", "DO_NOT"))})
    from airflow.dag_processing.dagbag import DagBag

    from ml.orchestration.airflow_setup import init_airflow

    with console.status("preparing Airflow's metadata database and pools"):
        init_airflow(settings)
    bag = DagBag(dag_folder=str(settings.repo_root / "dags"))
    if bag.import_errors:
        raise DemoError(f"the DAGs do not import: {bag.import_errors}")
    runs: list[dict[str, Any]] = []

    def run(dag_id: str, conf: dict, what: str) -> Any:
        label = conf.get("as_of") or f"{conf['start']}..{conf['end']}"
        console.rule(f"[bold]{dag_id}[/bold] {label}: {what}")
        t0 = time.perf_counter()
        dag_run = bag.dags[dag_id].test(run_conf=conf)
        states = {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in dag_run.get_task_instances()}
        runs.append({"dag": dag_id, "conf": label, "state": str(dag_run.state), "tasks": len(states),
                     "seconds": round(time.perf_counter() - t0, 1)})
        if str(dag_run.state) != "success":
            failed = sorted(t for t, s in states.items() if s not in ("success", "skipped"))
            raise DemoError(f"{dag_id} run {dag_run.run_id} ended {dag_run.state}; tasks not successful: {failed}; "
                            f"their logs are under {settings.airflow_home / 'logs'}")
        return dag_run

    first = date.fromisoformat(DEMO_SIM["sim_start"])
    history = {"start": str(first), "end": str(until)}
    run("ingest_raw", {**DEMO_SIM, **history}, "land the raw history with its drift event (backfill)")
    run("build_features", history, "build features and labels for the history")
    for model in MODELS:
        run(f"train_{model}", {"as_of": str(FIRST_TRAIN_AS_OF)},
            "train the candidates; the gate picks the first champion")

    day = FIRST_TRAIN_AS_OF + timedelta(days=1)
    while day <= until:
        chunk = {"start": str(day), "end": str(min(day + timedelta(days=CHUNK_DAYS - 1), until))}
        for model in MODELS:
            run(f"score_{model}", chunk, "the champion scores each day into ml.predictions")
            run(f"monitor_{model}", chunk, "drift, realized performance and retrain triggers")
            for request in _requests(settings, model, chunk):
                run(f"train_{model}", {"as_of": request["as_of"]}, f"retrain requested ({request['reason']})")
        day = date.fromisoformat(chunk["end"]) + timedelta(days=1)

    summary = _summary(settings, runs, first, until)
    summary["duration_s"] = round(time.perf_counter() - started, 1)
    out = settings.home / "summary.json"
    out.write_text(json.dumps(summary, indent=2, default=str))
    _print(summary, out)
    return summary


# -- the server demo's targets --------------------------------------------------------------------
@contextmanager
def server_targets(settings: Settings, database: str | None = None) -> Iterator[Settings]:
    """PostgreSQL and an S3 registry for the server demo, emptied of an earlier run's state.

    Warehouse: TIDEMARK_WAREHOUSE_URL when it is PostgreSQL, else the `tidemark_demo` database on
    127.0.0.1:5432; `database` picks another database on that server. Only `tidemark_demo` or the
    database named by `database` is dropped and recreated; in any other database only the pipeline's
    schemas are dropped. Registry: TIDEMARK_REGISTRY_URI when it is s3://, else s3://tidemark-demo/registry
    on TIDEMARK_S3_ENDPOINT_URL; with neither, a local S3 server (moto) runs for the length of the
    demo, and what it stored is gone afterwards. On an existing endpoint only the registry's prefix is
    cleared.
    """
    warehouse = _server_warehouse(settings, database)
    _reset_warehouse(warehouse, recreate=warehouse.database in (SERVER_DATABASE, database))
    settings = replace(settings, warehouse=warehouse)
    if settings.registry_uri.startswith("s3://") or settings.s3_endpoint_url:
        uri = settings.registry_uri if settings.registry_uri.startswith("s3://") else SERVER_REGISTRY_URI
        _reset_registry(uri, settings.s3_endpoint_url, create_bucket=uri == SERVER_REGISTRY_URI)
        yield replace(settings, registry_uri=uri)
        return
    from ml.tools.s3local import DUMMY_AWS_ENV, local_s3_server

    os.environ.update(DUMMY_AWS_ENV)  # moto takes any credentials; boto3 needs some to sign with
    with local_s3_server(SERVER_BUCKET) as endpoint:
        console.print(f"registry: {SERVER_REGISTRY_URI} on a local S3 API (moto) at {endpoint}, started for "
                      "this run; it keeps objects in memory, so they are gone when the demo ends")
        yield replace(settings, registry_uri=SERVER_REGISTRY_URI, s3_endpoint_url=endpoint)


def _server_warehouse(settings: Settings, database: str | None) -> WarehouseTarget:
    url = settings.warehouse.url if settings.warehouse.kind == "postgres" else SERVER_WAREHOUSE_URL
    if database:
        url = urlunsplit(urlsplit(url)._replace(path=f"/{database}"))
    return parse_warehouse_url(url, variable="the server demo's warehouse URL")


def _reset_warehouse(target: WarehouseTarget, *, recreate: bool) -> None:
    """Drop and recreate the demo's own database, or drop the pipeline's schemas in a database it was given."""
    import psycopg
    from psycopg import sql

    where = f"{target.host}:{target.port}"
    try:
        if recreate:
            with psycopg.connect(replace(target, database="postgres").dsn(), autocommit=True) as admin:
                name = sql.Identifier(target.database)
                admin.execute(sql.SQL("drop database if exists {} with (force)").format(name))
                admin.execute(sql.SQL("create database {}").format(name))
            console.print(f"warehouse: dropped and recreated the demo database {target.database!r} on {where}")
            return
        with psycopg.connect(target.dsn(), autocommit=True) as con:
            schemas = sql.SQL(", ").join(sql.Identifier(s) for s in PIPELINE_SCHEMAS)
            con.execute(sql.SQL("drop schema if exists {} cascade").format(schemas))
        console.print(f"warehouse: database {target.database!r} on {where} is not the demo's own, so it is kept; "
                      f"dropped the pipeline's schemas in it ({', '.join(PIPELINE_SCHEMAS)}). Pass --database "
                      f"to give the demo a database of its own to recreate.")
    except psycopg.Error as exc:
        action = "recreate the database" if recreate else "drop the pipeline's schemas in"
        raise DemoError(f"cannot {action} {target.database!r} on {where} as user {target.user!r}: "
                        f"{str(exc).strip()}") from None


def _reset_registry(uri: str, endpoint: str | None, *, create_bucket: bool) -> None:
    """Delete every object under the registry's prefix (never a whole bucket); create the demo bucket if asked."""
    from ml.registry import Registry, RegistryError

    store = Registry.from_uri(uri, endpoint_url=endpoint).store
    if not store.prefix:
        raise DemoError(f"TIDEMARK_REGISTRY_URI={uri!r} has no prefix: the demo clears its registry before each "
                        "run and does not empty a whole bucket. Use s3://bucket/some-prefix.")
    client, where = store.client, endpoint or "AWS"
    try:
        if create_bucket:
            try:
                client.head_bucket(Bucket=store.bucket)
            except client.exceptions.ClientError:
                client.create_bucket(Bucket=store.bucket)
        keys = store.list("")
        for at in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = [{"Key": f"{store.prefix}/{key}"} for key in keys[at:at + 1000]]
            client.delete_objects(Bucket=store.bucket, Delete={"Objects": batch, "Quiet": True})
    except (RegistryError, client.exceptions.ClientError) as exc:
        raise DemoError(f"cannot prepare the registry {uri} at {where}: {exc}") from None
    console.print(f"registry: {uri} at {where}; removed the {len(keys)} object(s) a previous run left under it")


def _rows(settings: Settings, statement) -> list[dict]:
    from ml.core.warehouse import Warehouse

    with Warehouse.connect(settings, read_only=True) as wh:
        return wh.rows(statement)


def _requests(settings: Settings, model: str, chunk: dict) -> list[dict]:
    import sqlalchemy as sa

    from ml.core.tables import retrain_requests as t

    if not _has(settings, t.fullname):
        return []
    start, end = date.fromisoformat(chunk["start"]), date.fromisoformat(chunk["end"])
    rows = _rows(settings, sa.select(t.c.requested_on, t.c.reason)
                 .where(t.c.model_name == model, t.c.requested_on.between(start, end)).order_by(t.c.requested_on))
    return [{"as_of": str(r["requested_on"])[:10], "reason": r["reason"]} for r in rows]


def _has(settings: Settings, table: str) -> bool:
    from ml.core.warehouse import Warehouse

    with Warehouse.connect(settings, read_only=True) as wh:
        return wh.table_exists(table)


def _daily(model: str, horizon_days: int | None):
    """Per scored day of `model`: rows, the dataset drift, and (with `horizon_days`) the realized AUC of that
    day's labels."""
    import sqlalchemy as sa

    from ml.core.tables import drift_metrics, model_performance, predictions
    from ml.monitoring.drift import DATASET_ROW

    p = (sa.select(predictions.c.as_of_date, predictions.c.model_version, sa.func.count().label("rows"))
         .where(predictions.c.model_name == model)
         .group_by(predictions.c.as_of_date, predictions.c.model_version).subquery("p"))
    d, m = drift_metrics.alias("d"), model_performance.alias("m")
    realized = m.c.roc_auc if horizon_days is not None else sa.cast(sa.null(), sa.Double)
    joined = p.outerjoin(d, sa.and_(d.c.as_of_date == p.c.as_of_date, d.c.model_name == model,
                                    d.c.column_name == DATASET_ROW))
    if horizon_days is not None:
        joined = joined.outerjoin(m, sa.and_(m.c.as_of_date == p.c.as_of_date - horizon_days,
                                             m.c.model_name == model))
    return (sa.select(p.c.as_of_date, p.c.model_version, p.c.rows, d.c.drift_share, d.c.dataset_drift,
                      realized.label("realized_roc_auc"))
            .select_from(joined).order_by(p.c.as_of_date))


def _summary(settings: Settings, runs: list[dict], first: date, until: date) -> dict[str, Any]:
    return {
        "days": (until - first).days + 1,
        "simulation": {**DEMO_SIM, "history_end": str(until)},
        "warehouse": redacted_url(settings.warehouse.url),
        "registry": settings.registry_uri,
        "s3_endpoint": settings.s3_endpoint_url,
        "models": {model: _model_summary(settings, model) for model in MODELS},
        "runs": runs,
    }


def _model_summary(settings: Settings, model: str) -> dict[str, Any]:
    """One model's champions, drift, retrain requests, gate decisions and daily timeline."""
    import sqlalchemy as sa

    from ml.core.spec import load_spec
    from ml.core.tables import model_performance, model_promotions, retrain_requests
    from ml.registry import Registry

    spec = load_spec(model, specs_dir=settings.specs_dir)
    registry = Registry.from_settings(settings)
    history = registry.alias(model, "champion").history
    versions = {v.version: v.manifest for v in registry.versions(model)}
    promotions = _rows(settings, sa.select(*(model_promotions.c[c] for c in (
        "candidate_version", "candidate", "decision", "reasons", "champion_version", "challenger_metric",
        "champion_metric", "diff_ci_low", "diff_ci_high"))).where(model_promotions.c.model_name == model)
        .order_by(model_promotions.c.candidate_version))
    # ml.model_performance appears once the first scored day's labels mature: not in a short demo.
    matured = _has(settings, model_performance.fullname)
    daily = _rows(settings, _daily(model, spec.label.horizon_days if matured else None))
    requests = _rows(settings, sa.select(retrain_requests.c.requested_on, retrain_requests.c.reason,
                                         retrain_requests.c.detail).where(retrain_requests.c.model_name == model)
                     .order_by(retrain_requests.c.requested_on)) \
        if _has(settings, retrain_requests.fullname) else []
    return {
        "description": spec.description,
        "champion_history": [
            {"version": e["to"], "promoted_on": versions.get(e["to"], {}).get("as_of"), "action": e["action"],
             "reason": _why(e, {p["candidate_version"]: p for p in promotions})} for e in history
        ],
        "drift_detected_on": [str(r["as_of_date"])[:10] for r in daily if r["dataset_drift"]],
        "retrain_requests": [{"date": str(r["requested_on"])[:10], "reason": r["reason"],
                              "detail": json.loads(r["detail"])} for r in requests],
        "promotions": [
            {"date": versions.get(p["candidate_version"], {}).get("as_of"), "version": p["candidate_version"],
             "candidate": p["candidate"], "decision": p["decision"], "against": p["champion_version"],
             "roc_auc": p["challenger_metric"], "champion_roc_auc": p["champion_metric"],
             "gain_ci": [p["diff_ci_low"], p["diff_ci_high"]], "reasons": json.loads(p["reasons"]),
             "test_metrics": {k: versions.get(p["candidate_version"], {}).get("metrics", {}).get(k)
                              for k in ("roc_auc", "pr_auc", "brier", "ece")}}
            for p in promotions
        ],
        "prediction_rows": sum(r["rows"] for r in daily),
        "timeline": [{**r, "as_of_date": str(r["as_of_date"])[:10],
                      "dataset_drift": None if r["dataset_drift"] is None else bool(r["dataset_drift"])} for r in daily],
        "reports": f"{settings.registry_uri}/monitoring/{model}/",
        "model_cards": {version: _card(registry, model, version) for version in versions},
        "reasons_sample": _reasons_sample(settings, model),
        "champion_fairness": _fairness(history[-1]["to"] if history else None, versions),
    }


def _reasons_sample(settings: Settings, model: str, customers: int = 3) -> list[dict]:
    """The reason codes of the latest day's highest scores: what a consumer of the scores reads beside them."""
    import sqlalchemy as sa

    from ml.core.tables import prediction_reasons, predictions

    if not _has(settings, prediction_reasons.fullname):
        return []
    p, r = predictions.alias("p"), prediction_reasons.alias("r")
    latest = sa.select(sa.func.max(r.c.as_of_date)).where(r.c.model_name == model).scalar_subquery()
    top = (sa.select(p.c.entity_id, p.c.as_of_date, p.c.model_version, p.c.score)
           .where(p.c.model_name == model, p.c.as_of_date == latest)
           .order_by(p.c.score.desc(), p.c.entity_id).limit(customers).subquery("top"))
    rows = _rows(settings, sa.select(top, r.c.reason_rank, r.c.feature, r.c.feature_value, r.c.contribution)
                 .select_from(top.join(r, sa.and_(r.c.entity_id == top.c.entity_id, r.c.as_of_date == top.c.as_of_date,
                                                  r.c.model_name == model)))
                 .order_by(top.c.score.desc(), top.c.entity_id, r.c.reason_rank))
    found: dict[str, dict] = {}
    for row in rows:
        entry = found.setdefault(row["entity_id"], {"entity_id": row["entity_id"], "as_of_date": str(row["as_of_date"])[:10],
                                                    "version": row["model_version"], "score": row["score"], "reasons": []})
        entry["reasons"].append(f"{row['feature']} = {row['feature_value']} ({row['contribution']:+.2f})")
    return list(found.values())


def _card(registry, model: str, version: str) -> str | None:
    from ml.registry.card import NoCard, card_location

    try:
        return card_location(registry, model, version)
    except NoCard:
        return None


def _fairness(version: str | None, manifests: dict[str, dict]) -> dict[str, Any]:
    """The champion's per-group test metrics and differences for each fairness attribute."""
    report = manifests.get(version, {}).get("fairness") or {} if version else {}
    keep = ("rows", "positives", "selection_rate", "tpr", "fpr", "mean_score", "observed_rate")
    return {"version": version, "attributes": {
        attribute: {"groups": {g: {k: found.get(k) for k in keep} for g, found in entry["groups"].items()},
                    "demographic_parity_difference": entry.get("demographic_parity_difference"),
                    "equalized_odds_difference": entry.get("equalized_odds_difference")}
        for attribute, entry in report.items()}}


def _why(entry: dict, promotions: dict[str, dict]) -> str:
    """A one-line reason for a change of champion, from the gate's evidence."""
    p = promotions.get(entry["to"])
    if entry["action"] != "promote" or p is None:
        return entry["reason"]
    if p["champion_version"] is None:
        return f"first champion: roc_auc {p['challenger_metric']:.4f} cleared the floors and sanity checks"
    return (f"beat {p['champion_version']}: roc_auc {p['challenger_metric']:.4f} vs {p['champion_metric']:.4f}, "
            f"95% CI of the gain [{p['diff_ci_low']:+.4f}, {p['diff_ci_high']:+.4f}]")


def _print(summary: dict[str, Any], path) -> None:
    runs = Table(title="Airflow runs (dag.test)")
    for col in ("dag", "conf", "state", "tasks", "seconds"):
        runs.add_column(col, justify="right" if col in ("tasks", "seconds") else "left")
    for row in summary["runs"]:
        runs.add_row(*(str(row[c]) for c in ("dag", "conf", "state", "tasks", "seconds")))
    console.print(runs)
    for model, found in summary["models"].items():
        _print_model(model, found)
    console.print(f"warehouse: {summary['warehouse']}; registry: {summary['registry']}"
                  + (f" at {summary['s3_endpoint']}" if summary["s3_endpoint"] else ""))
    rows = sum(found["prediction_rows"] for found in summary["models"].values())
    console.print(f"{rows:,} predictions of {len(summary['models'])} models; demo finished in "
                  f"{summary['duration_s']}s; summary written to {path}")


def _print_model(model: str, summary: dict[str, Any]) -> None:
    console.rule(f"[bold]{model}[/bold]: {summary['description']}")
    events: dict[str, list[str]] = {}
    for r in summary["retrain_requests"]:
        events.setdefault(r["date"], []).append(f"retrain requested: {r['reason']}")
    for p in summary["promotions"]:
        if p["date"]:
            events.setdefault(p["date"], []).append(f"{p['version']} ({p['candidate']}) {p['decision']}")
    timeline = Table(title=f"{model}: the champion scoring and being watched, day by day")
    for col in ("as of", "model", "scored", "drift share", "drift", "realized AUC", "event"):
        timeline.add_column(col, justify="right" if col in ("scored", "drift share", "realized AUC") else "left")
    for r in summary["timeline"]:
        share = "" if r["drift_share"] is None else f"{r['drift_share']:.2f}"
        auc = "" if r["realized_roc_auc"] is None else f"{r['realized_roc_auc']:.3f}"
        timeline.add_row(r["as_of_date"], r["model_version"], f"{r['rows']:,}", share,
                         "DRIFT" if r["dataset_drift"] else "", auc, "; ".join(events.get(r["as_of_date"], [])))
    console.print(timeline)
    decisions = Table(title=f"{model}: promotion decisions")
    for col in ("as of", "version", "candidate", "decision", "test AUC", "champion AUC", "gain 95% CI"):
        decisions.add_column(col, no_wrap=True)
    for p in summary["promotions"]:
        ci = "" if p["gain_ci"][0] is None else f"[{p['gain_ci'][0]:+.4f}, {p['gain_ci'][1]:+.4f}]"
        champion = "" if p["champion_roc_auc"] is None else f"{p['champion_roc_auc']:.4f}"
        decisions.add_row(str(p["date"]), p["version"], p["candidate"], p["decision"], f"{p['roc_auc']:.4f}",
                          champion, ci)
    console.print(decisions)
    for p in summary["promotions"]:
        console.print(f"[bold]{model} {p['version']}[/bold] {p['decision']}:")
        for reason in p["reasons"]:
            console.print(f"    {reason}")
    _print_fairness(model, summary["champion_fairness"])
    for sample in summary["reasons_sample"]:
        console.print(f"{model} {sample['as_of_date']} entity {sample['entity_id']}: score {sample['score']:.3f} because "
                      + "; ".join(sample["reasons"]))
    console.print(f"{model}: {summary['prediction_rows']:,} predictions; monitoring reports: {summary['reports']}")
    cards = {v: c for v, c in summary["model_cards"].items() if c}
    if cards:
        console.print(f"{model}: model cards: " + "; ".join(f"{v} {c}" for v, c in cards.items()))


def _print_fairness(model: str, fairness: dict[str, Any]) -> None:
    if not fairness["attributes"]:
        return
    table = Table(title=f"{model}: fairness of champion {fairness['version']} on its test rows")
    for col in ("attribute", "group", "rows", "selection rate", "TPR", "FPR", "mean score", "observed rate"):
        table.add_column(col, justify="left" if col in ("attribute", "group") else "right")

    def rate(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    for attribute, entry in fairness["attributes"].items():
        for group, g in entry["groups"].items():
            table.add_row(attribute, group, f"{g['rows']:,}", *(rate(g[k]) for k in (
                "selection_rate", "tpr", "fpr", "mean_score", "observed_rate")))
        table.add_row(attribute, "[italic]difference[/italic]", "",
                      f"DP {rate(entry['demographic_parity_difference'])}",
                      f"EO {rate(entry['equalized_odds_difference'])}", "", "", "")
    console.print(table)
