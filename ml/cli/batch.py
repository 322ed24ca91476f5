"""`score` and `monitor`: the steps of a model's score_<model> and monitor_<model> DAGs, run in this process."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from ml.cli.common import (
    DateOption,
    EndOption,
    SpecOption,
    StartOption,
    console,
    interval,
    progress,
    step_logger,
)
from ml.core.settings import Settings

app = typer.Typer()


@app.command()
def score(
    spec: SpecOption = None,
    day: DateOption = None,
    start: StartOption = None,
    end: EndOption = None,
    shards: Optional[int] = typer.Option(None, min=1, help="Entity-hash shards (default: the spec's scoring.shards)."),
    run_id: Optional[str] = typer.Option(None, help="Folder of the shard files under TIDEMARK_HOME/runs/score "
                                                    "(default: cli-<start>-<end>)."),
    no_mart: bool = typer.Option(False, "--no-mart", help="Leave the dbt scores mart as it is."),
) -> None:
    """Score days with the champion into ml.predictions, then rebuild the scores mart: what score_<model> runs.

    With no dates, the features watermark's day (the latest as-of date in the features); days after it are refused.
    """
    from ml.core.spec import load_spec
    from ml.orchestration.intervals import interval_days
    from ml.scoring.score import build_scores_mart, plan_scoring, score_days

    asked = _asked(day, start, end)
    settings = Settings.from_env()
    model_spec = load_spec(spec or settings.model_spec)
    scored_at = datetime.now(timezone.utc)
    plan = plan_scoring(model_spec, settings, asked, scored_at)
    days, version = interval_days(plan), plan["version"]
    shards = shards or model_spec.scoring.shards

    def scored(shard: int, when: date, rows: int) -> None:
        shown.update(task, advance=1, description=f"{when} shard {shard}/{shards}")
        console.log(f"{model_spec.name} {version}: {when} shard {shard}/{shards}: {rows:,} rows")

    with progress(f"score {model_spec.name} {version}", bar=True) as shown:
        task = shown.add_task("", total=len(days) * shards)
        result = score_days(model_spec, settings, days, run_id or f"cli-{days[0]}-{days[-1]}", scored_at=scored_at,
                            shards=shards, version=version, on_day=scored)
        if not no_mart:
            shown.update(task, description="dbt build --select tag:scores")
            build_scores_mart(settings)
    table = Table(title=f"ml.predictions of {model_spec.name}")
    for col in ("as of", "rows", "version"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for when, rows in result["rows"].items():
        table.add_row(when, f"{rows:,}", result["version"])
    console.print(table)
    mart = "scores mart left as it was (--no-mart)" if no_mart else "scores mart rebuilt"
    console.print(f"{sum(result['rows'].values()):,} rows of {result['model']} {result['version']} published "
                  f"in {result['seconds']:.2f}s; {mart}", soft_wrap=True)


@app.command()
def monitor(
    spec: SpecOption = None,
    day: DateOption = None,
    start: StartOption = None,
    end: EndOption = None,
) -> None:
    """Check drift, realized performance and the retrain triggers for days: what monitor_<model> runs.

    With no dates, the features watermark's day (the latest as-of date in the features); days after it are refused.
    """
    from ml.core.spec import load_spec
    from ml.monitoring.steps import monitor_days

    days = _asked(day, start, end)
    settings = Settings.from_env()
    model_spec = load_spec(spec or settings.model_spec)
    with progress(f"monitor {model_spec.name}") as shown:
        result = monitor_days(model_spec, settings, days,
                              on_step=step_logger(shown, shown.add_task("", total=None), model_spec.name))
    drift = Table(title=f"drift of {result['model']} {result['version']} against its reference sample")
    for col in ("as of", "drift share", "drift", "drifted columns"):
        drift.add_column(col, justify="right" if col == "drift share" else "left")
    for row in result["drift"]:
        drift.add_row(row["as_of_date"], f"{row['drift_share']:.2f}", "DRIFT" if row["dataset_drift"] else "stable",
                      ", ".join(row["drifted_columns"]))
    console.print(drift)
    for row in result["drift"]:
        console.print(f"  report {row['as_of_date']}: {row['report_html']}", highlight=False, soft_wrap=True)
    _print_performance(result["performance"], model_spec.label.horizon_days)
    request = result["request"]
    if request is None:
        console.print("no retrain requested")
    else:
        console.print(Text("retrain requested", style="bold"), f"on {request['as_of']} because of "
                      f"{request['reason']}: {request['detail']}", soft_wrap=True)


def _asked(day: str | None, start: str | None, end: str | None) -> dict[str, str] | None:
    """The days that --date or --start/--end name; None when no date option is given."""
    return None if day is None and start is None and end is None else interval(day, start, end)


def _print_performance(found: list[dict], horizon_days: int) -> None:
    from ml.monitoring.performance import PERFORMANCE_METRICS

    if not found:
        console.print(f"no realized performance: no scored as-of date {horizon_days} days before these days "
                      "has matured labels", soft_wrap=True)
        return
    table = Table(title="realized performance (as-of dates whose labels matured)")
    for col in ("as of", "version", "rows", *PERFORMANCE_METRICS):
        table.add_column(col, justify="left" if col in ("as of", "version") else "right")
    for row in found:
        table.add_row(row["as_of_date"], row["model_version"], f"{row['rows']:,}",
                      *("" if row[m] is None else f"{row[m]:.4f}" for m in PERFORMANCE_METRICS))
    console.print(table)
