"""A real S3 API over HTTP for tests: moto's server on a free local port, and a fresh bucket per test."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Iterator

import pytest

from ml.tools.s3local import DUMMY_AWS_ENV, serve_in_thread
from tests.s3_faults import FaultProxy, Rule, every_nth

# Every proxy of the session, for the summary at the end of the run.
_PROXIES: list[FaultProxy] = []
# The counts that pytest-xdist workers handed back (on the controller).
_WORKER_TOTALS: list[dict] = []
# What the contract suite meets: one of these on every 5th request, and a SlowDown on the 32nd and every
# 100th after it (botocore first backs off from throttling for up to 1 s, from the other faults up to 50 ms).
CONTRACT_FAULTS = [("internal", "before"), ("reset", "after"), ("delay", "before"), ("internal", "after"),
                   ("reset", "before")]
CONTRACT_SLOWDOWN = Rule("slowdown", nth=32, every=100, times=None, spare_retries=True)


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


@pytest.fixture
def fault_proxy(s3_server) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the moto server; no faults until the test sets its rules."""
    with FaultProxy(s3_server) as proxy:
        _PROXIES.append(proxy)
        yield proxy


@pytest.fixture
def faulty_s3_endpoint(fault_proxy) -> Iterator[str]:
    """Endpoint of a proxy that fails every 5th first attempt (CONTRACT_FAULTS in turn; delays last 50 ms)
    and throttles every 100th.

    On teardown, every fault that lost a request or its reply must have been answered by a retry.
    """
    fault_proxy.set_rules([*every_nth(5, CONTRACT_FAULTS), CONTRACT_SLOWDOWN])
    yield fault_proxy.endpoint
    lost = sum(n for fault, n in fault_proxy.faults.items() if fault != "delay")
    assert fault_proxy.retries == lost, f"{lost} requests failed by the proxy, {fault_proxy.retries} retried: " \
        f"{fault_proxy.seen}"


def _totals() -> dict:
    faults = sum((p.faults for p in _PROXIES), Counter())
    return {"requests": sum(p.requests for p in _PROXIES), "retries": sum(p.retries for p in _PROXIES),
            "faults": dict(faults)}


def pytest_sessionfinish(session) -> None:
    """On a pytest-xdist worker, hand this worker's proxy counts to the controller."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None and _PROXIES:
        output["s3_fault_proxy"] = _totals()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """On the pytest-xdist controller: collect a finished worker's proxy counts."""
    totals = getattr(node, "workeroutput", {}).get("s3_fault_proxy")
    if totals:
        _WORKER_TOTALS.append(totals)


def pytest_terminal_summary(terminalreporter) -> None:
    """One line on what the S3 fault proxies did in this run (all workers together)."""
    runs = [*_WORKER_TOTALS, *([_totals()] if _PROXIES else [])]
    if runs:
        faults = sum((Counter(run["faults"]) for run in runs), Counter())
        requests, retries = sum(run["requests"] for run in runs), sum(run["retries"] for run in runs)
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(faults.items()))
        terminalreporter.write_line(f"S3 fault proxy: {requests} requests, {faults.total()} faults injected "
                                    f"({kinds}), {retries} retries seen")
