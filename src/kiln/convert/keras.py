"""Keras / TensorFlow -> ONNX through tf2onnx.

Takes a Keras model (object, ``.keras`` or ``.h5`` file) or a TensorFlow SavedModel
directory. Both become one ``tf.function`` with the serving signature: input names, datatypes
and shapes (``None`` stays dynamic, so the batch does) come from the model's inputs or from
the SavedModel's ``serving_default`` signature, outputs are named as TensorFlow Serving names
them (a dict's keys, else ``output_0``, ``output_1``, ...), and tf2onnx converts that function.

NOTE: a dict of outputs is ordered by key, as ``tf.nest`` orders it in the converted graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kiln.convert.base import (
    ConversionError,
    ExportRequest,
    Reference,
    SourceInfo,
    require,
    version_of,
)
from kiln.convert.graph import name_outputs, unknown_ops
from kiln.convert.inputs import choose_specs
from kiln.tensors import DataType, TensorDict, TensorSpec

_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


class KerasConverter:
    """``kiln.convert`` for Keras models and TensorFlow SavedModels."""

    name = "keras"

    def handles(self, model: object) -> bool:
        if isinstance(model, str | Path):
            path = Path(model)
            return path.suffix in _KERAS_SUFFIXES or (path / "saved_model.pb").is_file()
        module = type(model).__module__
        return module.startswith(("keras", "tf_keras", "tensorflow"))

    def load(self, path: Path, *, allow_pickle: bool) -> object:
        if path.is_dir():
            return _tf().saved_model.load(str(path))
        keras = require("keras", "keras")
        return keras.models.load_model(str(path), compile=False)

    def default_input_names(self, model: object, count: int) -> list[str]:
        names = [s.name for s in _model_specs(model)]
        return names if len(names) == count else [f"input_{i}" for i in range(count)]

    def input_specs(self, model: object, examples: TensorDict | None,
                    declared: Sequence[TensorSpec] | None) -> tuple[TensorSpec, ...]:
        return choose_specs(declared, examples, model_specs=_model_specs(model), missing=(
            "this Keras model declares no inputs (a subclassed model that was never built); "
            "give example inputs or declare the inputs"))

    def export(self, model: object, request: ExportRequest) -> Any:
        tf = _tf()
        tf2onnx = require("tf2onnx", "keras")
        signature = [tf.TensorSpec([None if d == -1 else d for d in s.shape],
                                   tf.as_dtype(s.datatype.numpy), name=s.name)
                     for s in request.inputs]
        call = _caller(model, request.inputs)
        function = tf.function(lambda *args: dict(_named(call(*args))),
                               input_signature=signature)
        proto, _ = tf2onnx.convert.from_function(function, input_signature=signature,
                                                 opset=request.opset)
        missing = unknown_ops(proto)
        if missing:
            raise ConversionError(
                f"TensorFlow operation {', '.join(missing)} has no ONNX conversion in "
                f"tf2onnx (opset {request.opset}); replace the layer that uses it with "
                "standard layers, or try a newer opset"
            )
        name_outputs(proto, request.output_names)
        return proto

    def reference(self, model: object, inputs: Sequence[TensorSpec]) -> Reference:
        tf = _tf()
        call = _caller(model, inputs)

        def run(tensors: TensorDict) -> list[np.ndarray]:
            args = [tf.constant(tensors[s.name]) for s in inputs]
            return [np.asarray(v) for _, v in _named(call(*args))]

        return run

    def source(self, model: object) -> SourceInfo:
        tf = _tf()
        kind = type(model)
        saved_model = _serving_function(model) is not None
        framework, version = (("tensorflow", tf.__version__) if saved_model
                              else ("keras", version_of("keras")))
        return SourceInfo(framework=framework, framework_version=version,
                          converter="tf2onnx", converter_version=version_of("tf2onnx"),
                          model_type=f"{kind.__module__}.{kind.__qualname__}")


def _tf() -> Any:
    return require("tensorflow", "keras")


def _serving_function(model: object) -> Any:
    signatures = getattr(model, "signatures", None)
    if not signatures or getattr(model, "inputs", None) is not None:
        return None
    return signatures.get("serving_default") or next(iter(signatures.values()))


def _model_specs(model: object) -> tuple[TensorSpec, ...]:
    """Inputs from a SavedModel's serving signature or a Keras model's ``inputs``."""
    function = _serving_function(model)
    if function is not None:
        tensors = list(function.structured_input_signature[1].values())
    else:
        tensors = list(getattr(model, "inputs", None) or [])
    return tuple(
        TensorSpec(str(t.name), DataType.from_numpy(np.dtype(_dtype_name(t.dtype))),
                   tuple(-1 if d is None else int(d) for d in t.shape))
        for t in tensors
    )


def _dtype_name(dtype: object) -> str:
    return str(getattr(dtype, "name", dtype))


def _caller(model: Any, inputs: Sequence[TensorSpec]) -> Any:
    """A function of the inputs in order that calls the model the way it expects."""
    function = _serving_function(model)
    names = [s.name for s in inputs]
    if function is not None:
        return lambda *args: function(**dict(zip(names, args, strict=True)))
    if len(names) == 1:
        return lambda arg: model(arg, training=False)
    return lambda *args: model(list(args), training=False)


def _named(result: object) -> list[tuple[str, Any]]:
    """Outputs named as TensorFlow Serving names them, in the converted graph's order."""
    if isinstance(result, dict):
        return sorted(result.items())
    if isinstance(result, list | tuple):
        return [(f"output_{i}", v) for i, v in enumerate(result)]
    return [("output_0", result)]
