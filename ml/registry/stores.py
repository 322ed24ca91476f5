"""Where the registry keeps its bytes: a local directory or an S3 bucket, with the same two atomic writes.

Write-once is `put_if_absent` (a hard link locally, `If-None-Match: *` on S3) and compare-and-swap is
`put_if_match` (a lock, a content hash and a rename locally, `If-Match` on the ETag on S3).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
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


class DamagedError(RegistryError):
    """A stored object cannot be read (not JSON, truncated, or missing); the message names its key."""


def load_json(data: bytes, uri: str, hint: str) -> dict:
    """Parse a stored JSON object; DamagedError naming `uri` and saying what to do (`hint`) when it cannot."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DamagedError(f"{uri} is damaged ({len(data)} bytes, not valid JSON: {exc}); {hint}") from None
    if not isinstance(doc, dict):
        raise DamagedError(f"{uri} is damaged (a JSON {type(doc).__name__}, not an object); {hint}")
    return doc


def salvage_entries(data: bytes, field: str) -> tuple[dict, ...]:
    """The complete objects at the start of the list `field` in a damaged JSON document (e.g. an alias's history
    cut short by a truncated write); each must carry a string "to"."""
    text = data.decode("utf-8", errors="replace")
    start = text.find(f'"{field}": [')
    if start < 0:
        return ()
    decoder, pos, entries = json.JSONDecoder(), start + len(f'"{field}": ['), []
    while True:
        pos = len(text) - len(text[pos:].lstrip(" \n\r\t,"))
        try:
            entry, pos = decoder.raw_decode(text, pos)
        except ValueError:
            break
        if not isinstance(entry, dict) or not isinstance(entry.get("to"), str):
            break
        entries.append(entry)
    return tuple(entries)


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
        """Call the client (which retries transient faults); None for a missing key or failed precondition,
        RegistryError naming the URI and the endpoint otherwise."""
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as S3ConnectionError

        endpoint = self.client.meta.endpoint_url
        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            error, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
            code, status = error.get("Code", ""), meta.get("HTTPStatusCode")
            if code == "NoSuchBucket":
                raise RegistryError(
                    f"S3 bucket {self.bucket!r} does not exist at {endpoint}; "
                    "create it or point TIDEMARK_REGISTRY_URI / TIDEMARK_S3_ENDPOINT_URL elsewhere"
                ) from None
            if code in ("NoSuchKey", "PreconditionFailed", "ConditionalRequestConflict") or status in (404, 409, 412):
                return None
            tries = meta.get("RetryAttempts", 0) + 1
            raise RegistryError(f"S3 {method} {self.uri_for(key)} at {endpoint} failed after {tries} attempt(s): "
                                f"{status} {code} {error.get('Message', '')}".rstrip()) from exc
        except (S3ConnectionError, HTTPClientError) as exc:
            raise RegistryError(f"S3 {method} {self.uri_for(key)} at {endpoint} failed after retries: {exc}; "
                                "check that the S3 endpoint is reachable, or set TIDEMARK_S3_ENDPOINT_URL") from exc
        except BotoCoreError as exc:
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
            if page is None:  # a bare 404 to a listing: what answers at the endpoint is not an S3 API
                raise RegistryError(f"{self.client.meta.endpoint_url} answered HTTP 404 to listing "
                                    f"{self.uri_for(prefix)}, as no S3 API does; point TIDEMARK_S3_ENDPOINT_URL "
                                    "at an S3 API")
            cut = len(self._key(""))
            keys += [item["Key"][cut:] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def exists(self, key: str) -> bool:
        return self._call("head_object", key, Key=self._key(key)) is not None

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}".rstrip("/")


