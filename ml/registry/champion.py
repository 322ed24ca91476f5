"""The one champion resolver: which version the `champion` alias points at, as a verified local copy.

A DAG run resolves the champion once, in its first task, and passes the version on, so every later
task of the run (and every retry) works with that one version even if a promotion lands meanwhile.
Local copies are cached per version under TIDEMARK_HOME/cache/models and checked against the
registry's sha256 of every file each time they are used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ml.core.errors import TidemarkError
from ml.core.settings import Settings
from ml.registry.registry import MANIFEST, Registry
from ml.registry.stores import IntegrityError, RegistryError, load_json

log = logging.getLogger(__name__)


class NoChampion(RegistryError):
    """A model has no champion yet; the message says how to train one."""


class ChampionUnusable(IntegrityError):
    """The champion cannot be downloaded or loaded; the message says how to move the champion off it."""


@dataclass(frozen=True)
class Champion:
    """One pinned version of a model: its registry manifest and a verified local copy of its files."""

    model: str
    version: str
    directory: Path
    manifest: dict


def champion_version(settings: Settings, model: str) -> str:
    """The version the `champion` alias of `model` points at now; NoChampion when there is none yet."""
    registry = Registry.from_settings(settings)
    version = registry.alias(model, "champion").version
    if version is None:
        raise NoChampion(
            f"model {model!r} has no champion in the registry at {registry.uri}; train one first "
            f"(`python -m ml train --spec {model}` or the train_{model} DAG)"
        )
    return version


def resolve_champion(settings: Settings, model: str, version: str | None = None, *, refresh: bool = False
                     ) -> Champion:
    """`version` of `model` (default: the current champion) with its verified local copy.

    `refresh` downloads the version again even when the cached copy matches, so that every stored
    artifact is read and checked: what training does before it compares a challenger with the champion.
    """
    version = version or champion_version(settings, model)
    registry = Registry.from_settings(settings)
    directory = cached_version(registry, model, version, settings.home / "cache" / "models", refresh=refresh)
    path = directory / MANIFEST
    manifest = load_json(path.read_bytes(), path.as_uri(), f"delete {directory} and it is fetched again")
    return Champion(model, version, directory, manifest)


def usable_champion(settings: Settings, model: str, load: Callable[[Path], object]) -> Champion | None:
    """The current champion, downloaded anew (every artifact verified) and loaded with `load`; None before the
    first promotion. ChampionUnusable, saying how to move the champion, when either step fails."""
    version = None
    try:
        version = champion_version(settings, model)
        champion = resolve_champion(settings, model, version, refresh=True)
        load(champion.directory)
    except NoChampion:
        return None
    except (TidemarkError, OSError, ValueError) as exc:
        raise ChampionUnusable(
            f"the champion {version or '(alias unreadable)'} of {model!r} cannot be used: {exc}. Nothing was "
            f"trained. Move the champion to a good version first: `python -m ml registry promote {model} <version> "
            f"--reason ...` or `python -m ml registry rollback {model} --reason ...` (`python -m ml registry list "
            f"{model}` shows which versions are damaged)"
        ) from exc
    return champion


def cached_version(registry: Registry, model: str, version: str, root: Path, *, refresh: bool = False) -> Path:
    """A local copy of a version whose every file matches the registry's sha256; fetched when missing or altered,
    or with `refresh` (the download replaces the copy only once every file of it verified)."""
    dest = root / model / version
    if refresh and (dest / MANIFEST).is_file():
        return registry.download(model, version, dest)
    if (dest / MANIFEST).is_file():
        files = registry.get(model, version).manifest["files"]
        if all(_matches(dest / name, meta) for name, meta in files.items()):
            return dest
        log.warning("cached copy of %s %s in %s no longer matches the registry; fetching it again", model, version, dest)
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{version}.{uuid.uuid4().hex}"
    registry.download(model, version, staging)
    try:
        os.rename(staging, dest)  # atomic: a reader sees no folder or a complete one
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (dest / MANIFEST).is_file():
            raise RegistryError(f"cannot cache {model} {version} at {dest}: the folder exists without a "
                                f"{MANIFEST}; delete it and retry") from None
    log.info("cached %s %s from %s in %s", model, version, registry.uri, dest)
    return dest


def _matches(path: Path, meta: dict) -> bool:
    if not path.is_file() or path.stat().st_size != meta["size"]:
        return False
    return hashlib.sha256(path.read_bytes()).hexdigest() == meta["sha256"]
