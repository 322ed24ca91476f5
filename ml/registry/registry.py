"""Model registry: immutable numbered versions, compare-and-swap aliases, records and reports.

One layout on two backends, a local directory (`file:///abs/dir`) or an S3 bucket (`s3://bucket/prefix`):

    <model>/versions/v0001/.claim           put-if-absent claim that reserves the number
    <model>/versions/v0001/<artifacts>      written once
    <model>/versions/v0001/manifest.sig     optional Ed25519 signature of the manifest, written just before it
    <model>/versions/v0001/manifest.json    written last; a version without it does not exist
    <model>/aliases/champion.json           pointer plus its history, changed only by compare-and-swap
    <model>/records/<kind>/<name>.json      immutable JSON records (decisions, evaluations)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ml.registry import signing
from ml.registry.stores import (  # noqa: F401  (the errors are part of this module's interface)
    ConflictError,
    DamagedError,
    IntegrityError,
    LocalStore,
    NotFound,
    RegistryError,
    S3Store,
    Store,
    _check_key,
    load_json,
    salvage_entries,
)

URI_EXAMPLES = "file:///abs/path/registry, s3://bucket/prefix"
MANIFEST = "manifest.json"
_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_RECORD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION = re.compile(r"v(\d{4,})")
_RESERVED = ("files", "model", "version", "created_at")


def _check_name(value: str, what: str, pattern: re.Pattern = _NAME) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise RegistryError(f"bad {what} {value!r}: must match {pattern.pattern}")
    return value


def _dumps(doc: dict) -> bytes:
    try:
        return json.dumps(doc, indent=2, sort_keys=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"cannot store as JSON: {exc}") from exc


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class VersionInfo:
    model: str
    version: str
    manifest: dict


@dataclass(frozen=True)
class AliasState:
    """An alias as read: pass it back as `expected` so the write succeeds only if nobody moved it since."""

    model: str
    alias: str
    version: str | None
    etag: str | None
    history: tuple[dict, ...]
    damage: str | None = None  # why the stored alias could not be read; history then holds what still parsed


class Registry:
    """Publish, list, fetch and promote model versions over a `Store`; optionally signing or verifying manifests."""

    def __init__(self, store: Store, *, signing_key=None, verify_key=None):
        self.store = store
        self.signing_key, self.verify_key = signing_key, verify_key

    @classmethod
    def from_uri(cls, uri: str, *, endpoint_url: str | None = None, read_timeout_s: float = 60.0) -> "Registry":
        """The registry at `uri`; on S3, throttling, 5xx, dropped connections and read timeouts
        (after `read_timeout_s`) are retried with exponential backoff: 5 retries, 6 attempts in all."""
        parts = urlsplit(uri.strip())
        path = unquote(parts.path)
        if parts.scheme == "file" and parts.netloc in ("", "localhost") and path.startswith("/") and path != "/":
            return cls(LocalStore(Path(path)))
        if parts.scheme == "s3" and parts.netloc and not parts.query:
            import boto3
            from botocore.config import Config

            # botocore's standard mode retries SlowDown, 500/502/503/504, connection errors and read timeouts.
            config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10,
                            read_timeout=read_timeout_s, s3={"addressing_style": "path"} if endpoint_url else None)
            # A session of its own reads the credentials now: boto3's default session keeps the first ones it found.
            client = boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=config)
            return cls(S3Store(parts.netloc, path, client))
        raise RegistryError(f"TIDEMARK_REGISTRY_URI={uri!r} is not a supported registry URI. "
                            f"Valid examples: {URI_EXAMPLES}")

    @classmethod
    def from_settings(cls, settings) -> "Registry":
        """The configured registry, signing with TIDEMARK_SIGNING_KEY and verifying with TIDEMARK_VERIFY_KEY."""
        store = cls.from_uri(settings.registry_uri, endpoint_url=settings.s3_endpoint_url).store
        return cls(store, signing_key=settings.signing_key and signing.load_signing_key(settings.signing_key),
                   verify_key=settings.verify_key and signing.load_verify_key(settings.verify_key))

    @property
    def uri(self) -> str:
        return self.store.uri_for("")

    # -- versions ---------------------------------------------------------------------------------

    def publish(self, model: str, source_dir: Path, metadata: dict) -> VersionInfo:
        """Store every file under `source_dir` as the next version; the manifest goes last."""
        _check_name(model, "model name")
        source_dir = Path(source_dir)
        paths = sorted(p for p in source_dir.rglob("*") if p.is_file()) if source_dir.is_dir() else []
        if not paths:
            raise RegistryError(f"nothing to publish for {model!r}: {source_dir} is not a directory with files")
        names = [p.relative_to(source_dir).as_posix() for p in paths]
        clash = [n for n in names if n in (MANIFEST, ".claim")] + [k for k in _RESERVED if k in metadata]
        if clash:
            raise RegistryError(f"cannot publish {model!r}: {clash} are reserved by the registry")
        _dumps(metadata)  # refuse unserialisable metadata before claiming a number
        version = self._claim(model)
        files = {}
        for name, path in zip(names, paths):
            data = path.read_bytes()
            self.store.put_if_absent(f"{model}/versions/{version}/{name}", data)
            files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        manifest = {**metadata, "files": files, "model": model, "version": version, "created_at": _now()}
        body = _dumps(manifest)
        if self.signing_key is not None:
            self.store.put_if_absent(f"{model}/versions/{version}/{signing.SIGNATURE}",
                                     signing.sign(self.signing_key, body))
        self.store.put_if_absent(f"{model}/versions/{version}/{MANIFEST}", body)
        return VersionInfo(model, version, manifest)

    def _claim(self, model: str) -> str:
        taken = [int(m.group(1)) for k in self.store.list(f"{model}/versions/")
                 if (m := _VERSION.fullmatch(k.split("/")[2]))]
        number = max(taken, default=0) + 1
        token = _dumps({"token": uuid.uuid4().hex, "pid": os.getpid(), "at": _now()})
        for number in range(number, number + 1000):
            try:
                self.store.put_if_absent(f"{model}/versions/v{number:04d}/.claim", token)
                return f"v{number:04d}"
            except ConflictError:
                continue
        raise RegistryError(f"could not claim a version number for {model!r} in registry {self.uri} after 1000 "
                            "attempts")

    def versions(self, model: str) -> list[VersionInfo]:
        """Published versions (those with a manifest), oldest first."""
        return [self.get(model, v) for v in self.version_ids(model)]

    def version_ids(self, model: str) -> list[str]:
        """The ids of the published versions, oldest first, without reading their manifests."""
        _check_name(model, "model name")
        found = [k.split("/")[2] for k in self.store.list(f"{model}/versions/") if k.endswith(f"/{MANIFEST}")]
        return sorted(filter(_VERSION.fullmatch, found), key=lambda v: int(v[1:]))

    def models(self, *, unpublished: bool = False) -> list[str]:
        """Models with a published version; with `unpublished`, also those with only artifacts or an alias."""
        keys = self.store.list("")
        shape = r"[^/]+/(versions/v\d+/.+|aliases/.+)" if unpublished else rf"[^/]+/versions/v\d+/{MANIFEST}"
        return sorted({k.split("/")[0] for k in keys if re.fullmatch(shape, k)})

    def get(self, model: str, version: str) -> VersionInfo:
        """A version's manifest: NotFound when it was never published, DamagedError when it cannot be read, and
        IntegrityError when a verify key is set and the manifest's signature is missing or wrong."""
        _check_name(model, "model name")
        _check_name(version, "version", _VERSION)
        key = f"{model}/versions/{version}/{MANIFEST}"
        try:
            body = self.store.get(key)
        except NotFound:
            raise self._missing(model, version) from None
        if self.verify_key is not None:
            signature = self.store.get_with_etag(f"{model}/versions/{version}/{signing.SIGNATURE}")
            signing.verify(self.verify_key, body, signature and signature[0], f"{model} {version}",
                           self.store.uri_for(f"{model}/versions/{version}"))
        hint = (f"version {version} is unusable; if it is the champion, move the champion with `python -m ml "
                f"registry promote {model} <version> --reason ...` or `python -m ml registry rollback {model}`")
        return VersionInfo(model, version, load_json(body, self.store.uri_for(key), hint))

    def _missing(self, model: str, version: str) -> NotFound:
        known = self.version_ids(model)
        left = [k for k in self.store.list(f"{model}/versions/{version}/") if not k.endswith("/.claim")]
        damage = f"; {version} has {len(left)} artifact(s) but no {MANIFEST} (a publish that stopped)" if left else ""
        return NotFound(f"model {model!r} has no published version {version!r} (published: {known or 'none'}) "
                        f"in registry {self.uri}{damage}")

    def download(self, model: str, version: str, dest: Path) -> Path:
        """Fetch and verify every artifact of a version into `dest` (plus its manifest); all or nothing.

        An earlier download at `dest` (a folder with a manifest.json) is replaced once the new one verifies.
        """
        info = self.get(model, version)
        where = f"{model} {version} in registry {self.uri}"
        dest = Path(dest)
        replace = dest.is_dir() and (dest / MANIFEST).is_file()
        if dest.exists() and not replace and (not dest.is_dir() or any(dest.iterdir())):
            raise RegistryError(f"cannot download {model} {version}: {dest} already exists and is not empty")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
        try:
            for name, expected in sorted(info.manifest["files"].items()):
                target = tmp / _check_key(name)
                try:
                    data = self.store.get(f"{model}/versions/{version}/{name}")
                except NotFound:
                    raise IntegrityError(f"{where}: artifact {name!r} is in the manifest but missing") from None
                if len(data) != expected["size"]:
                    raise IntegrityError(f"{where}: artifact {name!r} has {len(data)} bytes, "
                                         f"manifest says {expected['size']} (truncated or altered)")
                digest = hashlib.sha256(data).hexdigest()
                if digest != expected["sha256"]:
                    raise IntegrityError(f"{where}: artifact {name!r} has sha256 {digest}, "
                                         f"manifest says {expected['sha256']} (altered)")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            (tmp / MANIFEST).write_bytes(_dumps(info.manifest))
            if replace:
                os.rename(dest, tmp.with_name(tmp.name + "-old"))
            elif dest.exists():
                dest.rmdir()
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(tmp.with_name(tmp.name + "-old"), ignore_errors=True)
        return dest

    # -- aliases ----------------------------------------------------------------------------------

    def alias(self, model: str, alias: str = "champion", *, damaged_ok: bool = False) -> AliasState:
        """Where `alias` points now. A stored alias that cannot be read raises DamagedError naming its key; with
        `damaged_ok` it comes back with `damage` set, the history entries that still parse, and the stored etag,
        so that a promotion or rollback can replace it by compare-and-swap."""
        key = self._alias_key(model, alias)
        found = self.store.get_with_etag(key)
        if found is None:
            return AliasState(model, alias, None, None, ())
        hint = (f"move it with `python -m ml registry promote {model} <version> --reason ...` (or `registry "
                f"rollback {model}`), which keeps the history entries that still parse")
        try:
            doc = load_json(found[0], self.store.uri_for(key), hint)
            if not isinstance(doc.get("history"), list) or not _VERSION.fullmatch(str(doc.get("version"))):
                raise DamagedError(f"{self.store.uri_for(key)} is damaged (no version or history); {hint}")
        except DamagedError as exc:
            if not damaged_ok:
                raise
            history = salvage_entries(found[0], "history")
            return AliasState(model, alias, None, found[1], history, damage=str(exc).partition("; ")[0])
        return AliasState(model, alias, doc["version"], found[1], tuple(doc["history"]))

    def set_alias(self, model: str, alias: str, version: str, *, expected: AliasState, actor: str, reason: str,
                  action: str = "promote", ref: str | None = None) -> AliasState:
        """Point `alias` at `version` if it still is as `expected`; ConflictError if someone moved it first.

        `ref` names the record that asked for the move (a decision), so a rerun can tell it already happened."""
        key = self._alias_key(model, alias)
        if (expected.model, expected.alias) != (model, alias):
            raise RegistryError(f"expected state is for {expected.model}/{expected.alias}, not {model}/{alias}")
        if action not in ("promote", "rollback"):
            raise RegistryError(f"bad alias action {action!r}: use 'promote' or 'rollback'")
        try:
            self.get(model, version)
        except NotFound as exc:
            raise NotFound(f"refusing to point {alias!r} at a version that does not exist: {exc}") from None
        entry = {"seq": len(expected.history) + 1, "at": _now(), "actor": actor, "action": action,
                 "from": expected.version, "to": version, "reason": reason}
        if ref is not None:
            entry["ref"] = ref
        if expected.damage:
            entry["from"] = expected.history[-1]["to"] if expected.history else None
            entry["note"] = f"the previous alias state was unreadable: {expected.damage}"
        history = (*expected.history, entry)
        doc = {"alias": alias, "model": model, "version": version, "history": list(history)}
        try:
            etag = self.store.put_if_match(key, _dumps(doc), expected.etag)
        except ConflictError:
            raise ConflictError(f"alias {alias!r} of {model!r} changed since it was read (then at "
                                f"{expected.version or 'unset'}) in registry {self.uri}; re-read it and decide "
                                "again") from None
        return AliasState(model, alias, version, etag, history)

    def promote(self, model: str, version: str, *, actor: str, reason: str, alias: str = "champion",
                expected: AliasState | None = None) -> AliasState:
        """Point `alias` at `version`; works on a damaged alias too, replacing it and keeping what still parses."""
        expected = expected if expected is not None else self.alias(model, alias, damaged_ok=True)
        return self.set_alias(model, alias, version, expected=expected, actor=actor, reason=reason)

    def rollback(self, model: str, *, actor: str, reason: str, alias: str = "champion") -> AliasState:
        """Point `alias` back at the version it held before its current one (repeatable)."""
        state = self.alias(model, alias, damaged_ok=True)
        stack: list[str] = []
        for entry in state.history:  # promotions push, rollbacks pop; a repeated promotion is not a new step
            if entry["action"] == "rollback":
                del stack[-1:]
            elif not stack or stack[-1] != entry["to"]:
                stack.append(entry["to"])
        if len(stack) < 2:
            raise RegistryError(f"cannot roll back {alias!r} of {model!r} in registry {self.uri}: no earlier version "
                                f"in its history (now {state.version or 'unset'})")
        return self.set_alias(model, alias, stack[-2], expected=state, actor=actor, reason=reason, action="rollback")

    def _alias_key(self, model: str, alias: str) -> str:
        return f"{_check_name(model, 'model name')}/aliases/{_check_name(alias, 'alias')}.json"

    # -- records and reports ----------------------------------------------------------------------

    def put_record(self, model: str, kind: str, name: str, data: dict) -> str:
        """Write an immutable JSON record; repeating the identical write is a no-op."""
        key = self._record_key(model, kind, name)
        self.store.put_if_absent(key, _dumps(data))
        return self.store.uri_for(key)

    def records(self, model: str, kind: str) -> list[dict]:
        return [self.record(model, kind, name) for name in self.record_names(model, kind)]

    def record_names(self, model: str, kind: str) -> list[str]:
        """The names of a kind's records, sorted, from one listing."""
        prefix = self._record_prefix(model, kind)
        return sorted(k[len(prefix):-5] for k in self.store.list(prefix)
                      if k.endswith(".json") and "/" not in k[len(prefix):])

    def record(self, model: str, kind: str, name: str) -> dict:
        key = self._record_key(model, kind, name)
        hint = "records are written once: restore it from a backup, or delete it to drop the record"
        return load_json(self.store.get(key), self.store.uri_for(key), hint)

    def _record_prefix(self, model: str, kind: str) -> str:
        return f"{_check_name(model, 'model name')}/records/{_check_name(kind, 'record kind')}/"

    def _record_key(self, model: str, kind: str, name: str) -> str:
        return self._record_prefix(model, kind) + _check_name(name, "record name", _RECORD_NAME) + ".json"

    def put_file(self, key: str, path: Path) -> str:
        return self.put_bytes(key, Path(path).read_bytes())

    def put_bytes(self, key: str, data: bytes) -> str:
        self.store.put(_check_key(key), data)
        return self.store.uri_for(key)

    def get_bytes(self, key: str) -> bytes:
        return self.store.get(_check_key(key))
