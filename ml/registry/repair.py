"""Health and repair of a model's registry entries.

`scan` classifies every version number (published, damaged, or only claimed) for `registry list`.
`repair` completes half-done promotions, removes temporary files that a killed writer left in a local
registry, and reports version numbers that were claimed but never published. It runs at the start of
every training run and promotion, so when there is nothing to do it costs three listings and no reads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ml.registry import promotion
from ml.registry.registry import MANIFEST, Registry, VersionInfo
from ml.registry.signing import SIGNATURE
from ml.registry.stores import LocalStore, RegistryError

log = logging.getLogger(__name__)
TEMP_AGE_S = 600.0  # a temporary file older than this has no live writer
CLAIM = ".claim"


@dataclass(frozen=True)
class VersionHealth:
    """One version number: `ok` with its manifest, `damaged` with the reason, or `unpublished` (claimed only)."""

    version: str
    state: str
    info: VersionInfo | None = None
    problem: str | None = None


@dataclass
class RepairReport:
    model: str
    finished: list[dict] = field(default_factory=list)
    removed_temp_files: list[str] = field(default_factory=list)
    unpublished: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What was done and found, one line each (nothing when the registry was in order)."""
        done = [f"{self.model} {o['version']}: promotion completed ({o['decision']}, champion "
                f"{o['champion_before']} -> {o['champion_after']})" for o in self.finished]
        done += [f"{self.model}: removed stale temporary file {p}" for p in self.removed_temp_files]
        if self.unpublished:
            done.append(f"{self.model}: version numbers claimed but never published (a publish that stopped; "
                        f"the numbers stay taken): {', '.join(self.unpublished)}")
        if self.undecided:
            done.append(f"{self.model}: published without a recorded decision: {', '.join(self.undecided)}")
        return done


def _by_version(registry: Registry, model: str) -> dict[str, set[str]]:
    prefix = f"{model}/versions/"
    found: dict[str, set[str]] = {}
    for key in registry.store.list(prefix):
        version, _, name = key[len(prefix):].partition("/")
        found.setdefault(version, set()).add(name)
    return dict(sorted(found.items(), key=lambda kv: (len(kv[0]), kv[0])))


def scan(registry: Registry, model: str) -> list[VersionHealth]:
    """Every version number of `model`, oldest first, with what is wrong with it if anything."""
    health = []
    for version, names in _by_version(registry, model).items():
        artifacts = names - {CLAIM, MANIFEST, SIGNATURE}
        if MANIFEST not in names:
            if artifacts:
                health.append(VersionHealth(version, "damaged", problem=f"{MANIFEST} is missing ({len(artifacts)} "
                                                                        "artifact(s) stored without it)"))
            else:
                health.append(VersionHealth(version, "unpublished", problem="claimed, nothing published"))
            continue
        try:
            info = registry.get(model, version)
        except RegistryError as exc:
            health.append(VersionHealth(version, "damaged", problem=str(exc).partition("; ")[0]))
            continue
        missing = sorted(set(info.manifest.get("files", {})) - artifacts)
        if missing:
            health.append(VersionHealth(version, "damaged", info, f"artifact(s) in the manifest but missing: "
                                                                  f"{', '.join(missing)}"))
        else:
            health.append(VersionHealth(version, "ok", info))
    return health


def repair(registry: Registry, model: str, write_row: promotion.RowWriter, *, temp_age_s: float = TEMP_AGE_S
           ) -> RepairReport:
    """Complete half-done promotions, remove stale temporary files, report claimed-but-unpublished numbers."""
    report = RepairReport(model)
    decided = registry.record_names(model, promotion.DECISIONS)
    done = set(registry.record_names(model, promotion.COMPLETIONS))
    outcomes = [promotion.finish(registry, model, version, write_row) for version in decided if version not in done]
    report.finished = [outcome for outcome in outcomes if not outcome.get("legacy")]
    for version, names in _by_version(registry, model).items():
        if MANIFEST not in names and names <= {CLAIM}:
            report.unpublished.append(version)
        elif MANIFEST in names and version not in decided:
            report.undecided.append(version)
    if isinstance(registry.store, LocalStore):
        report.removed_temp_files = _remove_stale_temp_files(registry.store.root / model, temp_age_s)
    for line in report.lines():
        log.info("registry repair: %s", line)
    return report


def _remove_stale_temp_files(root: Path, age_s: float) -> list[str]:
    """Delete `.tmp-*` files under `root` that were last written more than `age_s` seconds ago."""
    if not root.is_dir():
        return []
    cutoff, removed = time.time() - age_s, []
    for path in sorted(root.rglob(".tmp-*")):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(str(path))
        except FileNotFoundError:  # its writer finished meanwhile
            continue
    return removed
