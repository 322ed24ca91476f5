"""`python -m ml registry ...`: inspect the model registry and its model cards, promote a version by hand, roll back,
repair."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ml.cli.common import console
from ml.core.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Inspect the model registry, promote a version, roll back.")


def _registry():
    from ml.registry import Registry

    return Registry.from_settings(Settings.from_env())


def _first_failure(decided: dict) -> str | None:
    """The first check a decision failed, or what stopped it (a superseded promotion, an unreadable record)."""
    reasons = decided["reasons"]
    failed = next((r.removeprefix("FAIL: ") for r in reasons if r.startswith("FAIL")), None)
    if failed is None and decided["decision"] in ("superseded", "unreadable") and reasons:
        failed = reasons[-1]
    return failed


@app.command("list")
def registry_list(model: Optional[str] = typer.Argument(None, help="Model name; all models when left out.")) -> None:
    """Versions with their primary metric and state, where the aliases point, and the gate's decision on each
    with its first failing reason; exit code 1 when a champion is damaged."""
    from ml.registry.promotion import decisions
    from ml.registry.repair import scan

    reg = _registry()
    unusable = []
    for name in [model] if model else reg.models(unpublished=True):
        states = {a: reg.alias(name, a, damaged_ok=True) for a in ("champion", "challenger")}
        table = Table(title=f"{name} in {reg.uri}")
        for col in ("version", "created", "candidate", "as of", "roc_auc", "aliases", "state"):
            table.add_column(col)
        gate = Table(title=f"gate decisions of {name}")
        for col in ("version", "decision", "first failing reason"):
            gate.add_column(col)
        problems, healths, decided = {}, scan(reg, name), decisions(reg, name)
        for health in healths:
            if health.state == "unpublished":
                continue
            m = health.info.manifest if health.info else {}
            tags = ", ".join(a for a, s in states.items() if s.version == health.version)
            auc = m.get("metrics", {}).get("roc_auc")
            table.add_row(health.version, m.get("created_at", "")[:19], m.get("candidate", ""),
                          str(m.get("as_of", "")), "" if auc is None else f"{auc:.4f}", tags, health.state)
            verdict = decided.get(health.version)
            if verdict is None:
                gate.add_row(health.version, "none recorded", "")
            else:
                unfinished = "" if verdict["completed"] else " (unfinished: run `registry repair`)"
                gate.add_row(health.version, f"{verdict['decision']}{unfinished}", _first_failure(verdict) or "")
            if health.problem:
                problems[health.version] = health.problem
        console.print(table)
        if gate.rows:
            console.print(gate)
        for version, problem in problems.items():
            console.print(f"{name} {version} damaged: {problem}", soft_wrap=True)
        champion = states["champion"]
        if champion.damage:
            unusable.append((name, f"the champion alias of {name} is damaged: {champion.damage}"))
        elif champion.version in problems:
            unusable.append((name, f"the champion of {name} is {champion.version}, which is damaged"))
        elif champion.version and not any(h.version == champion.version for h in healths):
            unusable.append((name, f"the champion of {name} is {champion.version}, which is not in the registry"))
    for name, line in unusable:
        console.print(f"error: {line}; move it with `python -m ml registry promote {name} <version> --reason ...` "
                      f"or `python -m ml registry rollback {name}`", soft_wrap=True)
    if unusable:
        raise typer.Exit(1)


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


@app.command("card")
def registry_card(
    model: str,
    version: Optional[str] = typer.Argument(None, help="Version id, e.g. v0002 (default: the champion)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the card's HTML to this file (checked against "
                                                           "the manifest's sha256) and print its path."),
) -> None:
    """Where a version's model card is (a file:// URI a browser opens, or its s3:// URI), or with --out a copy
    of it. A card is written while a version is trained; a version published before that has none."""
    from ml.registry.card import card_location, read_card
    from ml.registry.champion import champion_version

    reg = _registry()
    version = version or champion_version(Settings.from_env(), model)
    if out is None:
        location = card_location(reg, model, version)
        typer.echo(location)
        if not location.startswith("file:"):
            console.print(f"download it with `python -m ml registry card {model} {version} --out card.html`",
                          soft_wrap=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(read_card(reg, model, version))
    typer.echo(str(out))


@app.command("promote")
def registry_promote(
    model: str, version: str, reason: str = typer.Option(..., help="Why; kept in the alias history."),
    alias: str = typer.Option("champion"),
) -> None:
    """Point an alias at a version by hand (compare-and-swap; the gate is not consulted)."""
    state = _registry().promote(model, version, actor=Settings.from_env().actor, reason=reason, alias=alias)
    console.print(f"{model} {alias} -> {state.version}")


@app.command("repair")
def registry_repair(
    model: Optional[str] = typer.Argument(None, help="Model name; all models when left out."),
    stale_after: float = typer.Option(600.0, help="Seconds after which a temporary file has no live writer."),
) -> None:
    """Complete promotions that a killed run left half done, remove stale temporary files, report leftovers."""
    from functools import partial

    from ml.registry.repair import repair
    from ml.training.records import record_promotion

    settings = Settings.from_env()
    reg = _registry()
    for name in [model] if model else reg.models(unpublished=True):
        report = repair(reg, name, partial(record_promotion, settings), temp_age_s=stale_after)
        for line in report.lines() or [f"{name}: nothing to repair"]:
            console.print(line, soft_wrap=True)


@app.command("keygen")
def registry_keygen(directory: str = typer.Argument(..., help="Folder for the new key pair.")) -> None:
    """Write an Ed25519 key pair for signed manifests: the private key (mode 0600) and the public key."""
    from ml.registry.signing import generate_keypair

    private, public = generate_keypair(Path(directory))
    console.print(f"signing key (keep it secret; TIDEMARK_SIGNING_KEY for training): {private}", soft_wrap=True)
    console.print(f"verify key (TIDEMARK_VERIFY_KEY for scoring): {public}", soft_wrap=True)


@app.command("rollback")
def registry_rollback(
    model: str, reason: str = typer.Option("manual rollback", help="Why; kept in the alias history."),
) -> None:
    """Point the champion back at the version it replaced."""
    state = _registry().rollback(model, actor=Settings.from_env().actor, reason=reason)
    console.print(f"{model} champion -> {state.version}")
