"""A local S3 API: moto's server over real HTTP, with its state in memory and nothing written to disk.

Used by the server demo (`python -m ml demo --server`), by operators (`python -m ml s3-server`) and
by the tests. Requests are served one at a time: moto checks a conditional write (`If-None-Match`,
`If-Match`) and then writes as two separate steps, so two requests on parallel threads could both
pass the check, where S3 itself makes the pair atomic. The registry's write-once versions and
compare-and-swap aliases rely on that guarantee.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Callable, Iterator

from ml.core.errors import TidemarkError
from ml.core.settings import REPO_ROOT

# moto accepts any credentials, but boto3 signs every request and refuses to send one without them.
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class S3ServerError(TidemarkError, RuntimeError):
    """The local S3 server did not start or did not answer; the message says what happened."""


def one_request_at_a_time(app: Callable) -> Callable:
    """Wrap a WSGI app so that its requests run one after another (see the module docstring)."""
    lock = threading.Lock()

    def serialised(environ, start_response):
        with lock:
            return list(app(environ, start_response))

    return serialised


def create_server(host: str = "127.0.0.1", port: int = 0):
    """A bound, listening werkzeug server for moto's S3 API (port 0: a free one); call serve_forever()."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args, **kwargs) -> None:
            pass

    app = one_request_at_a_time(DomainDispatcherApplication(create_backend_app))
    try:
        return make_server(host, port, app, threaded=True, request_handler=QuietHandler)
    except OSError as exc:
        raise S3ServerError(f"cannot listen on {host}:{port} ({exc}); pick another --port") from None


@contextmanager
def serve_in_thread(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve the S3 API from a thread of this process; yields its endpoint URL and stops on exit."""
    server = create_server(host, port)
    thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def create_bucket(endpoint: str, bucket: str) -> None:
    """Create `bucket` on the server at `endpoint` with the dummy credentials (an existing one is kept)."""
    import boto3

    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name=DUMMY_AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    except client.exceptions.ClientError as exc:
        raise S3ServerError(f"cannot create bucket {bucket!r} at {endpoint}: {exc}") from None


def serve(host: str, port: int, bucket: str | None = None, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve in the foreground until SIGINT or SIGTERM; `on_ready` gets the endpoint once it is serving."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with serve_in_thread(host, port) as endpoint:
        if bucket:
            create_bucket(endpoint, bucket)
        if on_ready:
            on_ready(endpoint)
        while not stop.wait(1.0):
            pass


def wait_until_answers(endpoint: str, timeout: float = 30.0) -> None:
    """Return once an HTTP request to `endpoint` gets any answer; S3ServerError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=5).close()
            return
        except urllib.error.HTTPError:  # an error status is still an answer
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise S3ServerError(f"the S3 server at {endpoint} did not answer within {timeout:.0f}s: {exc}")
            time.sleep(0.2)


@contextmanager
def local_s3_server(bucket: str | None = None, *, host: str = "127.0.0.1", timeout: float = 60.0) -> Iterator[str]:
    """Run `python -m ml s3-server` in a subprocess on a free port; yields its endpoint URL, stops it on exit.

    The server's state lives in that process: whatever was stored is gone once the block ends.
    """
    cmd = [sys.executable, "-m", "ml", "s3-server", "--host", host, "--port", "0", "--quiet"]
    if bucket:
        cmd += ["--bucket", bucket]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        endpoint = proc.stdout.readline().strip() if ready else ""
        if not endpoint.startswith("http://"):
            code = proc.poll()
            if code is not None:
                state = f"exited with code {code}"
            else:
                state = f"printed {endpoint!r} instead of" if endpoint else f"did not print within {timeout:.0f}s"
                state += " its endpoint"
            raise S3ServerError(f"the local S3 server (`{' '.join(cmd[1:])}`) did not start: it {state}; "
                                "its error output is above")
        wait_until_answers(endpoint, timeout)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
