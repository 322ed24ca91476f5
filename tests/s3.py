"""A real S3 API over HTTP for tests: moto's server on a free local port, and a fresh bucket per test."""

from __future__ import annotations

import threading
import uuid
from typing import Iterator

import pytest

DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _one_request_at_a_time(app):
    """Wrap a WSGI app so requests run one after another.

    moto checks If-None-Match / If-Match and then writes as two separate steps, so two requests
    served on parallel threads can both pass the check; S3 itself makes the pair atomic.
    Serialising requests restores the guarantee that concurrency tests rely on.
    """
    lock = threading.Lock()

    def serialised(environ, start_response):
        with lock:
            return list(app(environ, start_response))

    return serialised


def _quiet_handler():
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args, **kwargs) -> None:
            pass

    return QuietHandler


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server running in this process, shared by the session."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = _one_request_at_a_time(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_quiet_handler())
    thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


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
