"""TensorFlow Serving REST JSON: ``:predict`` bodies, model status and model metadata.

The wire rules follow TF Serving's ``json_tensor.cc``:

- a request carries ``instances`` (row format: one element per example, each the tensor
  value of the single input or an object keyed by input name) or ``inputs`` (columnar
  format: the whole tensor of the single input, or an object of named tensors);
- JSON carries no datatypes, so values are read with the model's signature;
- binary strings travel as ``{"b64": "<base64>"}``, in and out; a string output whose name
  ends in ``_bytes`` is always sent that way;
- float data may hold the tokens ``NaN``, ``Infinity`` and ``-Infinity``, in and out.

For example, with a model taking ``x`` FP32 [-1, 2] and returning ``y``::

    decode_predict(signature, b'{"instances": [[1.0, NaN]]}', model_name="m",
                   model_version=None, limits=limits)
    # -> InferenceRequest(inputs={"x": array([[1., nan]])}, wire=ROW)
    encode_predict({"y": np.array([[1.0, np.inf]], np.float32)}, row_format=True)
    # -> b'{"predictions":[[1.0,Infinity]]}'
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import orjson

from kiln.errors import InvalidArgument
from kiln.serve.codecs.json_tensors import json_to_array
from kiln.serve.codecs.json_tensors import loads as strict_loads
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.messages import InferenceRequest, State, VersionStatus
from kiln.tensors import DataType, Signature, TensorDict, TensorSpec, element_count, format_shape

#: The one signature an ONNX model has, under TF Serving's default key.
SIGNATURE_NAME = "serving_default"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_NON_FINITE = re.compile(rb"NaN|Infinity")
_NULL = re.compile(rb"null")
#: Registry states in TF Serving's ``ModelVersionStatus.State`` names.
_TF_STATE = {State.LOADING: "LOADING", State.READY: "AVAILABLE",
             State.UNLOADING: "UNLOADING", State.UNAVAILABLE: "END"}


#: The two request formats of ``:predict`` (``InferenceRequest.wire``).
ROW, COLUMNAR = "row", "columnar"


def loads(body: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object.

    orjson is the fast path; only a body it refuses that holds ``NaN``/``Infinity`` tokens
    is parsed again by the standard library, which accepts them as TF Serving does.
    """
    try:
        doc = strict_loads(body)
    except InvalidArgument:
        if _NON_FINITE.search(body) is None:
            raise
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise InvalidArgument(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("request body must be a JSON object")
    return doc


def check_signature_name(doc: dict[str, Any], model_name: str) -> None:
    """``signature_name`` may be left out or name the model's only signature."""
    name = doc.get("signature_name")
    if name is None or name in ("", SIGNATURE_NAME):
        return
    if not isinstance(name, str):
        raise InvalidArgument("field 'signature_name' must be a string")
    raise InvalidArgument(
        f"model '{model_name}' has no signature '{name[:64]}'; its only signature is "
        f"'{SIGNATURE_NAME}'"
    )


def decode_predict(signature: Signature, body: bytes, *, model_name: str,
                   model_version: str | None, limits: DecodeLimits) -> InferenceRequest:
    """Decode a ``:predict`` body against the model's signature; ``wire`` of the request
    says which format the answer takes (``ROW``: ``instances`` were sent, so
    ``predictions`` answer; ``COLUMNAR``: ``inputs`` and ``outputs``)."""
    doc = loads(body)
    check_signature_name(doc, model_name)
    if "instances" in doc and "inputs" in doc:
        raise InvalidArgument("send one of 'instances' (row format) or 'inputs' (columnar), "
                              "not both")
    if "instances" in doc:
        inputs = _from_instances(doc["instances"], signature, model_name, limits)
    elif "inputs" in doc:
        inputs = _from_inputs(doc["inputs"], signature, model_name, limits)
    else:
        raise InvalidArgument("request needs an 'instances' (row format) or 'inputs' "
                              "(columnar format) field")
    return InferenceRequest(model_name=model_name, model_version=model_version, inputs=inputs,
                            wire=ROW if "instances" in doc else COLUMNAR)


def _is_named(value: Any) -> bool:
    """An object of named tensors, as opposed to a ``{"b64": ...}`` value."""
    return isinstance(value, dict) and not _is_b64(value)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _from_inputs(value: Any, signature: Signature, model: str,
                 limits: DecodeLimits) -> TensorDict:
    if not _is_named(value):
        spec = _single_input(signature, model, "'inputs' is a single tensor")
        return {spec.name: value_to_array(value, spec, what=f"input '{spec.name}'",
                                          limits=limits)}
    return {name: value_to_array(item, _input(signature, name, model),
                                 what=f"input '{name}'", limits=limits)
            for name, item in value.items()}


def _from_instances(value: Any, signature: Signature, model: str,
                    limits: DecodeLimits) -> TensorDict:
    if not isinstance(value, list) or not value:
        raise InvalidArgument("field 'instances' must be a non-empty list, one element per "
                              "example")
    if not _is_named(value[0]):
        spec = _single_input(signature, model, "'instances' holds plain values")
        return {spec.name: _stack(value, spec, _plain, limits)}
    names = list(value[0])
    for index, item in enumerate(value):
        if not _is_named(item) or set(item) != set(names):
            raise InvalidArgument(
                f"instances[{index}] must be an object with the keys of instances[0] "
                f"({', '.join(names)})"
            )
    return {name: _stack(value, _input(signature, name, model), _key(name), limits)
            for name in names}


def _key(name: str) -> Callable[[Any, int], Any]:
    def pick(item: Any, index: int) -> Any:
        return item[name]

    return pick


def _plain(item: Any, index: int) -> Any:
    if _is_named(item):
        raise InvalidArgument(f"instances[{index}] is an object but instances[0] is not; "
                              "send all plain values or all objects")
    return item


def _stack(instances: list[Any], spec: TensorSpec, pick: Callable[[Any, int], Any],
           limits: DecodeLimits) -> np.ndarray:
    """Batch one input's per-instance values; every instance must have the same shape."""
    values = [pick(item, i) for i, item in enumerate(instances)]
    first = _shape_of(values[0], f"input '{spec.name}'", limits)
    for index, item in enumerate(values):
        shape = _shape_of(item, f"input '{spec.name}'", limits)
        if shape != first:
            raise InvalidArgument(
                f"instances[{index}]: input '{spec.name}' has shape {format_shape(shape)} "
                f"but instances[0] has {format_shape(first)}; every instance must have the "
                "same shape"
            )
    return value_to_array(values, spec, what=f"input '{spec.name}'", limits=limits)


def _single_input(signature: Signature, model: str, what: str) -> TensorSpec:
    if len(signature.inputs) != 1:
        raise InvalidArgument(
            f"{what}, but model '{model}' has {len(signature.inputs)} inputs "
            f"({', '.join(s.name for s in signature.inputs)}); key the values by input name"
        )
    return signature.inputs[0]


def _input(signature: Signature, name: str, model: str) -> TensorSpec:
    spec = signature.input(name)
    if spec is None:
        raise InvalidArgument(
            f"model '{model}' has no input '{name[:64]}'; its inputs are "
            f"{', '.join(s.name for s in signature.inputs)}"
        )
    return spec


def value_to_array(value: Any, spec: TensorSpec, *, what: str,
                   limits: DecodeLimits) -> np.ndarray:
    """A JSON tensor value (scalar or nested lists) -> array of ``spec``'s datatype.

    The shape comes from the nesting; numbers are checked by the V2 codec's converter.
    """
    shape = _shape_of(value, what, limits)
    try:
        count = element_count(shape, limit=limits.max_elements)
    except ValueError as exc:
        raise InvalidArgument(f"{what}: {exc}") from None
    if spec.datatype is DataType.BYTES:
        flat: list[bytes] = []
        _collect_bytes(value, shape, 0, flat, what)
        out = np.empty(count, dtype=object)
        out[:] = flat
        return out.reshape(shape)
    return json_to_array(value, spec.datatype, shape, count, what=what, limits=limits)


def _shape_of(value: Any, what: str, limits: DecodeLimits) -> tuple[int, ...]:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > limits.max_rank:
            raise InvalidArgument(f"{what}: nested deeper than the rank limit {limits.max_rank}")
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _collect_bytes(value: Any, shape: tuple[int, ...], level: int, out: list[bytes],
                   what: str) -> None:
    if level == len(shape):
        out.append(_leaf_bytes(value, what))
        return
    if not isinstance(value, list) or len(value) != shape[level]:
        raise InvalidArgument(f"{what}: nested lists are ragged; every list at one level "
                              "must have the same length")
    for item in value:
        _collect_bytes(item, shape, level + 1, out, what)


def _leaf_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape, which the stdlib parser lets by
            raise InvalidArgument(f"{what}: a string is not valid Unicode text") from None
    if _is_b64(value):
        text = value["b64"]
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"{what}: {{\"b64\": ...}} holds invalid base64") from None
    if isinstance(value, list):
        raise InvalidArgument(f"{what}: nested lists are ragged; every list at one level "
                              "must have the same length")
    raise InvalidArgument(f"{what}: string data must be strings or {{\"b64\": ...}} objects")


