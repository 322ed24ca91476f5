"""What the commands share: the console, date options and progress displays.

The console interprets no markup and no emoji codes: what it prints holds paths, names and messages
from users and files, whose brackets and colons must come out as written. Style goes in as `Text`.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

console = Console(stderr=True, log_path=False, markup=False, emoji=False)

SpecOption = Annotated[Optional[str], typer.Option(
    "--spec", help="Spec name under ml/specs/ or a path to a spec file (default: TIDEMARK_MODEL_SPEC, else churn).")]
DateOption = Annotated[Optional[str], typer.Option("--date", help="One as-of date (YYYY-MM-DD).")]
StartOption = Annotated[Optional[str], typer.Option("--start", help="First as-of date of a range (YYYY-MM-DD).")]
EndOption = Annotated[Optional[str], typer.Option("--end", help="Last as-of date of a range, inclusive (YYYY-MM-DD).")]


def parse_day(value: str, option: str) -> date:
    """`value` as a date, or a usage error naming `option`."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD, e.g. 2025-01-01", param_hint=option)


def interval(day: str | None, start: str | None, end: str | None) -> dict[str, str]:
    """The inclusive {"start", "end"} that --date, or --start with --end, names."""
    if day is not None and (start is not None or end is not None):
        raise typer.BadParameter("give either --date or --start/--end, not both", param_hint="--date")
    if day is not None:
        start = end = day
    if start is None or end is None:
        raise typer.BadParameter("give --date D for one day, or --start D1 --end D2 for a range",
                                 param_hint="--date / --start / --end")
    first, last = parse_day(start, "--start" if day is None else "--date"), parse_day(end, "--end")
    if last < first:
        raise typer.BadParameter(f"--end {last} is before --start {first}", param_hint="--end")
    return {"start": first.isoformat(), "end": last.isoformat()}


def progress(label: str, *, bar: bool = False) -> Progress:
    """A progress display on stderr that leaves no trace when stderr is not a terminal."""
    counts = [BarColumn(), MofNCompleteColumn()] if bar else []
    title = label.replace("{", "{{").replace("}", "}}")  # TextColumn formats its text with str.format
    return Progress(TextColumn(title, style="bold", markup=False), *counts,
                    TextColumn("{task.description}", markup=False), TimeElapsedColumn(),
                    console=console, transient=not console.is_terminal)


def step_logger(shown: Progress, task: TaskID, prefix: str) -> Callable[[str], None]:
    """A callback that shows a step on the progress line and logs it above."""
    def on_step(name: str) -> None:
        shown.update(task, description=name)
        console.log(f"{prefix}: {name}")

    return on_step
