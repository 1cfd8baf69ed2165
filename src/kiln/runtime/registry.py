"""The visible table of backends, and ``BackendTable``, which the serving core is handed.

Each entry of ``BACKENDS`` is a ``module:attribute`` path imported on first use, so heavy
runtimes are only imported when a model asks for them. A new backend is one row here; a
test hands the registry a table of its own (``BackendTable({"echo": EchoBackend})``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from kiln.errors import ConfigError
from kiln.runtime.base import Backend

#: Backend name -> "module:class". Aliases map Triton's names to the same backend.
BACKENDS: dict[str, str] = {
    "onnxruntime": "kiln.runtime.onnx:OnnxRuntimeBackend",
    "onnxruntime_onnx": "kiln.runtime.onnx:OnnxRuntimeBackend",
    "onnx": "kiln.runtime.onnx:OnnxRuntimeBackend",
    "openvino": "kiln.runtime.openvino:OpenVinoBackend",
}

#: The backend of a model whose config names none.
DEFAULT_BACKEND = "onnxruntime"

#: A table entry: a ``"module:attribute"`` path to a backend class, or a factory.
BackendEntry = str | Callable[[], Backend]


class BackendTable:
    """Backends by name, each made once, on first use, from its entry::

        backends = BackendTable(BACKENDS)
        backend = backends.get("onnxruntime")
    """

    def __init__(self, entries: Mapping[str, BackendEntry] = BACKENDS) -> None:
        self._entries = dict(entries)
        self._made: dict[BackendEntry, Backend] = {}

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str | None) -> Backend:
        """The backend registered under ``name`` (``None``: the default backend)."""
        name = name or DEFAULT_BACKEND
        try:
            entry = self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown backend '{name}'; kiln knows {', '.join(self.names())}"
            ) from None
        backend = self._made.get(entry)
        if backend is None:
            factory = import_entry(entry) if isinstance(entry, str) else entry
            backend = self._made[entry] = factory()
        return backend


def import_entry(target: str) -> Any:
    """The attribute named by a ``"module:attribute"`` table entry, imported on first use."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