def encode_predict(outputs: TensorDict, *, row_format: bool) -> bytes:
    """``{"predictions": ...}`` for row requests, ``{"outputs": ...}`` for columnar ones."""
    if not row_format:
        if len(outputs) == 1:
            ((name, array),) = outputs.items()
            return dumps({"outputs": json_value(array, name)})
        return dumps({"outputs": {n: json_value(a, n) for n, a in outputs.items()}})
    batch = _row_batch(outputs)
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        return dumps({"predictions": json_value(array, name)})
    rows = [{n: json_value(a[i, ...], n) for n, a in outputs.items()} for i in range(batch)]
    return dumps({"predictions": rows})


def _row_batch(outputs: TensorDict) -> int:
    batch = None
    for name, array in outputs.items():
        if array.ndim == 0:
            raise InvalidArgument(f"output '{name}' is a scalar, so it has no rows; use the "
                                  "columnar format ('inputs')")
        if batch is not None and array.shape[0] != batch:
            raise InvalidArgument(
                f"output '{name}' has {array.shape[0]} rows but another output has {batch}; "
                "use the columnar format ('inputs')"
            )
        batch = array.shape[0]
    return batch or 0


def json_value(array: np.ndarray, name: str) -> Any:
    """An output array as something ``dumps`` writes the way TF Serving does."""
    datatype = DataType.from_numpy(array.dtype)
    if datatype is DataType.BYTES:
        return _strings(array, always_b64=name.endswith("_bytes"))
    if not datatype.json_capable:
        array = array.astype(np.float32)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return _with_tokens(array)
    if array.ndim == 0:
        # NOTE: orjson takes numpy scalars of some types only (not ``longlong``, which ONNX
        # Runtime returns for int64); Python numbers are exact, except that float32 must stay
        # float32 to be written as its shortest round-trip form.
        return np.float32(array) if array.dtype == np.float32 else array.item()
    return np.ascontiguousarray(array)


