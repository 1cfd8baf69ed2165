"""Backends: admit a model version's files, load them, describe the signature, run.

The serving core only speaks the ``Backend``/``Session`` protocols of ``kiln.runtime.base``;
concrete backends are listed in ``kiln.runtime.registry.BACKENDS`` and imported lazily by a
``BackendTable``, which the registry is handed.
"""

from kiln.runtime.base import (
    Backend,
    ModelArtifact,
    Session,
    SessionOptions,
    StoredFile,
    VersionFiles,
)
from kiln.runtime.registry import BACKENDS, BackendTable

__all__ = ["BACKENDS", "Backend", "BackendTable", "ModelArtifact", "Session", "SessionOptions",
           "StoredFile", "VersionFiles"]
