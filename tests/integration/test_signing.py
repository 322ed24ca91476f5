"""Signed manifests: training signs with TIDEMARK_SIGNING_KEY, scoring verifies with TIDEMARK_VERIFY_KEY, and a
bucket writer without the private key cannot swap an artifact, not even by rewriting its manifest too."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest
from typer.testing import CliRunner

from ml.cli import app
from ml.core.settings import Settings
from ml.registry import IntegrityError, Registry, RegistryError
from ml.registry.champion import resolve_champion
from tests.registry_backends import MODEL, _model_dir


def _key_pair(folder, name: str) -> tuple[str, str]:
    """An Ed25519 pair as PEM files, made with the cryptography package directly."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(private), str(public)


def _settings(backend, tmp_path, **keys: str) -> Settings:
    env = {"TIDEMARK_HOME": str(tmp_path / "home"), "TIDEMARK_REGISTRY_URI": backend.uri, **keys}
    if backend.endpoint_url:
        env["TIDEMARK_S3_ENDPOINT_URL"] = backend.endpoint_url
    return Settings.from_env(env)


def _swap(backend, registry: Registry, version: str) -> bytes:
    """What someone with write access to the bucket but no key can do: replace an artifact and rewrite the
    manifest's checksum and size to match."""
    forged = b"\x00forged weights\x00" * 100
    backend.raw_put(f"{MODEL}/versions/{version}/weights.bin", forged)
    key = f"{MODEL}/versions/{version}/manifest.json"
    manifest = json.loads(registry.store.get(key))
    manifest["files"]["weights.bin"] = {"sha256": hashlib.sha256(forged).hexdigest(), "size": len(forged)}
    backend.raw_put(key, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return forged


def test_signed_manifest_round_trip_and_a_swap_is_refused_only_with_the_key(backend, tmp_path):
    private, public = _key_pair(tmp_path, "train")
    trainer = Registry.from_settings(_settings(backend, tmp_path, TIDEMARK_SIGNING_KEY=private))
    version = trainer.publish(MODEL, _model_dir(tmp_path / "src", "x"), {"metrics": {"roc_auc": 0.7}}).version
    trainer.promote(MODEL, version, actor="gate", reason="first")
    assert trainer.store.exists(f"{MODEL}/versions/{version}/manifest.sig")

    verifying = _settings(backend, tmp_path, TIDEMARK_VERIFY_KEY=public)
    scorer = Registry.from_settings(verifying)
    assert scorer.get(MODEL, version).manifest["metrics"] == {"roc_auc": 0.7}
    assert resolve_champion(verifying, MODEL).version == version  # verified and cached

    forged = _swap(backend, trainer, version)
    # Without the verify key the checksums alone are satisfied: this is the gap that signing closes.
    unverified = Registry.from_settings(_settings(backend, tmp_path))
    assert (unverified.download(MODEL, version, tmp_path / "gap") / "weights.bin").read_bytes() == forged
    with pytest.raises(IntegrityError, match=rf"{MODEL} {version}: the signature in manifest.sig does not match"):
        scorer.download(MODEL, version, tmp_path / "refused")
    with pytest.raises(IntegrityError, match=f"{MODEL} {version}"):
        resolve_champion(verifying, MODEL)  # the cached copy from before the swap is not used either
    assert not (tmp_path / "refused").exists()


def test_a_missing_signature_or_another_key_is_refused(backend, tmp_path):
    private, _ = _key_pair(tmp_path, "train")
    _, other_public = _key_pair(tmp_path, "other")
    unsigned = Registry.from_settings(_settings(backend, tmp_path)).publish(MODEL, _model_dir(tmp_path / "a", "a"), {})
    signed = Registry.from_settings(_settings(backend, tmp_path, TIDEMARK_SIGNING_KEY=private)).publish(
        MODEL, _model_dir(tmp_path / "b", "b"), {})

    _, public = _key_pair(tmp_path, "scoring")
    with pytest.raises(IntegrityError, match=rf"{MODEL} {unsigned.version} has no manifest.sig"):
        Registry.from_settings(_settings(backend, tmp_path, TIDEMARK_VERIFY_KEY=public)).get(MODEL, unsigned.version)
    with pytest.raises(IntegrityError, match="does not match manifest.json"):
        Registry.from_settings(_settings(backend, tmp_path, TIDEMARK_VERIFY_KEY=other_public)).download(
            MODEL, signed.version, tmp_path / "out")


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("TIDEMARK_HOME", str(tmp_path))
    made = CliRunner().invoke(app, ["registry", "keygen", str(tmp_path / "keys")])
    assert made.exit_code == 0, made.output
    private, public = sorted((tmp_path / "keys").iterdir())
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and b"PRIVATE KEY" in private.read_bytes()
    assert b"PUBLIC KEY" in public.read_bytes()
    again = CliRunner().invoke(app, ["registry", "keygen", str(tmp_path / "keys")])
    assert again.exit_code == 2 and "never overwrites a key" in again.stderr

    uri = (tmp_path / "registry").as_uri()
    settings = Settings.from_env({"TIDEMARK_HOME": str(tmp_path), "TIDEMARK_REGISTRY_URI": uri,
                                  "TIDEMARK_SIGNING_KEY": str(private), "TIDEMARK_VERIFY_KEY": str(public)})
    version = Registry.from_settings(settings).publish(MODEL, _model_dir(tmp_path / "src", "k"), {}).version
    assert Registry.from_settings(settings).get(MODEL, version).version == version


def test_an_unusable_key_file_is_named(tmp_path):
    (tmp_path / "not-a-key.pem").write_text("hello")
    env = {"TIDEMARK_HOME": str(tmp_path)}
    with pytest.raises(RegistryError, match=r"TIDEMARK_SIGNING_KEY=.*missing.pem cannot be read"):
        Registry.from_settings(Settings.from_env({**env, "TIDEMARK_SIGNING_KEY": str(tmp_path / "missing.pem")}))
    with pytest.raises(RegistryError, match=r"TIDEMARK_VERIFY_KEY=.*not-a-key.pem is not a usable PEM key"):
        Registry.from_settings(Settings.from_env({**env, "TIDEMARK_VERIFY_KEY": str(tmp_path / "not-a-key.pem")}))
