"""KServe V2 (Open Inference Protocol) JSON, with Triton's binary tensor data extension.

A request body is a JSON header optionally followed by raw tensor bytes; the header's
length comes from the ``Inference-Header-Content-Length`` HTTP header (the adapter passes
it in). Responses mirror that: outputs asked for in binary follow the JSON header.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from kiln.errors import InvalidArgument
from kiln.serve.codecs.binary import decode_tensor, encode_tensor
from kiln.serve.codecs.checks import check_shape, count_elements, parse_datatype
from kiln.serve.codecs.json_tensors import json_to_array, loads
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.messages import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    RequestedOutput,
    ServerMetadata,
)
from kiln.tensors import DataType, Signature, TensorSpec

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
#: The HTTP header (lower case) giving the length of the JSON part of a binary request.
HEADER_LENGTH = b"inference-header-content-length"


def decode_infer_request(
    signature: Signature,
    body: bytes,
    *,
    model_name: str,
    model_version: str | None,
    header_length: bytes | int | None,
    limits: DecodeLimits,
) -> InferenceRequest:
    """Decode a V2 inference request (JSON, JSON + binary, or a raw binary single input) for
    a model of ``signature``; ``header_length`` is the ``Inference-Header-Content-Length``
    header as sent (or its value), ``None`` when there is none."""
    view = memoryview(body)
    header_length = _header_length(header_length)
    if header_length == 0:
        if len(signature.inputs) != 1:
            raise InvalidArgument(
                f"a raw binary request (Inference-Header-Content-Length: 0) needs a model "
                f"with one input; model '{model_name}' has {len(signature.inputs)}"
            )
        return _raw_binary_request(view, model_name, model_version, signature.inputs[0],
                                   limits)
    if header_length is not None and header_length > len(body):
        raise InvalidArgument(
            f"Inference-Header-Content-Length is {header_length} but the body has only "
            f"{len(body)} bytes"
        )
    split = header_length if header_length is not None else len(body)
    doc = loads(view[:split], "inference request header")
    if not isinstance(doc, dict):
        raise InvalidArgument("inference request must be a JSON object")
    binary = view[split:]
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidArgument("field 'id' must be a string")
    parameters = _parameters(doc.get("parameters"), "request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidArgument("field 'inputs' must be a non-empty list of input tensors")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for index, item in enumerate(raw_inputs):
        name, array, used = _decode_input(item, index, binary[offset:], limits)
        if name in inputs:
            raise InvalidArgument(f"input '{name}' appears twice in the request")
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise InvalidArgument(
            f"the body holds {len(binary) - offset} bytes of binary data that no input "
            "claims (check binary_data_size and Inference-Header-Content-Length)"
        )
    return InferenceRequest(
        model_name=model_name, model_version=model_version, id=request_id,
        parameters=parameters, inputs=inputs, outputs=_requested_outputs(doc.get("outputs")),
    )


def _header_length(raw: bytes | int | None) -> int | None:
    if raw is None or isinstance(raw, int):
        return raw
    if not raw.isdigit():
        raise InvalidArgument("Inference-Header-Content-Length must be a non-negative integer")
    return int(raw)


def _decode_input(item: Any, index: int, binary: memoryview,
                  limits: DecodeLimits) -> tuple[str, np.ndarray, int]:
    if not isinstance(item, dict):
        raise InvalidArgument(f"inputs[{index}] must be a JSON object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"inputs[{index}] needs a 'name' string")
    what = f"input '{name}'"
    datatype = parse_datatype(item.get("datatype"), what)
    shape = check_shape(item.get("shape"), what, limits)
    count = count_elements(shape, what, limits)
    params = _parameters(item.get("parameters"), what)
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f"{what}: binary_data_size must be a non-negative integer")
        if "data" in item:
            raise InvalidArgument(f"{what} has both 'data' and binary_data_size; send one")
        if size > len(binary):
            raise InvalidArgument(
                f"{what} declares binary_data_size {size} but only {len(binary)} bytes of "
                "binary data remain in the body"
            )
        return name, decode_tensor(binary[:size], datatype, shape, count, what=what), size
    if "data" not in item:
        raise InvalidArgument(f"{what} has no 'data' (and no binary_data_size parameter)")
    if not datatype.json_capable:
        raise InvalidArgument(
            f"{what}: {datatype.v2} data cannot travel as JSON; send it as binary data "
            "(binary_data_size parameter)"
        )
    return name, json_to_array(item["data"], datatype, shape, count, what=what, limits=limits), 0


def _raw_binary_request(body: memoryview, model_name: str, model_version: str | None,
                        spec: TensorSpec, limits: DecodeLimits) -> InferenceRequest:
    what = f"input '{spec.name}'"
    if spec.datatype is DataType.BYTES:
        array = decode_tensor(body, spec.datatype, (1,), 1, what=what)
    else:
        known = 1
        for d in spec.shape[1:]:
            known *= max(d, 1)
        per_row = known * spec.datatype.itemsize
        if per_row == 0 or len(body) % per_row:
            raise InvalidArgument(
                f"{what}: {len(body)} raw bytes do not fill whole rows of {per_row} bytes"
            )
        shape = tuple(len(body) // per_row if d == -1 else d for d in spec.shape)
        count = count_elements(shape, what, limits)
        array = decode_tensor(body, spec.datatype, shape, count, what=what)
    return InferenceRequest(model_name=model_name, model_version=model_version,
                            inputs={spec.name: array},
                            parameters={"binary_data_output": True})


def _parameters(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} 'parameters' must be a JSON object")
    for key, item in value.items():
        if not isinstance(item, bool | int | float | str):
            raise InvalidArgument(
                f"{what} parameter '{key}' must be a boolean, number or string"
            )
    return value


def _requested_outputs(value: Any) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidArgument("field 'outputs' must be a list of {\"name\": ...} objects")
    result = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidArgument(f"outputs[{index}] needs a 'name' string")
        result.append(RequestedOutput(item["name"], _parameters(item.get("parameters"),
                                                                f"output '{item['name']}'")))
    return result


def encode_infer_response(response: InferenceResponse,
                          request: InferenceRequest) -> tuple[bytes, int | None]:
    """Encode a response; returns the body and the JSON header length when binary follows."""
    default_binary = bool(request.parameters.get("binary_data_output", False))
    wanted = {o.name: o.parameters for o in request.outputs} if request.outputs else {}
    outputs, blobs = [], []
    for name, array in response.outputs.items():
        datatype = DataType.from_numpy(array.dtype)
        binary = bool(wanted.get(name, {}).get("binary_data", default_binary))
        entry: dict[str, Any] = {"name": name, "datatype": datatype.v2, "shape": array.shape}
        if binary or not datatype.json_capable:
            blob = encode_tensor(array, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype is DataType.BYTES:
            entry["data"] = [_text(item, name) for item in array.reshape(-1)]
        else:
            entry["data"] = np.ascontiguousarray(array).reshape(-1)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name,
                           "model_version": response.model_version}
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _text(item: Any, name: str) -> str:
    if isinstance(item, str):
        return item
    try:
        return bytes(item).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(
            f"output '{name}' holds bytes that are not UTF-8 text; request it with "
            "binary_data: true"
        ) from None


def encode_server_metadata(meta: ServerMetadata) -> bytes:
    return orjson.dumps({"name": meta.name, "version": meta.version,
                         "extensions": list(meta.extensions)})


def encode_model_metadata(meta: ModelMetadata) -> bytes:
    return orjson.dumps({
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": [_tensor_metadata(s) for s in meta.inputs],
        "outputs": [_tensor_metadata(s) for s in meta.outputs],
    })


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype.v2, "shape": list(spec.shape)}
