"""scikit-learn -> ONNX through skl2onnx.

Estimators and pipelines take one input (default name ``input``) whose datatype and width
come from the sample data (or ``n_features_in_`` as FP32 without one); the batch stays
dynamic. Classifiers give ``label`` and ``probabilities`` (a plain tensor, no ZipMap),
regressors ``predictions`` as a column ``[batch, 1]`` (skl2onnx's layout), transformers
``output``.

NOTE: ``.joblib`` / ``.pkl`` files are pickles, and loading a pickle runs code from it; they
are only loaded with ``allow_pickle=True`` (``--allow-pickle``), for files you trust.
"""

from __future__ import annotations

import re
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
from kiln.convert.graph import name_outputs
from kiln.convert.inputs import specs_from_examples
from kiln.tensors import DataType, TensorDict, TensorSpec

_PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


class SklearnConverter:
    """``kiln.convert`` for scikit-learn estimators and pipelines."""

    name = "sklearn"

    def handles(self, model: object) -> bool:
        if isinstance(model, str | Path):
            return Path(model).suffix in _PICKLE_SUFFIXES
        return any(c.__module__.startswith("sklearn.") and c.__name__ == "BaseEstimator"
                   for c in type(model).__mro__)

    def load(self, path: Path, *, allow_pickle: bool) -> object:
        if not allow_pickle:
            raise ConversionError(
                f"'{path}' is a pickle, and loading it runs code from the file; pass "
                "--allow-pickle (allow_pickle=True) if you trust it"
            )
        joblib = require("joblib", "sklearn")
        return joblib.load(path)

    def default_input_names(self, model: object, count: int) -> list[str]:
        return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]

    def input_specs(self, model: object, examples: TensorDict | None,
                    declared: Sequence[TensorSpec] | None) -> tuple[TensorSpec, ...]:
        if declared:
            specs = tuple(declared)
        elif examples is not None:
            specs = specs_from_examples(examples)
        else:
            width = getattr(model, "n_features_in_", None)
            if width is None:
                raise ConversionError(
                    f"{type(model).__name__} is not fitted or does not say how many features "
                    "it takes; give sample data"
                )
            specs = (TensorSpec("input", DataType.FP32, (-1, int(width))),)
        if len(specs) != 1 or len(specs[0].shape) != 2:
            raise ConversionError(
                "scikit-learn models take one 2-D input [batch, features]; got "
                + ", ".join(f"{s.name} {s.describe_shape()}" for s in specs)
            )
        return specs

    def export(self, model: object, request: ExportRequest) -> Any:
        skl2onnx = require("skl2onnx", "sklearn")
        from skl2onnx.common.data_types import guess_data_type
        from sklearn.base import is_classifier

        spec = request.inputs[0]
        sample = request.sample[spec.name]
        tensor_type = type(guess_data_type(sample[:1])[0][1])
        initial = [(spec.name, tensor_type([None, sample.shape[1]]))]
        try:
            proto = skl2onnx.to_onnx(model, initial_types=initial, target_opset=request.opset,
                                     options={"zipmap": False} if is_classifier(model) else None)
        except RuntimeError as exc:
            raise _explain(model, exc) from exc
        name_outputs(proto, request.output_names or _output_names(model, len(proto.graph.output)))
        return proto

    def reference(self, model: Any, inputs: Sequence[TensorSpec]) -> Reference:
        from sklearn.base import is_classifier

        name = inputs[0].name
        if is_classifier(model):
            return lambda t: [model.predict(t[name]), model.predict_proba(t[name])]
        if hasattr(model, "transform"):
            return lambda t: [np.asarray(model.transform(t[name]))]
        # skl2onnx gives predictions as a column, [batch, 1] (or [batch, targets])
        return lambda t: [np.asarray(model.predict(t[name])).reshape(len(t[name]), -1)]

    def source(self, model: object) -> SourceInfo:
        kind = type(model)
        return SourceInfo(framework="sklearn", framework_version=version_of("scikit-learn"),
                          converter="skl2onnx", converter_version=version_of("skl2onnx"),
                          model_type=f"{kind.__module__}.{kind.__qualname__}")


def _output_names(model: object, count: int) -> list[str]:
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(model) and count == 2:
        return ["label", "probabilities"]
    if count == 1:
        return ["predictions" if is_regressor(model) else "output"]
    return [f"output_{i}" for i in range(count)]


def _explain(model: object, exc: RuntimeError) -> ConversionError:
    """skl2onnx's "no converter" error, naming the pipeline step it came from."""
    found = re.search(r"for type '<class '([\w.<>]+)'>'", str(exc))
    if not found:
        return ConversionError(f"skl2onnx could not convert {type(model).__name__}: {exc}")
    class_name = found.group(1).rsplit(".", 1)[-1]
    step = next((n for n, s in _steps(model) if type(s).__name__ == class_name), None)
    where = f"pipeline step '{step}' ({class_name})" if step else f"estimator {class_name}"
    return ConversionError(
        f"{where} has no ONNX converter in skl2onnx; replace it with a supported estimator, "
        "or register a converter for it with skl2onnx.update_registered_converter"
    )


def _steps(model: object) -> list[tuple[str, Any]]:
    """(name, estimator) of every step in nested pipelines and column transformers."""
    found = []
    for attribute in ("steps", "transformers", "transformer_list"):
        for item in getattr(model, attribute, None) or []:
            name, step = item[0], item[1]
            found.append((name, step))
            found.extend(_steps(step))
    return found
