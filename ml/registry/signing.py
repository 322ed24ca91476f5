"""Detached Ed25519 signatures over version manifests.

Training signs each manifest with a private key (TIDEMARK_SIGNING_KEY) and stores the signature as
`manifest.sig` before the manifest itself. Scoring verifies it with the public key (TIDEMARK_VERIFY_KEY),
so someone who can write to the bucket but lacks the private key cannot swap an artifact even when they
also rewrite the manifest's checksums.
"""

from __future__ import annotations

import os
from pathlib import Path

from ml.registry.stores import IntegrityError, RegistryError

SIGNATURE = "manifest.sig"
PRIVATE_FILE = "tidemark-signing.pem"
PUBLIC_FILE = "tidemark-verify.pem"


class SigningError(RegistryError):
    """A signing or verify key cannot be used; the message names the setting and the file."""


def load_signing_key(path: Path):
    """The Ed25519 private key in the PEM file `path` (TIDEMARK_SIGNING_KEY)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = _load(path, "TIDEMARK_SIGNING_KEY", lambda data: load_pem_private_key(data, password=None))
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"TIDEMARK_SIGNING_KEY={path} is not an Ed25519 private key; "
                           "make a pair with `python -m ml registry keygen DIR`")
    return key


def load_verify_key(path: Path):
    """The Ed25519 public key in the PEM file `path` (TIDEMARK_VERIFY_KEY)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key = _load(path, "TIDEMARK_VERIFY_KEY", load_pem_public_key)
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"TIDEMARK_VERIFY_KEY={path} is not an Ed25519 public key; "
                           "use the public half written by `python -m ml registry keygen DIR`")
    return key


def _load(path: Path, variable: str, parse):
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SigningError(f"{variable}={path} cannot be read ({exc.strerror}); point it at a PEM key file "
                           "or unset it") from None
    try:
        return parse(data)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{variable}={path} is not a usable PEM key ({exc}); make a pair with "
                           "`python -m ml registry keygen DIR`") from None


def sign(key, manifest: bytes) -> bytes:
    """The detached signature of a manifest's exact bytes."""
    return key.sign(manifest)


def verify(key, manifest: bytes, signature: bytes | None, what: str, where: str) -> None:
    """IntegrityError naming `what` and `where` it is stored unless `signature` is a valid signature of `manifest`
    under `key`."""
    from cryptography.exceptions import InvalidSignature

    if signature is None:
        raise IntegrityError(f"{what} has no {SIGNATURE} in {where}: it was published without the signing key or "
                             "the signature was removed; refusing it because TIDEMARK_VERIFY_KEY is set")
    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        raise IntegrityError(f"{what}: the signature in {SIGNATURE} does not match manifest.json in {where} (the "
                             "manifest was altered, or signed with another key); refusing it") from None


def generate_keypair(directory: Path) -> tuple[Path, Path]:
    """Write a new Ed25519 pair into `directory`: the private key (mode 0600) and the public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory = Path(directory)
    private, public = directory / PRIVATE_FILE, directory / PUBLIC_FILE
    existing = [str(p) for p in (private, public) if p.exists()]
    if existing:
        raise SigningError(f"{', '.join(existing)} already exist; keygen never overwrites a key, "
                           "so choose another directory or move them away first")
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public
