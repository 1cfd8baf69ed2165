"""Backends: load a model version, describe its signature, run it.

The serving core only speaks the ``Backend``/``Session`` protocols of ``kiln.runtime.base``;
concrete backends are listed in ``kiln.runtime.registry.BACKENDS`` and imported lazily.
"""

from kiln.runtime.base import Backend, ModelArtifact, Session, SessionOptions
from kiln.runtime.registry import BACKENDS, get_backend

__all__ = ["BACKENDS", "Backend", "ModelArtifact", "Session", "SessionOptions", "get_backend"]
