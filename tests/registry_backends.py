"""Registry backends for tests: a local directory, S3 over HTTP (moto's server), and S3 through a fault proxy.

A pytest plugin (see pytest.ini): the `backend` fixture runs a test once per backend.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ml.registry import Registry

MODEL = "churn"


@dataclass(frozen=True)
class Backend:
    """A registry URI plus raw access to its storage that bypasses the registry's checks."""

    uri: str
    endpoint_url: str | None = None

    def registry(self) -> Registry:
        return Registry.from_uri(self.uri, endpoint_url=self.endpoint_url)

    def _s3(self):
        import boto3

        parts = urlsplit(self.uri)
        return boto3.client("s3", endpoint_url=self.endpoint_url), parts.netloc, parts.path.strip("/")

    def raw_put(self, key: str, data: bytes) -> None:
        if self.uri.startswith("file://"):
            Path(urlsplit(self.uri).path, key).write_bytes(data)
        else:
            client, bucket, prefix = self._s3()
            client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=data)

    def raw_delete(self, key: str) -> None:
        if self.uri.startswith("file://"):
            Path(urlsplit(self.uri).path, key).unlink()
        else:
            client, bucket, prefix = self._s3()
            client.delete_object(Bucket=bucket, Key=f"{prefix}/{key}")


@pytest.fixture(params=["local", "s3", "s3-faults"])
def backend(request, tmp_path) -> Backend:
    """`s3-faults` reaches the S3 server through a proxy that fails every 5th request (see tests/s3.py)."""
    if request.param == "local":
        return Backend((tmp_path / "registry").as_uri())
    endpoint = "faulty_s3_endpoint" if request.param == "s3-faults" else "s3_server"
    return Backend(request.getfixturevalue("s3_registry_uri"), request.getfixturevalue(endpoint))


def _model_dir(root: Path, tag: str) -> Path:
    """A small artifact folder with a nested file, different content per tag."""
    (root / "sub").mkdir(parents=True)
    (root / "model.json").write_text(json.dumps({"kind": "logistic", "tag": tag}))
    (root / "weights.bin").write_bytes(hashlib.sha256(tag.encode()).digest() * 64)
    (root / "sub" / "vocab.txt").write_text(f"a\nb\n{tag}\n")
    return root


def _published(registry: Registry, tmp_path: Path, n: int) -> list[str]:
    return [registry.publish(MODEL, _model_dir(tmp_path / f"src{i}", f"t{i}"), {"i": i}).version for i in range(n)]


