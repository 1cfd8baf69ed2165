"""The visible table of backends. The serving core looks backends up here by name.

Each entry is a ``module:attribute`` path imported on first use, so heavy runtimes are
only imported when a model asks for them.
"""

from __future__ import annotations

import importlib
from functools import cache
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


@cache
def get_backend(name: str) -> Backend:
    """The backend registered under ``name`` (one shared instance per name)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"unknown backend '{name}'; kiln knows {', '.join(sorted(set(BACKENDS)))}"
        ) from None
    backend: Backend = import_entry(target)()
    return backend


def import_entry(target: str) -> Any:
    """The attribute named by a ``"module:attribute"`` table entry, imported on first use."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
