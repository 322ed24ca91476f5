"""Where the registry keeps its bytes: a local directory or an S3 bucket, with the same two atomic writes.

Write-once is `put_if_absent` (a hard link locally, `If-None-Match: *` on S3) and compare-and-swap is
`put_if_match` (a lock, a content hash and a rename locally, `If-Match` on the ETag on S3).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from ml.core.errors import TidemarkError


class RegistryError(TidemarkError, RuntimeError):
    """A registry operation failed; the message names the model, version, alias or key."""


class NotFound(RegistryError):
    """The model, version, alias or key does not exist."""


class ConflictError(RegistryError):
    """Someone else wrote first: an immutable key already exists or an alias changed since it was read."""


class IntegrityError(RegistryError):
    """A stored artifact does not match its manifest (missing, truncated or altered)."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise RegistryError(f"bad registry key {key!r}: use relative names like 'monitoring/churn/report.html'")
    return key


class Store(Protocol):
    """Bytes under relative keys, with the two atomic writes the registry builds on."""

    def put_if_absent(self, key: str, data: bytes) -> None: ...  # ConflictError unless absent or identical
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def get_with_etag(self, key: str) -> tuple[bytes, str] | None: ...
    def put_if_match(self, key: str, data: bytes, etag: str | None) -> str: ...  # etag None: must be absent
    def list(self, prefix: str) -> list[str]: ...
    def exists(self, key: str) -> bool: ...
    def uri_for(self, key: str) -> str: ...


class LocalStore:
    """A directory: hard links for write-once, flock + content hash + rename for compare-and-swap."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _write_temp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return Path(tmp)

    def put_if_absent(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            if path.read_bytes() != data:
                raise ConflictError(f"{self.uri_for(key)} already exists and is immutable") from None
        finally:
            tmp.unlink()

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.replace(self._write_temp(path, data), path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"{self.uri_for(key)} does not exist") from None

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self.get(key)
        except NotFound:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        lock = self.root / ".locks" / (hashlib.sha256(key.encode()).hexdigest() + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes
            current = self.get_with_etag(key)
            if (current[1] if current else None) != etag:
                raise ConflictError(f"{self.uri_for(key)} changed since it was read")
            self.put(key, data)
        return hashlib.sha256(data).hexdigest()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix.rpartition("/")[0]
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not k.startswith(".locks/")
                      and not k.rpartition("/")[2].startswith(".tmp-"))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def uri_for(self, key: str) -> str:
        return (self.root / key).as_uri() if key else self.root.as_uri()


class S3Store:
    """An S3 bucket prefix: `IfNoneMatch='*'` for write-once, `IfMatch=<etag>` for compare-and-swap."""

    def __init__(self, bucket: str, prefix: str, client):
        self.bucket, self.prefix, self.client = bucket, prefix.strip("/"), client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, method: str, key: str, **kwargs) -> dict | None:
        """Call the client; None for a missing key or failed precondition, RegistryError otherwise."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, status = error.get("Code", ""), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                raise RegistryError(
                    f"S3 bucket {self.bucket!r} does not exist at {self.client.meta.endpoint_url}; "
                    "create it or point TIDEMARK_REGISTRY_URI / TIDEMARK_S3_ENDPOINT_URL elsewhere"
                ) from None
            if code in ("NoSuchKey", "PreconditionFailed", "ConditionalRequestConflict") or status in (404, 409, 412):
                return None
            raise RegistryError(f"S3 {method} {self.uri_for(key)} failed: {code} {error.get('Message', '')}") from exc
        except BotoCoreError as exc:
            endpoint = self.client.meta.endpoint_url
            raise RegistryError(f"S3 {method} {self.uri_for(key)} at {endpoint} failed: {exc}") from exc

    def put_if_absent(self, key: str, data: bytes) -> None:
        if self._call("put_object", key, Key=self._key(key), Body=data, IfNoneMatch="*") is None:
            current = self.get_with_etag(key)
            if current is None or current[0] != data:  # an identical body is a retried write of our own
                raise ConflictError(f"{self.uri_for(key)} already exists and is immutable")

    def put(self, key: str, data: bytes) -> None:
        self._call("put_object", key, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        found = self.get_with_etag(key)
        if found is None:
            raise NotFound(f"{self.uri_for(key)} does not exist")
        return found[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        response = self._call("get_object", key, Key=self._key(key))
        return None if response is None else (response["Body"].read(), response["ETag"])

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        response = self._call("put_object", key, Key=self._key(key), Body=data, **condition)
        if response is None:
            current = self.get_with_etag(key)
            if current is None or current[0] != data:  # an identical body is a retried write of our own
                raise ConflictError(f"{self.uri_for(key)} changed since it was read")
            return current[1]
        return response["ETag"]

    def list(self, prefix: str) -> list[str]:
        keys, token = [], {}
        while True:
            page = self._call("list_objects_v2", prefix, Prefix=self._key(prefix), **token)
            cut = len(self._key(""))
            keys += [item["Key"][cut:] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def exists(self, key: str) -> bool:
        return self._call("head_object", key, Key=self._key(key)) is not None

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}".rstrip("/")


