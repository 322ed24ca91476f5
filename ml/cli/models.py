"""Bring your own model: scaffold one from a raw table, and check a spec against dbt and the warehouse."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from ml.cli.common import console
from ml.core.settings import Settings

app = typer.Typer()
spec_app = typer.Typer(no_args_is_help=True, help="Check a model spec against the dbt project and the warehouse.")
app.add_typer(spec_app, name="spec")

ProjectOption = Annotated[Optional[Path], typer.Option(
    "--dbt-project", help="The dbt project folder (default: dbt_project/ of the repository).")]


@spec_app.command("check")
def spec_check(
    name: str = typer.Argument(..., help="Spec name (in TIDEMARK_SPECS_DIR, then ml/specs/) or a path to a spec file."),
    dbt_project: ProjectOption = None,
) -> None:
    """Check a spec against the dbt manifest and the warehouse, naming each problem and its fix.

    Exit code 2 when there is any problem; else a summary of the rows, as-of dates and labels it trains on.
    """
    from ml.core.spec import load_spec
    from ml.core.spec_check import check_spec, summarize

    settings = Settings.from_env()
    spec = load_spec(name)
    manifest = (dbt_project or settings.dbt_project_dir) / "target" / "manifest.json"
    problems = check_spec(spec, settings, manifest=manifest)
    for problem in problems:
        console.print(Text("problem:", style="bold red"), Text(problem.message), soft_wrap=True)
        console.print(Text("    fix:", style="bold"), Text(problem.fix), soft_wrap=True)
    if problems:
        console.print(f"spec {spec.name}: {len(problems)} problem(s)", soft_wrap=True)
        raise typer.Exit(2)
    console.print(Text("ok:", style="bold green"), Text(f"spec {spec.name} is ready to train"), soft_wrap=True)
    for line in summarize(spec, settings, manifest=manifest).lines():
        console.print(f"  {line}", soft_wrap=True)


@app.command("new-model")
def new_model(
    name: str = typer.Argument(..., help="The model's name: its spec file <name>.yaml and its dbt source."),
    table: str = typer.Option(..., "--table", help="The raw table (schema raw), as named to `python -m ml load-csv`."),
    label: str = typer.Option(..., "--label", help="The column to predict: 0/1, true/false or yes/no."),
    entity: Optional[str] = typer.Option(
        None, "--entity", help="The column that identifies a row (per --time); default: id or <table>_id, if unique."),
    time: Optional[str] = typer.Option(
        None, "--time", help="The date of each row, for a split by time; without it the rows are split at random."),
    dbt_project: ProjectOption = None,
    force: bool = typer.Option(False, "--force", help="Replace the model's files where they exist."),
) -> None:
    """Scaffold a model from a raw table: a dbt source, a typed staging model and a spec.

    The staging model's contract types are inferred from the table's values; the spec is written to
    TIDEMARK_SPECS_DIR, else ml/specs/. Prints the commands that build, check and train it.
    """
    from ml.features.scaffold import scaffold

    settings = Settings.from_env()
    plan = scaffold(settings, name, table, label=label, entity=entity, time=time, dbt_project=dbt_project,
                    force=force)
    for path in plan.files:
        console.print(f"wrote {path}", soft_wrap=True)
    check = f"python -m ml spec check {name}" + (f" --dbt-project {dbt_project}" if dbt_project else "")
    console.print(Text("next:", style="bold"))
    for command in ("python -m ml dbt parse", f"python -m ml dbt build --select +{plan.relation}", check,
                    f"python -m ml train --spec {name}"):
        console.print(f"  {command}", soft_wrap=True)
