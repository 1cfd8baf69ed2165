"""TensorFlow Serving's Example-based ``:classify`` and ``:regress`` on ONNX models.

A request holds ``examples`` (a list of objects, feature name -> value or flat list) and an
optional ``context`` of features shared by every example. Each model input is fed by the
feature of the same name: the examples' values, one row each, reshaped to the input's
shape (``[batch]`` takes one value per example, ``[batch, n]`` a list of n, a fully known
``[batch, d1, d2, ...]`` a flat list of d1*d2*... values). Features no input names are
ignored, as TensorFlow's example parsing ignores them.

Which models qualify:

- ``:classify``: a float output of shape ``[batch, classes]`` holds the scores (the one
  such output, or the one named ``scores``). An INT32/INT64/BYTES output of the same shape
  (the one such output, or the one named ``classes``) gives the labels; without it the
  label is the class index as text. Answer: ``{"results": [[[label, score], ...], ...]}``.
- ``:regress``: a float output of shape ``[batch]`` or ``[batch, 1]`` (the one such output,
  or the one named ``outputs``). Answer: ``{"results": [value, ...]}``.

Any other model is answered 400 with the outputs it has.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.errors import InvalidArgument
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.codecs.tfserving import (
    check_signature_name,
    dumps,
    json_value,
    loads,
    number,
    value_to_array,
)
from kiln.serve.messages import InferenceRequest, RequestedOutput
from kiln.tensors import DataType, Signature, TensorDict, TensorSpec

_FLOATS = (DataType.FP16, DataType.FP32, DataType.FP64, DataType.BF16)
_LABELS = (DataType.INT32, DataType.INT64, DataType.BYTES)


def decode_classify(signature: Signature, body: bytes, *, model_name: str,
                    model_version: str | None, limits: DecodeLimits) -> InferenceRequest:
    """A ``:classify`` body -> a request for the scores (and labels) outputs; ``wire`` holds
    their names (scores, labels or ``None``)."""
    scores, labels = classify_outputs(signature, model_name)
    names = [scores] + ([labels] if labels else [])
    return _request(signature, body, model_name, model_version, limits, names,
                    (scores, labels))


def decode_regress(signature: Signature, body: bytes, *, model_name: str,
                   model_version: str | None, limits: DecodeLimits) -> InferenceRequest:
    """A ``:regress`` body -> a request for the regression output; ``wire`` is its name."""
    output = regress_output(signature, model_name)
    return _request(signature, body, model_name, model_version, limits, [output], output)


def _request(signature: Signature, body: bytes, model_name: str, model_version: str | None,
             limits: DecodeLimits, outputs: list[str], wire: object) -> InferenceRequest:
    inputs = decode_examples(body, signature, model_name=model_name, limits=limits)
    return InferenceRequest(model_name=model_name, model_version=model_version, inputs=inputs,
                            outputs=[RequestedOutput(n) for n in outputs], wire=wire)


def decode_examples(body: bytes, signature: Signature, *, model_name: str,
                    limits: DecodeLimits) -> TensorDict:
    """A ``:classify``/``:regress`` body -> one batched tensor per model input."""
    doc = loads(body)
    check_signature_name(doc, model_name)
    context = doc.get("context", {})
    if not isinstance(context, dict):
        raise InvalidArgument("field 'context' must be an object of features")
    examples = doc.get("examples")
    if not isinstance(examples, list) or not examples:
        raise InvalidArgument("field 'examples' must be a non-empty list of objects of "
                              "features")
    features = [_merge(context, example, i) for i, example in enumerate(examples)]
    tensors = {}
    for spec in signature.inputs:
        rows = [_feature(f, spec.name, i) for i, f in enumerate(features)]
        tensors[spec.name] = _batch(rows, spec, limits)
    return tensors


def _merge(context: dict[str, Any], example: Any, index: int) -> dict[str, Any]:
    if not isinstance(example, dict):
        raise InvalidArgument(f"examples[{index}] must be an object of features")
    repeated = context.keys() & example.keys()
    if repeated:
        raise InvalidArgument(f"examples[{index}] repeats context feature(s) "
                              f"{', '.join(sorted(repeated))}")
    return {**context, **example}


def _feature(example: dict[str, Any], name: str, index: int) -> list[Any]:
    if name not in example:
        raise InvalidArgument(f"examples[{index}] has no feature '{name}' (the model input "
                              "it feeds)")
    value = example[name]
    values = value if isinstance(value, list) else [value]
    if any(isinstance(v, list) for v in values):
        raise InvalidArgument(f"examples[{index}]: feature '{name}' must be a value or a "
                              "flat list of values")
    return values


def _batch(rows: list[list[Any]], spec: TensorSpec, limits: DecodeLimits) -> np.ndarray:
    what = f"feature '{spec.name}'"
    if len({len(r) for r in rows}) > 1:
        raise InvalidArgument(f"{what} has lists of different lengths across examples")
    array = value_to_array(rows, spec, what=what, limits=limits)
    row_shape = spec.shape[1:]
    if -1 in row_shape:
        if len(row_shape) == 1:
            return array
        raise InvalidArgument(
            f"input '{spec.name}' has shape {spec.describe_shape()}; features are flat "
            "lists, so they can feed inputs of shape [batch], [batch, n] or a fully known "
            "shape only"
        )
    size = int(np.prod(row_shape)) if row_shape else 1
    if array.shape[1] != size:
        raise InvalidArgument(f"{what} needs {size} value(s) per example for input shape "
                              f"{spec.describe_shape()}, got {array.shape[1]}")
    return array.reshape((len(rows), *row_shape))


def classify_outputs(signature: Signature, model_name: str) -> tuple[str, str | None]:
    """(scores output, labels output or ``None``); 400 when the model cannot classify."""
    scores = _pick([s for s in signature.outputs
                    if s.datatype in _FLOATS and len(s.shape) == 2], "scores")
    if scores is None:
        raise InvalidArgument(
            f"model '{model_name}' cannot serve :classify: it needs one float output of shape "
            f"[batch, classes] (the scores); its outputs are {_describe(signature)}"
        )
    labels = _pick([s for s in signature.outputs if s.datatype in _LABELS
                    and len(s.shape) == 2 and s.name != scores.name], "classes")
    return scores.name, labels.name if labels else None


def regress_output(signature: Signature, model_name: str) -> str:
    """The output that holds the regression values; 400 when the model has none."""
    found = _pick([s for s in signature.outputs if s.datatype in _FLOATS
                   and (len(s.shape) == 1 or (len(s.shape) == 2 and s.shape[1] == 1))],
                  "outputs")
    if found is None:
        raise InvalidArgument(
            f"model '{model_name}' cannot serve :regress: it needs one float output of shape "
            f"[batch] or [batch, 1]; its outputs are {_describe(signature)}"
        )
    return found.name


def _pick(candidates: list[TensorSpec], preferred: str) -> TensorSpec | None:
    if len(candidates) == 1:
        return candidates[0]
    return next((s for s in candidates if s.name == preferred), None)


def _describe(signature: Signature) -> str:
    return ", ".join(f"{s.name} {s.datatype.v2} {s.describe_shape()}"
                     for s in signature.outputs)


def encode_classify(scores: np.ndarray, labels: np.ndarray | None) -> bytes:
    """``{"results": [[[label, score], ...] per example]}``."""
    if labels is not None and labels.shape != scores.shape:
        raise InvalidArgument(f"the model's labels have shape {list(labels.shape)} but its "
                              f"scores have {list(scores.shape)}; they must match")
    if scores.dtype != np.float64:
        scores = scores.astype(np.float32, copy=False)
    if labels is None:
        names = [str(j) for j in range(scores.shape[1])]
        text = [names] * scores.shape[0]
    else:
        text = [[_label(x) for x in row] for row in labels]
    results = [[[t, number(s)] for t, s in zip(row_text, row, strict=True)]
               for row_text, row in zip(text, scores, strict=True)]
    return dumps({"results": results})


def _label(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def encode_regress(values: np.ndarray) -> bytes:
    """``{"results": [value per example]}``."""
    return dumps({"results": json_value(values.reshape(len(values)), "")})
