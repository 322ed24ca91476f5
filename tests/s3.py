"""A real S3 API over HTTP for tests: moto's server on a free local port, and a fresh bucket per test."""

from __future__ import annotations

import uuid
from typing import Iterator

import pytest

from ml.tools.s3local import DUMMY_AWS_ENV, serve_in_thread


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server running in this process, shared by the session.

    It serves one request at a time, so moto's conditional writes are atomic (see ml/s3local.py).
    """
    with serve_in_thread("127.0.0.1", 0) as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> str:
    """Dummy credentials and TIDEMARK_S3_ENDPOINT_URL in the environment (child processes inherit them)."""
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TIDEMARK_S3_ENDPOINT_URL", s3_server)
    return s3_server


@pytest.fixture
def s3_registry_uri(s3_env) -> str:
    """`s3://<fresh bucket>/models` on the moto server; the endpoint is in TIDEMARK_S3_ENDPOINT_URL."""
    import boto3

    bucket = f"tidemark-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/models"
