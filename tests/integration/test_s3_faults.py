"""S3 faults in the middle of a publish, a promotion or a download, injected by a proxy in front of moto.

Throttling, 500s, connection resets and slow replies are retried with backoff; a fault that never
stops ends in a RegistryError naming the object and the endpoint, with no half-published version
and no moved alias; a write that S3 applied but whose reply was lost is recognised on retry.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path

import pytest

from ml.registry import ConflictError, Registry, RegistryError
from tests.s3_faults import FAULTS, FaultProxy, Rule

MODEL = "churn"
READ_TIMEOUT_S = 1.0
DELAY_S = 2.0  # longer than the read timeout, so the client gives up and retries
# The request each operation is hit at: an artifact upload mid-publish, the alias write, an artifact read.
TARGETS = {"publish": ("PUT", "/weights.bin"), "promote": ("PUT", "/aliases/champion.json"),
           "download": ("GET", "/weights.bin")}


def _model_dir(root: Path, tag: str) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "model.json").write_text(json.dumps({"tag": tag}))
    (root / "weights.bin").write_bytes(hashlib.sha256(tag.encode()).digest() * 256)
    (root / "sub" / "vocab.txt").write_text(f"a\nb\n{tag}\n")
    return root


def _registries(uri: str, proxy: FaultProxy, s3_server: str, fault: str) -> tuple[Registry, Registry]:
    """The registry through the proxy (a short read timeout against delays), and the same registry straight
    on S3 to check what is stored."""
    timeout = {"read_timeout_s": READ_TIMEOUT_S} if fault == "delay" else {}
    through = Registry.from_uri(uri, endpoint_url=proxy.endpoint, **timeout)
    return through, Registry.from_uri(uri, endpoint_url=s3_server)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("operation", sorted(TARGETS))
def test_operation_survives_a_fault(operation, fault, s3_registry_uri, s3_server, fault_proxy, tmp_path):
    registry, direct = _registries(s3_registry_uri, fault_proxy, s3_server, fault)
    if operation != "publish":
        v1, v2 = (direct.publish(MODEL, _model_dir(tmp_path / t, t), {}).version for t in ("a", "b"))
        direct.promote(MODEL, v1, actor="ci", reason="first")
    method, key = TARGETS[operation]
    fault_proxy.set_rules([Rule(fault, method=method, key=key, seconds=DELAY_S)])

    if operation == "publish":
        source = _model_dir(tmp_path / "src", "a")
        assert registry.publish(MODEL, source, {"run": 1}).version == "v0001"
        manifest = direct.get(MODEL, "v0001").manifest
        assert [v.version for v in direct.versions(MODEL)] == ["v0001"]
        assert manifest["files"]["weights.bin"]["sha256"] == hashlib.sha256(
            (source / "weights.bin").read_bytes()).hexdigest()
    elif operation == "promote":
        registry.promote(MODEL, v2, actor="ci", reason="better")
        history = direct.alias(MODEL).history
        assert [(h["seq"], h["from"], h["to"]) for h in history] == [(1, None, v1), (2, v1, v2)]
    else:
        dest = registry.download(MODEL, v1, tmp_path / "out" / "model")
        assert (dest / "weights.bin").read_bytes() == (tmp_path / "a" / "weights.bin").read_bytes()
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model"]

    assert fault_proxy.faults == {fault: 1}
    assert fault_proxy.retried(method, key), f"no retry of {method} {key} after {fault}: {fault_proxy.seen}"


@pytest.mark.parametrize("fault", ["internal", "reset", "delay"])
@pytest.mark.parametrize("write", ["manifest", "alias", "record"])
def test_write_applied_but_reply_lost_is_recognised(write, fault, s3_registry_uri, s3_server, fault_proxy,
                                                    tmp_path):
    registry, direct = _registries(s3_registry_uri, fault_proxy, s3_server, fault)
    if write != "manifest":
        v1 = direct.publish(MODEL, _model_dir(tmp_path / "a", "a"), {}).version
    key = {"manifest": "/manifest.json", "alias": "/aliases/champion.json", "record": "/records/"}[write]
    fault_proxy.set_rules([Rule(fault, method="PUT", key=key, when="after", seconds=DELAY_S)])

    if write == "manifest":
        assert registry.publish(MODEL, _model_dir(tmp_path / "a", "a"), {}).version == "v0001"
        assert [v.version for v in direct.versions(MODEL)] == ["v0001"]
        assert direct.publish(MODEL, _model_dir(tmp_path / "b", "b"), {}).version == "v0002"
    elif write == "alias":
        state = registry.promote(MODEL, v1, actor="ci", reason="first")
        assert [(h["seq"], h["to"]) for h in direct.alias(MODEL).history] == [(1, v1)]
        # The etag the registry returned is the stored one: the next compare-and-swap builds on it.
        assert direct.promote(MODEL, v1, actor="ci", reason="again", expected=state).history[-1]["seq"] == 2
    else:
        registry.put_record(MODEL, "decisions", "2025-04-01", {"promoted": True})
        assert direct.records(MODEL, "decisions") == [{"promoted": True}]
        with pytest.raises(ConflictError):
            registry.put_record(MODEL, "decisions", "2025-04-01", {"promoted": False})

    retries = fault_proxy.retried("PUT", key)
    assert fault_proxy.faults == {fault: 1}
    # S3 had applied the first attempt, so the retry's condition failed; the identical body made it ours.
    assert retries and retries[0].status == 412, fault_proxy.seen


@pytest.mark.parametrize("fault", ["internal", "reset"])
@pytest.mark.parametrize("operation", sorted(TARGETS))
def test_fault_that_never_stops_fails_cleanly(operation, fault, s3_registry_uri, s3_server, fault_proxy, tmp_path):
    registry, direct = _registries(s3_registry_uri, fault_proxy, s3_server, fault)
    if operation != "publish":
        v1, v2 = (direct.publish(MODEL, _model_dir(tmp_path / t, t), {}).version for t in ("a", "b"))
        before = direct.promote(MODEL, v1, actor="ci", reason="first")
    method, key = {**TARGETS, "publish": ("PUT", "/manifest.json")}[operation]
    fault_proxy.set_rules([Rule(fault, method=method, key=key, times=None)])
    stored = {"publish": "versions/v0001/manifest.json", "promote": "aliases/champion.json",
              "download": "versions/v0001/weights.bin"}[operation]
    message = rf"S3 \w+ {re.escape(f'{s3_registry_uri}/{MODEL}/{stored}')} at {re.escape(fault_proxy.endpoint)} failed"

    with pytest.raises(RegistryError, match=message):
        if operation == "publish":
            registry.publish(MODEL, _model_dir(tmp_path / "src", "a"), {})
        elif operation == "promote":
            registry.promote(MODEL, v2, actor="ci", reason="better")
        else:
            registry.download(MODEL, v1, tmp_path / "out" / "model")

    assert len([s for s in fault_proxy.seen if s.method == method and key in s.path]) == 6  # 1 + 5 retries
    if operation == "publish":
        assert direct.versions(MODEL) == [] and direct.models() == []
        assert direct.publish(MODEL, _model_dir(tmp_path / "next", "b"), {}).version == "v0002"
    elif operation == "promote":
        assert direct.alias(MODEL) == before
    else:
        assert list((tmp_path / "out").iterdir()) == []


def test_racing_promotions_through_faults_keep_one_history(s3_registry_uri, s3_server, fault_proxy, tmp_path):
    direct = Registry.from_uri(s3_registry_uri, endpoint_url=s3_server)
    versions = [direct.publish(MODEL, _model_dir(tmp_path / t, t), {}).version for t in ("a", "b")]
    alias = "/aliases/champion.json"
    fault_proxy.set_rules([
        Rule("internal", method="PUT", key=alias, nth=1, every=3, times=None, when="after", spare_retries=True),
        Rule("reset", method="PUT", key=alias, nth=2, every=3, times=None, when="after", spare_retries=True),
        Rule("reset", method="GET", key=alias, nth=2, every=4, times=None, spare_retries=True),
    ])
    rounds, wins, errors = 4, {0: [], 1: []}, []

    def racer(index: int) -> None:
        registry = Registry.from_uri(s3_registry_uri, endpoint_url=fault_proxy.endpoint)
        try:
            for attempt in range(100):
                if len(wins[index]) == rounds:
                    return
                reason = f"racer{index}-try{attempt}"
                try:
                    registry.promote(MODEL, versions[index], actor=f"racer{index}", reason=reason)
                    wins[index].append(reason)
                except ConflictError:
                    continue
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=racer, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == [] and [len(w) for w in wins.values()] == [rounds, rounds]
    history = direct.alias(MODEL).history
    assert [h["seq"] for h in history] == list(range(1, len(history) + 1))
    assert history[0]["from"] is None and all(h["from"] == p["to"] for p, h in zip(history, history[1:]))
    reasons = [h["reason"] for h in history]
    assert len(set(reasons)) == len(reasons)  # no write was applied twice
    assert set(wins[0] + wins[1]) <= set(reasons)  # every promotion that reported success is in the history
    assert direct.alias(MODEL).version == history[-1]["to"]
    assert fault_proxy.faults["internal"] and fault_proxy.faults["reset"] and fault_proxy.retries >= 3
