"""The V2 gRPC codec, fed with messages built by Triton's own client library."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.descriptor import Descriptor
from tritonclient.grpc import service_pb2 as triton
from tritonclient.utils import serialize_byte_tensor

from kiln.errors import InvalidArgument
from kiln.proto import grpc_service_pb2 as pb
from kiln.serve.codecs import v2_grpc
from kiln.serve.codecs.binary import encode_tensor
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.messages import InferenceResponse
from kiln.tensors import DataType
from tests.samples import BYTES, sample

LIMITS = DecodeLimits()


def decode(message: triton.ModelInferRequest, limits: DecodeLimits = LIMITS):
    """Triton's message on the wire -> kiln's message -> decoded request."""
    wire = pb.ModelInferRequest.FromString(message.SerializeToString())
    return v2_grpc.decode_infer_request(wire, limits=limits)


def raw_request(arrays: dict[str, tuple[DataType, np.ndarray]]) -> triton.ModelInferRequest:
    message = triton.ModelInferRequest(model_name="m")
    for name, (datatype, array) in arrays.items():
        message.inputs.add(name=name, datatype=datatype.v2, shape=array.shape)
        message.raw_input_contents.append(encode_tensor(array, datatype))
    return message


def typed_request(name: str, datatype: DataType, array: np.ndarray) -> triton.ModelInferRequest:
    message = triton.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name=name, datatype=datatype.v2, shape=array.shape)
    field = v2_grpc.CONTENTS[datatype][0]
    getattr(tensor.contents, field).extend(array.reshape(-1).tolist())
    return message


def _fields(descriptor: Descriptor) -> dict[int, tuple[str, int, bool, str]]:
    return {f.number: (f.name, f.type, f.is_repeated,
                       f.message_type.name if f.message_type else "")
            for f in descriptor.fields}


def test_messages_match_tritons_field_by_field() -> None:
    """Every message kiln defines has Triton's field numbers, names, types and labels."""
    compared = 0
    for name, ours in pb.DESCRIPTOR.message_types_by_name.items():
        theirs = triton.DESCRIPTOR.message_types_by_name[name]
        pending = [(ours, theirs)]
        while pending:
            a, b = pending.pop()
            assert _fields(a) == _fields(b), a.full_name
            nested = {n.name: n for n in b.nested_types}
            pending += [(n, nested[n.name]) for n in a.nested_types]
            compared += 1
    assert compared > 40


@pytest.mark.parametrize("datatype", list(DataType), ids=lambda d: d.v2)
def test_raw_contents_decode_every_datatype(datatype: DataType) -> None:
    array = sample(datatype)
    request = decode(raw_request({"x": (datatype, array)}))
    got = request.inputs["x"]
    assert got.shape == (2, 4)
    assert DataType.from_numpy(got.dtype) is datatype
    assert np.array_equal(got, array)


@pytest.mark.parametrize("datatype", list(v2_grpc.CONTENTS), ids=lambda d: d.v2)
def test_typed_contents_decode_every_typed_datatype(datatype: DataType) -> None:
    array = sample(datatype)
    got = decode(typed_request("x", datatype, array)).inputs["x"]
    assert got.dtype == array.dtype and got.shape == array.shape
    assert np.array_equal(got, array)


def test_request_fields_and_parameters() -> None:
    message = raw_request({"a": (DataType.INT32, sample(DataType.INT32))})
    message.model_version, message.id = "2", "req-1"
    message.parameters["priority"].int64_param = 1
    message.parameters["flag"].bool_param = True
    message.parameters["tag"].string_param = "x"
    message.parameters["scale"].double_param = 0.5
    output = message.outputs.add(name="y")
    output.parameters["classification"].int64_param = 3
    request = decode(message)
    assert (request.model_name, request.model_version, request.id) == ("m", "2", "req-1")
    assert request.parameters == {"priority": 1, "flag": True, "tag": "x", "scale": 0.5}
    assert request.outputs is not None
    assert [(o.name, o.parameters) for o in request.outputs] == [("y", {"classification": 3})]
    bare = decode(raw_request({"a": (DataType.INT32, sample(DataType.INT32))}))
    assert (bare.model_version, bare.id, bare.outputs) == (None, None, None)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda m: m.inputs[0].contents.fp32_contents.append(1.0), "never both"),
        (lambda m: m.raw_input_contents.append(b"\0" * 4), "2 raw_input_contents entries"),
        (lambda m: m.inputs[0].shape.__setitem__(1, -4), "non-negative integers"),
        (lambda m: m.inputs[0].shape.__setitem__(1, 5), "40 bytes, but 32 bytes were sent"),
        (lambda m: setattr(m.inputs[0], "datatype", "FLOAT"), "unknown datatype 'FLOAT'"),
        (lambda m: setattr(m, "model_name", ""), "'model_name' is required"),
        (lambda m: m.MergeFrom(m), "appears twice"),
    ],
    ids=["mixed", "raw-count", "negative-dim", "short-raw", "datatype", "model", "twice"],
)
def test_malformed_requests_are_named(mutate, expected: str) -> None:
    message = raw_request({"x": (DataType.FP32, sample(DataType.FP32))})
    mutate(message)
    with pytest.raises(InvalidArgument, match=expected):
        decode(message)


