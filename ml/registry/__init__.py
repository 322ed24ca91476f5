"""The model registry: immutable checksummed versions, compare-and-swap aliases, and the champion's resolver."""

from ml.registry.registry import MANIFEST, AliasState, Registry, VersionInfo
from ml.registry.stores import ConflictError, IntegrityError, NotFound, RegistryError

__all__ = ["MANIFEST", "AliasState", "ConflictError", "IntegrityError", "NotFound", "Registry", "RegistryError",
           "VersionInfo"]
