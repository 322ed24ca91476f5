"""Model registry: immutable numbered versions, compare-and-swap aliases, records and reports.

One layout on two backends, a local directory (`file:///abs/dir`) or an S3 bucket (`s3://bucket/prefix`):

    <model>/versions/v0001/.claim           put-if-absent claim that reserves the number
    <model>/versions/v0001/<artifacts>      written once
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

from ml.registry.stores import (  # noqa: F401  (the errors are part of this module's interface)
    ConflictError,
    IntegrityError,
    LocalStore,
    NotFound,
    RegistryError,
    S3Store,
    Store,
    _check_key,
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


class Registry:
    """Publish, list, fetch and promote model versions over a `Store`."""

    def __init__(self, store: Store):
        self.store = store

    @classmethod
    def from_uri(cls, uri: str, *, endpoint_url: str | None = None) -> "Registry":
        parts = urlsplit(uri.strip())
        path = unquote(parts.path)
        if parts.scheme == "file" and parts.netloc in ("", "localhost") and path.startswith("/") and path != "/":
            return cls(LocalStore(Path(path)))
        if parts.scheme == "s3" and parts.netloc and not parts.query:
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60,
                            s3={"addressing_style": "path"} if endpoint_url else None)
            # A session of its own reads the credentials now: boto3's default session keeps the first ones it found.
            client = boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=config)
            return cls(S3Store(parts.netloc, path, client))
        raise RegistryError(f"TIDEMARK_REGISTRY_URI={uri!r} is not a supported registry URI. "
                            f"Valid examples: {URI_EXAMPLES}")

    @classmethod
    def from_settings(cls, settings) -> "Registry":
        return cls.from_uri(settings.registry_uri, endpoint_url=settings.s3_endpoint_url)

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
        self.store.put_if_absent(f"{model}/versions/{version}/{MANIFEST}", _dumps(manifest))
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
        raise RegistryError(f"could not claim a version number for {model!r} after 1000 attempts")

    def versions(self, model: str) -> list[VersionInfo]:
        """Published versions (those with a manifest), oldest first."""
        _check_name(model, "model name")
        found = [k.split("/")[2] for k in self.store.list(f"{model}/versions/") if k.endswith(f"/{MANIFEST}")]
        return [self.get(model, v) for v in sorted(filter(_VERSION.fullmatch, found), key=lambda v: int(v[1:]))]

    def models(self) -> list[str]:
        keys = self.store.list("")
        return sorted({k.split("/")[0] for k in keys if re.fullmatch(rf"[^/]+/versions/v\d+/{MANIFEST}", k)})

    def get(self, model: str, version: str) -> VersionInfo:
        _check_name(model, "model name")
        _check_name(version, "version", _VERSION)
        try:
            manifest = json.loads(self.store.get(f"{model}/versions/{version}/{MANIFEST}"))
        except NotFound:
            known = [v.version for v in self.versions(model)]
            raise NotFound(f"model {model!r} has no published version {version!r} (published: {known or 'none'})") \
                from None
        return VersionInfo(model, version, manifest)

    def download(self, model: str, version: str, dest: Path) -> Path:
        """Fetch and verify every artifact of a version into `dest` (plus its manifest); all or nothing.

        An earlier download at `dest` (a folder with a manifest.json) is replaced once the new one verifies.
        """
        info = self.get(model, version)
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
                    raise IntegrityError(f"{model} {version}: artifact {name!r} is in the manifest but missing") \
                        from None
                if len(data) != expected["size"]:
                    raise IntegrityError(f"{model} {version}: artifact {name!r} has {len(data)} bytes, "
                                         f"manifest says {expected['size']} (truncated or altered)")
                digest = hashlib.sha256(data).hexdigest()
                if digest != expected["sha256"]:
                    raise IntegrityError(f"{model} {version}: artifact {name!r} has sha256 {digest}, "
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

    def alias(self, model: str, alias: str = "champion") -> AliasState:
        found = self.store.get_with_etag(self._alias_key(model, alias))
        if found is None:
            return AliasState(model, alias, None, None, ())
        doc = json.loads(found[0])
        return AliasState(model, alias, doc["version"], found[1], tuple(doc["history"]))

    def set_alias(self, model: str, alias: str, version: str, *, expected: AliasState, actor: str, reason: str,
                  action: str = "promote") -> AliasState:
        """Point `alias` at `version` if it still is as `expected`; ConflictError if someone moved it first."""
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
        history = (*expected.history, entry)
        doc = {"alias": alias, "model": model, "version": version, "history": list(history)}
        try:
            etag = self.store.put_if_match(key, _dumps(doc), expected.etag)
        except ConflictError:
            raise ConflictError(f"alias {alias!r} of {model!r} changed since it was read (then at "
                                f"{expected.version or 'unset'}); re-read it and decide again") from None
        return AliasState(model, alias, version, etag, history)

    def promote(self, model: str, version: str, *, actor: str, reason: str, alias: str = "champion",
                expected: AliasState | None = None) -> AliasState:
        expected = expected if expected is not None else self.alias(model, alias)
        return self.set_alias(model, alias, version, expected=expected, actor=actor, reason=reason)

    def rollback(self, model: str, *, actor: str, reason: str, alias: str = "champion") -> AliasState:
        """Point `alias` back at the version it held before its current one (repeatable)."""
        state = self.alias(model, alias)
        stack: list[str] = []
        for entry in state.history:  # promotions push, rollbacks pop; a repeated promotion is not a new step
            if entry["action"] == "rollback":
                del stack[-1:]
            elif not stack or stack[-1] != entry["to"]:
                stack.append(entry["to"])
        if len(stack) < 2:
            raise RegistryError(f"cannot roll back {alias!r} of {model!r}: no earlier version in its history "
                                f"(now {state.version or 'unset'})")
        return self.set_alias(model, alias, stack[-2], expected=state, actor=actor, reason=reason, action="rollback")

    def _alias_key(self, model: str, alias: str) -> str:
        return f"{_check_name(model, 'model name')}/aliases/{_check_name(alias, 'alias')}.json"

    # -- records and reports ----------------------------------------------------------------------

    def put_record(self, model: str, kind: str, name: str, data: dict) -> str:
        """Write an immutable JSON record; repeating the identical write is a no-op."""
        key = self._record_prefix(model, kind) + _check_name(name, "record name", _RECORD_NAME) + ".json"
        self.store.put_if_absent(key, _dumps(data))
        return self.store.uri_for(key)

    def records(self, model: str, kind: str) -> list[dict]:
        prefix = self._record_prefix(model, kind)
        names = sorted(k[len(prefix):-5] for k in self.store.list(prefix)
                       if k.endswith(".json") and "/" not in k[len(prefix):])
        return [json.loads(self.store.get(f"{prefix}{name}.json")) for name in names]

    def _record_prefix(self, model: str, kind: str) -> str:
        return f"{_check_name(model, 'model name')}/records/{_check_name(kind, 'record kind')}/"

    def put_file(self, key: str, path: Path) -> str:
        return self.put_bytes(key, Path(path).read_bytes())

    def put_bytes(self, key: str, data: bytes) -> str:
        self.store.put(_check_key(key), data)
        return self.store.uri_for(key)

    def get_bytes(self, key: str) -> bytes:
        return self.store.get(_check_key(key))