def test_limits_refuse_before_allocating() -> None:
    message = triton.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[1 << 20, 1 << 20])
    message.raw_input_contents.append(b"")
    with pytest.raises(InvalidArgument, match="more than 1000 elements"):
        decode(message, DecodeLimits(max_elements=1000))
    message.inputs[0].ClearField("shape")
    message.inputs[0].shape.extend([1] * 5)
    with pytest.raises(InvalidArgument, match="rank 5 exceeds the limit 4"):
        decode(message, DecodeLimits(max_rank=4))


@pytest.mark.parametrize(
    ("datatype", "field", "values", "expected"),
    [
        (DataType.FP16, "fp32_contents", [1.0], "FP16 has no typed contents; send it in raw"),
        (DataType.BF16, "fp32_contents", [1.0], "BF16 has no typed contents"),
        (DataType.INT32, "fp32_contents", [1.0], "INT32 but sends fp32_contents; INT32 data "
                                                 "goes in int_contents"),
        (DataType.INT8, "int_contents", [200], "outside the range of INT8"),
        (DataType.UINT16, "uint_contents", [70000], "outside the range of UINT16"),
        (DataType.FP32, "fp32_contents", [1.0, 2.0], r"shape \[1\] \(1 elements\) but "
                                                     "fp32_contents holds 2"),
    ],
)
def test_typed_contents_must_fit_the_datatype(datatype: DataType, field: str,
                                              values: list, expected: str) -> None:
    message = triton.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype=datatype.v2, shape=[1])
    getattr(tensor.contents, field).extend(values)
    with pytest.raises(InvalidArgument, match=expected):
        decode(message)


def _response(**outputs: np.ndarray) -> InferenceResponse:
    return InferenceResponse(model_name="m", model_version="1", outputs=outputs, id="r",
                             parameters={"big": 1 << 63, "n": -2, "ok": False})


def _as_triton(message: pb.ModelInferResponse) -> triton.ModelInferResponse:
    return triton.ModelInferResponse.FromString(message.SerializeToString())


def test_response_raw_reads_back_through_tritonclient() -> None:
    from tritonclient.grpc import InferResult

    arrays = {d.v2: sample(d) for d in DataType if d is not DataType.BF16}
    message = v2_grpc.encode_infer_response(_response(**arrays), raw=True)
    result = InferResult(_as_triton(message))
    for name, array in arrays.items():
        assert np.array_equal(result.as_numpy(name), array), name
    assert message.id == "r" and message.model_version == "1"
    assert v2_grpc.decode_parameters(message.parameters, "response") == {
        "big": 1 << 63, "n": -2, "ok": False}
    assert message.raw_output_contents[list(arrays).index("BYTES")] == serialize_byte_tensor(
        BYTES.reshape(2, 4)).item()


def test_response_typed_mirrors_a_typed_request() -> None:
    arrays = {d.v2: sample(d) for d in v2_grpc.CONTENTS}
    message = v2_grpc.encode_infer_response(_response(**arrays), raw=False)
    assert not message.raw_output_contents
    for tensor in message.outputs:
        datatype = DataType.from_v2(tensor.datatype)
        values = getattr(tensor.contents, v2_grpc.CONTENTS[datatype][0])
        expected = arrays[tensor.name].reshape(-1)
        assert list(tensor.shape) == [2, 4]
        assert np.array_equal(np.array(list(values), dtype=expected.dtype), expected)


def test_response_goes_raw_when_an_output_has_no_typed_field() -> None:
    message = v2_grpc.encode_infer_response(
        _response(a=sample(DataType.FP32), b=sample(DataType.FP16)), raw=False)
    assert len(message.raw_output_contents) == 2
    assert not message.outputs[0].HasField("contents")
    assert np.array_equal(np.frombuffer(message.raw_output_contents[1], "<f2").reshape(2, 4),
                          sample(DataType.FP16))
