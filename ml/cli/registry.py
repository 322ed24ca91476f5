"""`python -m ml registry ...`: inspect the model registry, promote a version by hand, roll back."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from ml.cli.common import console
from ml.core.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Inspect the model registry, promote a version, roll back.")


def _registry():
    from ml.registry import Registry

    return Registry.from_settings(Settings.from_env())


@app.command("list")
def registry_list(model: Optional[str] = typer.Argument(None, help="Model name; all models when left out.")) -> None:
    """Versions with their primary metric, and where the aliases point."""
    reg = _registry()
    for name in [model] if model else reg.models():
        aliases = {a: reg.alias(name, a).version for a in ("champion", "challenger")}
        table = Table(title=f"{name} in {reg.uri}")
        for col in ("version", "created", "candidate", "as of", "roc_auc", "aliases"):
            table.add_column(col)
        for info in reg.versions(name):
            m = info.manifest
            tags = ", ".join(a for a, v in aliases.items() if v == info.version)
            auc = m.get("metrics", {}).get("roc_auc")
            table.add_row(info.version, m.get("created_at", "")[:19], m.get("candidate", ""), str(m.get("as_of")),
                          "" if auc is None else f"{auc:.4f}", tags)
        console.print(table)


@app.command("show")
def registry_show(
    model: str,
    version: Optional[str] = typer.Argument(None, help="Version id, e.g. v0002 (default: the champion)."),
    history: bool = typer.Option(False, "--history", help="Print the champion alias history instead."),
) -> None:
    """A version's manifest as JSON, or the champion's history."""
    from ml.registry.champion import champion_version

    reg = _registry()
    if history:
        typer.echo(json.dumps(list(reg.alias(model, "champion").history), indent=2))
        return
    version = version or champion_version(Settings.from_env(), model)
    typer.echo(json.dumps(reg.get(model, version).manifest, indent=2, default=str))


@app.command("promote")
def registry_promote(
    model: str, version: str, reason: str = typer.Option(..., help="Why; kept in the alias history."),
    alias: str = typer.Option("champion"),
) -> None:
    """Point an alias at a version by hand (compare-and-swap; the gate is not consulted)."""
    state = _registry().promote(model, version, actor=Settings.from_env().actor, reason=reason, alias=alias)
    console.print(f"{model} {alias} -> {state.version}")


@app.command("rollback")
def registry_rollback(
    model: str, reason: str = typer.Option("manual rollback", help="Why; kept in the alias history."),
) -> None:
    """Point the champion back at the version it replaced."""
    state = _registry().rollback(model, actor=Settings.from_env().actor, reason=reason)
    console.print(f"{model} champion -> {state.version}")
