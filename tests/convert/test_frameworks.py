"""Every model form kiln accepts converts with its names and a dynamic batch, parity proven."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.convert import convert
from kiln.tensors import DataType, TensorSpec

_SETS = ("examples", "generated batch 1", "generated batch 2", "generated batch 16")


@pytest.fixture(scope="module")
def linear(torch_threads: Any) -> Any:
    torch = torch_threads
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).eval()


def test_torchscript_file(linear: Any, tmp_path: Path) -> None:
    import torch

    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    torch.jit.trace(linear, torch.from_numpy(x)).save(tmp_path / "linear.pt")
    result = convert(tmp_path / "linear.pt", example_inputs=x)
    assert result.signature.inputs == (TensorSpec("input", DataType.FP32, (-1, 4)),)
    assert result.signature.outputs == (TensorSpec("output_0", DataType.FP32, (-1, 3)),)
    assert result.parity.passed and result.parity.input_sets == _SETS


def test_exported_program_file(linear: Any, tmp_path: Path) -> None:
    import torch

    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    program = torch.export.export(linear, (torch.from_numpy(x),),
                                  dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    torch.export.save(program, tmp_path / "linear.pt2")
    result = convert(tmp_path / "linear.pt2", example_inputs=x, output_names=["y"])
    assert result.source.framework == "torch"
    assert [(s.name, s.shape) for s in result.signature.outputs] == [("y", (-1, 3))]
    assert result.parity.passed


def test_torch_declared_signature_without_examples(linear: Any) -> None:
    result = convert(linear, inputs=[TensorSpec("features", DataType.FP32, (-1, 4))])
    assert result.signature.inputs == (TensorSpec("features", DataType.FP32, (-1, 4)),)
    assert result.parity.input_sets == _SETS[1:]


def test_keras_h5_and_saved_model(keras_file: Any, tmp_path: Path) -> None:
    import keras

    model = keras.models.load_model(keras_file[0])
    model.save(tmp_path / "digits.h5")
    model.export(tmp_path / "saved_model", verbose=False)
    for path, framework in ((tmp_path / "digits.h5", "keras"),
                            (tmp_path / "saved_model", "tensorflow")):
        result = convert(path)
        assert result.source.framework == framework
        assert result.signature.inputs == (TensorSpec("pixels", DataType.FP32, (-1, 784)),)
        assert result.signature.outputs == (TensorSpec("output_0", DataType.FP32, (-1, 10)),)
        assert result.parity.passed and result.parity.input_sets == _SETS[1:]


def test_sklearn_regressor_named_predictions(digits: Any) -> None:
    from sklearn.linear_model import Ridge

    model = Ridge().fit(digits[0], digits[2].astype(np.float32))
    result = convert(model, example_inputs=digits[1][:4])
    assert result.signature.inputs == (TensorSpec("input", DataType.FP32, (-1, 64)),)
    assert [s.name for s in result.signature.outputs] == ["predictions"]
    assert result.parity.outputs[0].max_abs_error < 1e-4
