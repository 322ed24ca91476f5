"""`python -m ml`: the command line for every pipeline stage.

A `TidemarkError` from any command is printed as one short `error: ...` message on stderr with exit
code 2; `--debug` shows its traceback instead. Any other exception is a defect and keeps its traceback.
"""

from __future__ import annotations

import os

import click
import typer
from rich.text import Text
from typer.core import TyperGroup

from ml.cli import batch, models, pipeline, registry, tools
from ml.cli.common import console
from ml.core.errors import TidemarkError


class _Commands(TyperGroup):
    """The top-level command group, which turns a TidemarkError into a short message and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TidemarkError as exc:
            if ctx.params.get("debug"):
                raise
            console.print(Text("error:", style="bold red"), Text(str(exc)), soft_wrap=True)
            raise typer.Exit(2) from None


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True,
                  help="Tidemark: batch ML on Airflow, dbt and a warehouse.")


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="Show an error's traceback instead of a one-line message."),
) -> None:
    """Tidemark: batch ML on Airflow, dbt and a warehouse."""


app.add_typer(pipeline.app)
app.add_typer(batch.app)
app.add_typer(registry.app, name="registry")
app.add_typer(tools.app)
app.add_typer(models.app)


def main() -> None:
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    app()
