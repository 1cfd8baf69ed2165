"""The backend table the registry is handed: named entries, made once, clear errors."""

from __future__ import annotations

import pytest

from kiln.errors import ConfigError
from kiln.runtime import BACKENDS, BackendTable
from kiln.runtime.onnx import OnnxRuntimeBackend
from kiln.runtime.testing import EchoBackend
from kiln.tensors import DataType, TensorSpec


def test_entries_are_made_once_and_aliases_share_one_backend() -> None:
    table = BackendTable(BACKENDS)
    onnx = table.get("onnxruntime")
    assert isinstance(onnx, OnnxRuntimeBackend)
    assert table.get("onnxruntime_onnx") is onnx and table.get(None) is onnx


def test_a_factory_is_a_backend_of_its_own() -> None:
    made: list[EchoBackend] = []

    def factory() -> EchoBackend:
        made.append(EchoBackend([TensorSpec("x", DataType.FP32, (-1,))]))
        return made[-1]

    table = BackendTable({"echo": factory})
    assert table.get("echo") is table.get("echo") and len(made) == 1


def test_an_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown backend 'torch'; kiln knows echo"):
        BackendTable({"echo": "kiln.runtime.testing:EchoBackend"}).get("torch")
