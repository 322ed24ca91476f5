"""One contract for both registry backends: a local directory and S3 over HTTP (moto server)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing

import pytest

from ml.registry import ConflictError, IntegrityError, NotFound, Registry, RegistryError
from tests.registry_backends import MODEL, _model_dir, _published

WORKERS = 6
ROUNDS = 3


def test_publish_list_and_get(backend, tmp_path):
    registry = backend.registry()
    source = _model_dir(tmp_path / "src", "first")
    metadata = {"metrics": {"pr_auc": 0.41}, "git_commit": "abc123", "training_window": ["2025-01-01", "2025-02-01"]}
    first = registry.publish(MODEL, source, metadata)
    second = registry.publish(MODEL, _model_dir(tmp_path / "src2", "second"), {"metrics": {"pr_auc": 0.45}})

    assert (first.version, second.version) == ("v0001", "v0002")
    assert [v.version for v in registry.versions(MODEL)] == ["v0001", "v0002"]
    assert registry.models() == [MODEL]
    got = registry.get(MODEL, "v0001").manifest
    assert got["metrics"] == {"pr_auc": 0.41} and got["git_commit"] == "abc123"
    assert (got["model"], got["version"]) == (MODEL, "v0001") and got["created_at"].endswith("+00:00")
    weights = (source / "weights.bin").read_bytes()
    assert sorted(got["files"]) == ["model.json", "sub/vocab.txt", "weights.bin"]
    assert got["files"]["weights.bin"] == {"sha256": hashlib.sha256(weights).hexdigest(), "size": 2048}
    with pytest.raises(NotFound, match=r"no published version 'v0003' \(published: \['v0001', 'v0002'\]\)"):
        registry.get(MODEL, "v0003")
    with pytest.raises(RegistryError, match="reserved"):
        registry.publish(MODEL, source, {"version": "v9"})
    assert registry.uri.startswith(("file:///", "s3://")) and registry.uri.endswith(("registry", "/models"))


def test_version_without_manifest_is_invisible(backend, tmp_path):
    registry = backend.registry()
    registry.store.put_if_absent(f"{MODEL}/versions/v0001/.claim", b"{}")
    registry.store.put_if_absent(f"{MODEL}/versions/v0001/weights.bin", b"half-written")

    assert registry.versions(MODEL) == [] and registry.models() == []
    with pytest.raises(NotFound, match="v0001"):
        registry.get(MODEL, "v0001")
    with pytest.raises(NotFound, match="refusing to point 'champion' at a version that does not exist"):
        registry.promote(MODEL, "v0001", actor="ci", reason="test")
    assert registry.alias(MODEL).version is None
    # The abandoned number stays taken; the next publish gets the one after it.
    assert registry.publish(MODEL, _model_dir(tmp_path / "src", "x"), {}).version == "v0002"
    assert [v.version for v in registry.versions(MODEL)] == ["v0002"]


def test_written_keys_are_immutable(backend, tmp_path):
    registry = backend.registry()
    info = registry.publish(MODEL, _model_dir(tmp_path / "src", "x"), {"i": 1})
    key = f"{MODEL}/versions/{info.version}/manifest.json"
    original = registry.store.get(key)

    with pytest.raises(ConflictError, match="already exists and is immutable"):
        registry.store.put_if_absent(key, b'{"forged": true}')
    with pytest.raises(ConflictError):
        registry.store.put_if_absent(f"{MODEL}/versions/{info.version}/weights.bin", b"other")
    registry.store.put_if_absent(key, original)  # the identical write is a no-op, so retries are safe
    assert registry.store.get(key) == original
    assert registry.get(MODEL, info.version).manifest["i"] == 1


def test_download_verifies_and_copies_everything(backend, tmp_path):
    registry = backend.registry()
    source = _model_dir(tmp_path / "src", "x")
    info = registry.publish(MODEL, source, {})

    dest = registry.download(MODEL, info.version, tmp_path / "out" / "model")
    for name in info.manifest["files"]:
        assert (dest / name).read_bytes() == (source / name).read_bytes()
    assert json.loads((dest / "manifest.json").read_text()) == info.manifest
    # A retry replaces an earlier download; a folder holding anything else is left alone.
    other = registry.publish(MODEL, _model_dir(tmp_path / "src2", "y"), {})
    assert registry.download(MODEL, other.version, dest) == dest
    assert json.loads((dest / "model.json").read_text())["tag"] == "y"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model"]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(RegistryError, match="already exists and is not empty"):
        registry.download(MODEL, info.version, tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("damage", ["altered", "truncated", "missing"])
def test_damaged_artifact_is_refused(backend, tmp_path, damage):
    registry = backend.registry()
    info = registry.publish(MODEL, _model_dir(tmp_path / "src", "x"), {})
    key = f"{MODEL}/versions/{info.version}/sub/vocab.txt"
    good = registry.store.get(key)
    expected = info.manifest["files"]["sub/vocab.txt"]
    if damage == "altered":
        tampered = good.replace(b"a", b"z")
        backend.raw_put(key, tampered)
        actual = hashlib.sha256(tampered).hexdigest()
        message = f"'sub/vocab.txt' has sha256 {actual}, manifest says {expected['sha256']}"
    elif damage == "truncated":
        backend.raw_put(key, good[:3])
        message = f"'sub/vocab.txt' has 3 bytes, manifest says {expected['size']}"
    else:
        backend.raw_delete(key)
        message = "'sub/vocab.txt' is in the manifest but missing"

    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match=message.replace("(", r"\(")):
        registry.download(MODEL, info.version, out / "model")
    assert list(out.iterdir()) == []  # neither the destination nor a temporary folder is left


def test_alias_changes_only_by_compare_and_swap(backend, tmp_path):
    registry = backend.registry()
    v1, v2, v3 = _published(registry, tmp_path, 3)
    unset = registry.alias(MODEL)
    assert (unset.version, unset.etag, unset.history) == (None, None, ())

    first = registry.promote(MODEL, v1, actor="alice", reason="first", expected=unset)
    with pytest.raises(ConflictError, match="'champion' of 'churn' changed since it was read"):
        registry.promote(MODEL, v2, actor="bob", reason="stale", expected=unset)
    second = registry.promote(MODEL, v2, actor="bob", reason="fresh", expected=first)
    with pytest.raises(ConflictError):
        registry.set_alias(MODEL, "champion", v3, expected=first, actor="carol", reason="stale")

    assert registry.alias(MODEL) == second
    assert registry.alias(MODEL).version == v2 and len(second.history) == 2
    assert registry.alias(MODEL, "challenger").version is None
    registry.promote(MODEL, v3, actor="carol", reason="shadow", alias="challenger")
    assert (registry.alias(MODEL, "challenger").version, registry.alias(MODEL).version) == (v3, v2)
    with pytest.raises(RegistryError, match="bad alias 'Champion'"):
        registry.alias(MODEL, "Champion")


def test_history_and_rollback_walk_back(backend, tmp_path):
    registry = backend.registry()
    v1, v2, v3 = _published(registry, tmp_path, 3)
    for version in (v1, v2, v3):
        registry.promote(MODEL, version, actor="gate", reason=f"better: {version}")

    assert registry.rollback(MODEL, actor="oncall", reason="bad scores").version == v2
    assert registry.rollback(MODEL, actor="oncall", reason="still bad").version == v1
    with pytest.raises(RegistryError, match="no earlier version in its history \\(now v0001\\)"):
        registry.rollback(MODEL, actor="oncall", reason="again")

    history = registry.alias(MODEL).history
    moves = [(h["seq"], h["action"], h["from"], h["to"], h["actor"]) for h in history]
    assert moves == [
        (1, "promote", None, v1, "gate"),
        (2, "promote", v1, v2, "gate"),
        (3, "promote", v2, v3, "gate"),
        (4, "rollback", v3, v2, "oncall"),
        (5, "rollback", v2, v1, "oncall"),
    ]
    assert history[3]["reason"] == "bad scores" and all(h["at"].endswith("+00:00") for h in history)
    # After promoting again (twice to the same version), one rollback returns to where it was before.
    registry.promote(MODEL, v3, actor="gate", reason="fixed")
    registry.promote(MODEL, v3, actor="gate", reason="fixed, confirmed")
    back = registry.rollback(MODEL, actor="oncall", reason="no")
    assert (back.version, back.history[-1]["from"], len(back.history)) == (v1, v3, 8)


def test_records_and_free_form_files(backend, tmp_path):
    registry = backend.registry()
    for name in ("2025-04-02", "2025-03-01", "2025-04-01"):
        registry.put_record(MODEL, "decisions", name, {"day": name, "promoted": name.endswith("1")})
    registry.put_record(MODEL, "decisions", "2025-03-01", {"day": "2025-03-01", "promoted": True})  # same: no-op
    with pytest.raises(ConflictError):
        registry.put_record(MODEL, "decisions", "2025-03-01", {"day": "2025-03-01", "promoted": False})
    assert [r["day"] for r in registry.records(MODEL, "decisions")] == ["2025-03-01", "2025-04-01", "2025-04-02"]
    assert registry.records(MODEL, "evaluations") == []

    key = "monitoring/churn/2025-04-02/report.html"
    report = tmp_path / "report.html"
    report.write_text("<html>v1</html>")
    uri = registry.put_file(key, report)
    assert uri == f"{registry.uri}/{key}"
    assert registry.put_bytes(key, b"<html>v2</html>") == uri  # reports may be overwritten
    assert registry.get_bytes(key) == b"<html>v2</html>"
    with pytest.raises(NotFound, match="report.txt"):
        registry.get_bytes("monitoring/churn/2025-04-02/report.txt")
    with pytest.raises(RegistryError, match="bad registry key"):
        registry.put_bytes("../escape.html", b"x")


def _race_worker(uri, endpoint_url, index, versions, barrier, results) -> None:
    registry = Registry.from_uri(uri, endpoint_url=endpoint_url)
    for round_ in range(ROUNDS):
        state = registry.alias(MODEL)
        barrier.wait()
        target = versions[(index + round_) % len(versions)]
        try:
            registry.set_alias(MODEL, "champion", target, expected=state, actor=f"w{index}", reason=f"r{round_}")
            results.put((round_, index, state.version, target))
        except ConflictError:
            results.put((round_, index, state.version, None))
        barrier.wait()  # everyone's write has finished before the next round reads


def _publish_worker(uri, endpoint_url, index, source, barrier, results) -> None:
    registry = Registry.from_uri(uri, endpoint_url=endpoint_url)
    barrier.wait()
    results.put((index, registry.publish(MODEL, source, {"publisher": index}).version))


def _run_processes(target, args_for, count: int) -> list[tuple]:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(count, timeout=60), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(i), barrier, results)) for i in range(count)]
    for proc in procs:
        proc.start()
    try:
        out = [results.get(timeout=90) for _ in range(count * (ROUNDS if target is _race_worker else 1))]
    finally:
        for proc in procs:
            proc.join(timeout=30)
    assert [proc.exitcode for proc in procs] == [0] * count
    return out


def test_racing_promotions_have_one_winner_per_round(backend, tmp_path):
    registry = backend.registry()
    versions = _published(registry, tmp_path, WORKERS)
    results = _run_processes(_race_worker, lambda i: (backend.uri, backend.endpoint_url, i, versions), WORKERS)

    winners = {}
    for round_ in range(ROUNDS):
        rows = [r for r in results if r[0] == round_]
        assert len(rows) == WORKERS and len({r[2] for r in rows}) == 1  # all read the same state
        won = [r for r in rows if r[3] is not None]
        assert len(won) == 1, f"round {round_}: {won}"
        winners[round_] = won[0]

    final = registry.alias(MODEL)
    assert [h["seq"] for h in final.history] == [1, 2, 3]
    assert final.history[0]["from"] is None
    for round_, entry in enumerate(final.history):
        _, index, read, target = winners[round_]
        assert (entry["from"], entry["to"], entry["actor"]) == (read, target, f"w{index}")
        if round_:
            assert entry["from"] == final.history[round_ - 1]["to"]
    assert final.version == final.history[-1]["to"]


def test_concurrent_publishers_get_distinct_versions(backend, tmp_path):
    sources = [_model_dir(tmp_path / f"src{i}", f"p{i}") for i in range(WORKERS)]
    results = _run_processes(_publish_worker, lambda i: (backend.uri, backend.endpoint_url, i, sources[i]), WORKERS)

    assert sorted(v for _, v in results) == [f"v{n:04d}" for n in range(1, WORKERS + 1)]
    registry = backend.registry()
    by_version = {v.version: v.manifest for v in registry.versions(MODEL)}
    for index, version in results:
        assert by_version[version]["publisher"] == index
        expected = hashlib.sha256((sources[index] / "weights.bin").read_bytes()).hexdigest()
        assert by_version[version]["files"]["weights.bin"]["sha256"] == expected


@pytest.mark.parametrize("uri", ["ftp://host/registry", "file://relative/dir", "registry", "s3:///no-bucket"])
def test_bad_uri_names_the_variable(uri):
    with pytest.raises(RegistryError, match=r"TIDEMARK_REGISTRY_URI=.*Valid examples: file:///abs/path/registry, s3"):
        Registry.from_uri(uri)


def test_missing_bucket_is_named(s3_env):
    registry = Registry.from_uri("s3://no-such-bucket-tidemark/models", endpoint_url=s3_env)
    with pytest.raises(RegistryError, match=f"S3 bucket 'no-such-bucket-tidemark' does not exist at {s3_env}"):
        registry.versions(MODEL)


def _finish_worker(uri, endpoint_url, index, barrier, results) -> None:
    from ml.registry import promotion

    registry = Registry.from_uri(uri, endpoint_url=endpoint_url)
    barrier.wait()
    results.put((index, promotion.finish(registry, MODEL, "v0001", lambda row: None)))


def test_racing_finishers_of_one_half_done_promotion_move_the_alias_once(backend, tmp_path):
    from ml.registry import promotion

    registry = backend.registry()
    _published(registry, tmp_path, 1)
    decision = {"decision": "promoted", "reasons": ["PASS"], "champion_before": None, "champion_after": "v0001"}
    promotion.begin(registry, MODEL, "v0001", decision, promote=True, expected=None, actor="gate", reason="passed",
                    row={"model_name": MODEL, "candidate_version": "v0001"})
    assert promotion.unfinished(registry, MODEL) == ["v0001"]

    results = _run_processes(_finish_worker, lambda i: (backend.uri, backend.endpoint_url, i), WORKERS)

    assert {json.dumps(outcome, sort_keys=True) for _, outcome in results} == {json.dumps(
        {"model": MODEL, "version": "v0001", "decision": "promoted", "reasons": ["PASS"], "champion_before": None,
         "champion_after": "v0001"}, sort_keys=True)}
    history = registry.alias(MODEL).history
    assert [(h["from"], h["to"], h["ref"]) for h in history] == [(None, "v0001", "decisions/v0001")]
    assert promotion.unfinished(registry, MODEL) == [] and len(registry.records(MODEL, "completions")) == 1


def test_errors_name_the_registry_they_looked_in(backend, tmp_path):
    registry = backend.registry()
    (v1,) = _published(registry, tmp_path, 1)
    with pytest.raises(NotFound) as missing:
        registry.get(MODEL, "v0007")
    assert f"has no published version 'v0007' (published: ['v0001']) in registry {registry.uri}" in str(missing.value)
    with pytest.raises(NotFound, match="refusing to point 'champion'") as refused:
        registry.promote(MODEL, "v0007", actor="ci", reason="typo")
    assert f"in registry {registry.uri}" in str(refused.value)
    first = registry.promote(MODEL, v1, actor="ci", reason="first")
    with pytest.raises(RegistryError) as no_earlier:
        registry.rollback(MODEL, actor="ci", reason="again")
    assert f"cannot roll back 'champion' of 'churn' in registry {registry.uri}: no earlier" in str(no_earlier.value)
    registry.promote(MODEL, v1, actor="ci", reason="again", expected=first)
    with pytest.raises(ConflictError) as moved:
        registry.promote(MODEL, v1, actor="ci", reason="stale", expected=first)
    assert f"changed since it was read (then at v0001) in registry {registry.uri}" in str(moved.value)
    backend.raw_delete(f"{MODEL}/versions/{v1}/weights.bin")
    with pytest.raises(IntegrityError) as lost:
        registry.download(MODEL, v1, tmp_path / "out")
    assert f"{MODEL} {v1} in registry {registry.uri}: artifact 'weights.bin'" in str(lost.value)
