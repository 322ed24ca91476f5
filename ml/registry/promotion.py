"""A promotion as one recoverable unit: the decision with its intent, then the alias, then the warehouse row.

    <model>/records/decisions/<version>.json    the gate's decision and what it means to do, written first
    <model>/aliases/champion.json               moved by compare-and-swap; the history entry names the decision
    the warehouse row                           an idempotent replace, through the caller's `write_row`
    <model>/records/completions/<version>.json  written last: the promotion is done

A process killed between two of these writes leaves a decision without a completion. `finish` completes it
and is safe to repeat: when the alias history already shows the move, it only writes the row and the
completion; when the alias still points where the decision found it, it makes the move; when someone moved
the alias since, the promotion is recorded as superseded (the alias never moves backward and its history
never forks).
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable

from ml.registry.registry import Registry
from ml.registry.stores import ConflictError, NotFound, RegistryError

DECISIONS, COMPLETIONS = "decisions", "completions"
ALIAS = "champion"
LOOK_BACK = 5  # newest versions searched for one published by an earlier try of the same promotion

RowWriter = Callable[[dict], None]


def attempt_key(run_id: str, *parts: dict) -> str:
    """A fingerprint of one promotion request: a retry of the same step with the same inputs gets the same key."""
    body = json.dumps([run_id, *parts], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def published_by(registry: Registry, model: str, attempt: str) -> str | None:
    """The version that an earlier try of this promotion (same attempt key) already published, if any."""
    for version in reversed(registry.version_ids(model)[-LOOK_BACK:]):
        try:
            if registry.get(model, version).manifest.get("attempt") == attempt:
                return version
        except RegistryError:
            continue
    return None


def is_decided(registry: Registry, model: str, version: str) -> bool:
    return version in registry.record_names(model, DECISIONS)


def begin(registry: Registry, model: str, version: str, decision: dict, *, promote: bool, expected: str | None,
          actor: str, reason: str, row: dict) -> None:
    """Store the decision with its intent: move the alias from `expected` to `version` (when `promote`),
    then write `row` to the warehouse."""
    intent = {"promote": promote, "from": expected, "actor": actor, "reason": reason, "row": row}
    registry.put_record(model, DECISIONS, version, {**decision, "model": model, "version": version, "intent": intent})


def finish(registry: Registry, model: str, version: str, write_row: RowWriter) -> dict:
    """Complete the promotion that the decision of `version` started; its outcome (also kept as a record)."""
    try:
        return registry.record(model, COMPLETIONS, version)
    except NotFound:
        pass
    decision = registry.record(model, DECISIONS, version)
    intent = decision.get("intent")
    if intent is None:  # written before decisions carried an intent: it was complete when written
        legacy = {"model": model, "version": version, "decision": decision.get("decision"),
                  "reasons": decision.get("reasons", []), "champion_before": decision.get("champion_before"),
                  "champion_after": decision.get("champion_after"), "legacy": True}
        return _complete(registry, model, version, legacy)
    ref = f"{DECISIONS}/{version}"
    for _ in range(5):
        state = registry.alias(model, ALIAS)
        if not intent["promote"]:
            outcome = _outcome(decision, decision["decision"], intent["from"])
        elif any(entry.get("ref") == ref for entry in state.history):
            outcome = _outcome(decision, "promoted", version)
        elif state.version == intent["from"]:
            try:
                registry.set_alias(model, ALIAS, version, expected=state, actor=intent["actor"],
                                   reason=intent["reason"], ref=ref)
            except ConflictError:
                continue  # moved meanwhile, perhaps by another finisher of this same decision: look again
            outcome = _outcome(decision, "promoted", version)
        else:
            moved = (f"superseded: the champion moved from {intent['from'] or 'unset'} to {state.version or 'unset'} "
                     f"before this promotion completed, so it was not applied")
            outcome = _outcome(decision, "superseded", state.version, extra=moved)
        break
    else:
        raise ConflictError(f"the {ALIAS} alias of {model!r} in registry {registry.uri} kept changing while "
                            f"{version} was being promoted; run `python -m ml registry repair {model}` again")
    write_row({**intent["row"], "decision": outcome["decision"], "reasons": outcome["reasons"]})
    return _complete(registry, model, version, outcome)


def _outcome(decision: dict, result: str, champion_after: str | None, extra: str | None = None) -> dict:
    return {"model": decision["model"], "version": decision["version"], "decision": result,
            "reasons": [*decision["reasons"], *([extra] if extra else [])],
            "champion_before": decision["champion_before"], "champion_after": champion_after}


def _complete(registry: Registry, model: str, version: str, outcome: dict) -> dict:
    try:
        registry.put_record(model, COMPLETIONS, version, outcome)
    except ConflictError:  # a concurrent finisher completed it first: its record stands
        return registry.record(model, COMPLETIONS, version)
    return outcome


def decisions(registry: Registry, model: str) -> dict[str, dict]:
    """The gate's decision and reasons per decided version: the completion's outcome where the promotion finished
    (`superseded` among them), else the decision with `completed` false; a record that cannot be read is
    `unreadable`, its reason the damage."""
    done = set(registry.record_names(model, COMPLETIONS))
    found = {}
    for version in registry.record_names(model, DECISIONS):
        try:
            record = registry.record(model, COMPLETIONS if version in done else DECISIONS, version)
        except RegistryError as exc:
            record = {"decision": "unreadable", "reasons": [str(exc)]}
        found[version] = {"decision": record.get("decision"), "reasons": list(record.get("reasons") or []),
                          "completed": version in done}
    return found


def unfinished(registry: Registry, model: str) -> list[str]:
    """Versions whose decision has no completion yet: two listings, no reads."""
    done = set(registry.record_names(model, COMPLETIONS))
    return [name for name in registry.record_names(model, DECISIONS) if name not in done]