def _with_tokens(array: np.ndarray) -> orjson.Fragment:
    """orjson writes non-finite floats as ``null``; put TF Serving's tokens in their place."""
    if array.ndim == 0:
        raw = orjson.dumps(array.reshape(1), option=_NUMPY)[1:-1]
    else:
        raw = orjson.dumps(np.ascontiguousarray(array), option=_NUMPY)
    bad = array[~np.isfinite(array)]
    tokens = iter(b"NaN" if np.isnan(x) else b"Infinity" if x > 0 else b"-Infinity"
                  for x in bad)
    return orjson.Fragment(_NULL.sub(lambda _: next(tokens), raw))


def _strings(array: np.ndarray, *, always_b64: bool) -> Any:
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    for i, item in enumerate(array.reshape(-1)):
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        flat[i] = _b64(raw) if always_b64 else _text_or_b64(raw)
    return out.tolist()


def _b64(raw: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(raw).decode("ascii")}


def _text_or_b64(raw: bytes) -> str | dict[str, str]:
    """UTF-8 text as a string; other bytes as ``{"b64": ...}`` (JSON strings are text)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _b64(raw)


def number(value: Any) -> Any:
    """One float for ``dumps``: itself, or the TF Serving token when it is not finite."""
    if np.isfinite(value):
        return value
    return orjson.Fragment(b"NaN" if np.isnan(value) else
                           b"Infinity" if value > 0 else b"-Infinity")


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=_NUMPY)


def encode_model_status(statuses: Iterable[VersionStatus]) -> bytes:
    """GetModelStatusResponse: newest version first, as TF Serving lists them."""
    return dumps({"model_version_status": [
        {"version": str(s.version), "state": _TF_STATE[s.state],
         "status": {"error_code": "UNKNOWN" if s.reason else "OK",
                    "error_message": s.reason}}
        for s in sorted(statuses, key=lambda s: -s.version)
    ]})


def encode_model_metadata(name: str, version: int, signature: Signature) -> bytes:
    """GetModelMetadataResponse with the ``signature_def`` field, as TF Serving writes it."""
    return dumps({
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE_NAME: {
            "inputs": {s.name: _tensor_info(s) for s in signature.inputs},
            "outputs": {s.name: _tensor_info(s) for s in signature.outputs},
            "method_name": "tensorflow/serving/predict",
        }}}},
    })


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    return {
        "dtype": spec.datatype.tf,
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in spec.shape],
                         "unknown_rank": False},
        "name": spec.name,
    }
