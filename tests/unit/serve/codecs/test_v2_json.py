"""The V2 JSON codec against golden request and response documents."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from kiln.errors import InvalidArgument
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.codecs.v2_json import (
    decode_infer_request,
    encode_infer_response,
    encode_model_metadata,
)
from kiln.serve.messages import InferenceRequest, InferenceResponse, ModelMetadata
from kiln.tensors import DataType, Signature, TensorSpec

#: The model the requests are for; the JSON forms decode whatever it declares.
SIGNATURE = Signature(inputs=(TensorSpec("x", DataType.FP32, (-1,)),), outputs=())

GOLDEN_REQUEST = b"""{
  "id": "42",
  "parameters": {"custom": "yes", "binary_data_output": false},
  "inputs": [
    {"name": "INPUT0", "shape": [2, 2], "datatype": "UINT32", "data": [[1, 2], [3, 4]]},
    {"name": "INPUT1", "shape": [3], "datatype": "BOOL", "data": [true, false, true]}
  ],
  "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": true}}]
}"""


def _decode(body: bytes, header_length: int | None = None) -> InferenceRequest:
    return decode_infer_request(SIGNATURE, body, model_name="m", model_version=None,
                                header_length=header_length, limits=DecodeLimits())


def test_golden_request() -> None:
    request = _decode(GOLDEN_REQUEST)
    assert request.id == "42"
    assert request.parameters == {"custom": "yes", "binary_data_output": False}
    assert request.inputs["INPUT0"].dtype == np.uint32
    assert request.inputs["INPUT0"].tolist() == [[1, 2], [3, 4]]
    assert request.inputs["INPUT1"].tolist() == [True, False, True]
    assert request.outputs is not None and request.outputs[0].parameters == {"binary_data": True}


def test_binary_extension_example_sizes() -> None:
    """The extension's own example: a 2x2 UINT32 (16 bytes) and a 3-element BOOL (3 bytes)."""
    header = orjson.dumps({"inputs": [
        {"name": "INPUT0", "shape": [2, 2], "datatype": "UINT32",
         "parameters": {"binary_data_size": 16}},
        {"name": "INPUT1", "shape": [3], "datatype": "BOOL",
         "parameters": {"binary_data_size": 3}}]})
    blob = np.array([[1, 2], [3, 4]], dtype="<u4").tobytes() + bytes([1, 0, 1])
    request = _decode(header + blob, len(header))
    assert request.inputs["INPUT0"].tolist() == [[1, 2], [3, 4]]
    assert request.inputs["INPUT1"].tolist() == [True, False, True]


def test_golden_response_json_and_binary() -> None:
    request = _decode(GOLDEN_REQUEST)
    response = InferenceResponse(
        model_name="m", model_version="3", id="42",
        outputs={"OUTPUT0": np.array([[1.5, 2.5]], dtype=np.float32),
                 "OUTPUT1": np.array([b"a", b"bc"], dtype=object)},
    )
    request.outputs = None
    body, length = encode_infer_response(response, request)
    assert length is None
    assert orjson.loads(body) == {
        "model_name": "m", "model_version": "3", "id": "42",
        "outputs": [
            {"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]},
            {"name": "OUTPUT1", "datatype": "BYTES", "shape": [2], "data": ["a", "bc"]},
        ],
    }
    request.parameters["binary_data_output"] = True
    body, length = encode_infer_response(response, request)
    assert length is not None
    header = orjson.loads(body[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [8, 4 + 1 + 4 + 2]
    assert body[length:length + 8] == np.array([1.5, 2.5], dtype="<f4").tobytes()
    assert body[length + 8:] == b"\x01\x00\x00\x00a\x02\x00\x00\x00bc"


def test_golden_model_metadata() -> None:
    meta = ModelMetadata(name="digits", versions=("1",), platform="onnxruntime_onnx",
                         inputs=(TensorSpec("pixels", DataType.FP32, (-1, 64)),),
                         outputs=(TensorSpec("label", DataType.INT64, (-1,)),))
    assert orjson.loads(encode_model_metadata(meta)) == {
        "name": "digits", "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
    }


@pytest.mark.parametrize(("data", "datatype", "word"), [
    (b"[1.5, 2.0]", "INT32", "integers"),
    (b"[18446744073709551616, 1]", "UINT64", "integers"),
    (b"[-1, 1]", "UINT8", "range"),
    (b'[true, "x"]', "BOOL", "true/false"),
])
def test_json_values_are_checked(data: bytes, datatype: str, word: str) -> None:
    body = (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "' + datatype.encode()
            + b'", "data": ' + data + b"}]}")
    with pytest.raises(InvalidArgument, match=word):
        _decode(body)


def test_uint64_full_range() -> None:
    body = (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "UINT64", '
            b'"data": [18446744073709551615, 1]}]}')
    assert _decode(body).inputs["x"].tolist() == [2**64 - 1, 1]
