"""Models that cannot convert, and results that do not match, fail loudly and write nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.convert import ConversionError, ParityError, Tolerance, convert
from kiln.convert.base import require
from kiln.tensors import DataType
from tests.convert.conftest import run_kiln


def test_unsupported_estimator_names_the_step(digits: Any) -> None:
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    class Doubler(TransformerMixin, BaseEstimator):
        def fit(self, x: Any, y: Any = None) -> Doubler:
            return self

        def transform(self, x: Any) -> Any:
            return x * 2

    model = Pipeline([("double", Doubler()), ("clf", LogisticRegression(max_iter=200))])
    model.fit(digits[0], digits[2])
    with pytest.raises(ConversionError) as info:
        convert(model, example_inputs=digits[1][:4])
    message = info.value.message
    assert "pipeline step 'double' (Doubler) has no ONNX converter" in message
    assert "update_registered_converter" in message


def test_unsupported_torch_op_names_the_operation(torch_threads: Any) -> None:
    torch = torch_threads

    class Singular(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return torch.linalg.svdvals(x)

    with pytest.raises(ConversionError) as info:
        convert(Singular(), example_inputs=np.ones((2, 3, 3), np.float32))
    message = info.value.message
    assert "PyTorch operation 'aten._linalg_svd' cannot be exported to ONNX (opset 18)" in message
    assert "Rewrite that part of the model" in message


def test_unsupported_tensorflow_op_names_the_node() -> None:
    import keras
    import tensorflow as tf

    class Singular(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return tf.linalg.svd(tf.reshape(x, (-1, 2, 2)), compute_uv=False)

    inputs = keras.Input((4,), name="x")
    with pytest.raises(ConversionError) as info:
        convert(keras.Model(inputs, Singular(name="singular")(inputs)))
    message = info.value.message
    assert "TensorFlow operation Svd (node '" in message and "singular" in message
    assert "replace the layer" in message


def test_parity_failure_in_python_carries_the_report(pipeline: Any, digits: Any) -> None:
    model, _ = pipeline
    with pytest.raises(ParityError) as info:
        convert(model, example_inputs=digits[1][:16],
                tolerances={DataType.FP32: Tolerance(1e-12, 0.0)})
    failed = info.value.report.failures()
    assert [o.name for o in failed] == ["probabilities"]
    assert failed[0].max_abs_error > 1e-12
    assert "output 'probabilities' (FP32): max abs error" in info.value.message


def test_cli_parity_failure_exits_non_zero_with_figures_and_writes_nothing(
        pipeline: Any, digits: Any, tmp_path: Path) -> None:
    import joblib

    joblib.dump(pipeline[0], tmp_path / "pipeline.joblib")
    np.save(tmp_path / "x.npy", digits[1][:16])
    output = tmp_path / "pipeline.onnx"
    done = run_kiln("convert", str(tmp_path / "pipeline.joblib"), "--allow-pickle",
                    "--example", str(tmp_path / "x.npy"), "--tolerance", "FP32=1e-12",
                    "--output", str(output), "--json")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is False and "parity check failed" in result["error"]
    figures = result["parity"]["outputs"]["probabilities"]
    assert figures["passed"] is False and figures["max_abs_error"] > 1e-12
    assert figures["atol"] == 1e-12 and figures["rtol"] == 0.0
    assert result["parity"]["outputs"]["label"]["passed"] is True
    assert not output.exists() and not list(tmp_path.glob("*.manifest.json"))


def test_cli_refuses_pickles_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"not looked at")
    done = run_kiln("convert", str(tmp_path / "model.pkl"))
    assert done.returncode == 1
    assert "loading it runs code from the file; pass --allow-pickle" in done.stderr


def test_cli_bad_options_exit_2(tmp_path: Path) -> None:
    done = run_kiln("convert", str(tmp_path / "m.keras"), "--repository", str(tmp_path))
    assert done.returncode == 2 and "--repository needs --name" in done.stderr
    done = run_kiln("convert", str(tmp_path / "m.keras"), "--input", "pixels:FLOAT9:-1")
    assert done.returncode == 2 and "unknown datatype 'FLOAT9'" in done.stderr


def test_unknown_model_type_and_missing_framework() -> None:
    with pytest.raises(ConversionError, match=r"cannot tell which framework a builtins\.object"):
        convert(object())
    with pytest.raises(ConversionError) as info:
        require("kiln_no_such_framework", "torch")
    assert info.value.message.endswith("pip install 'kiln-ml[torch]'")
