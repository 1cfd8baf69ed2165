"""Property-based fuzzing of the wire codecs: whatever bytes or documents arrive, a decoder
either returns a request or raises a ``KilnError`` (a 4xx), never anything else."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln.errors import KilnError
from kiln.proto import grpc_service_pb2 as pb
from kiln.serve.codecs import binary, tfserving, tfserving_examples, v2_grpc, v2_json
from kiln.serve.codecs.limits import DecodeLimits
from kiln.tensors import DataType, Signature, TensorSpec

LIMITS = DecodeLimits(max_rank=8, max_elements=1 << 16, max_json_depth=16)
FUZZ = settings(max_examples=250, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SIGNATURE = Signature(
    inputs=(TensorSpec("x", DataType.FP32, (-1, 3)), TensorSpec("s", DataType.BYTES, (-1,)),
            TensorSpec("i", DataType.INT8, (-1, 2))),
    outputs=(TensorSpec("y", DataType.FP32, (-1, 3)),))

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                           max_leaves=40)
LEAVES = {DataType.BOOL: st.booleans(), DataType.BYTES: st.text(max_size=4),
          **{d: st.floats(width=32, allow_nan=False, allow_infinity=False)
             | st.integers(-300, 300) for d in (DataType.FP16, DataType.FP32, DataType.FP64,
                                                DataType.BF16)}}


def leaf(datatype: DataType) -> st.SearchStrategy[Any]:
    return LEAVES.get(datatype, st.integers(-(2**63), 2**64 - 1))


@st.composite
def corrupt(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """Usually the document as is; sometimes with one field replaced by any JSON value."""
    if document and draw(st.integers(0, 7)) == 0:
        key = draw(st.sampled_from([*document, "parameters"]))
        document = {**document, key: draw(json_values)}
    return document


def blob(datatype: DataType, count: int) -> st.SearchStrategy[bytes]:
    """Raw tensor bytes of the right size (BYTES: length-prefixed elements)."""
    if datatype is DataType.BYTES:
        return st.lists(st.binary(max_size=4), min_size=count, max_size=count).map(
            lambda items: b"".join(len(i).to_bytes(4, "little") + i for i in items))
    size = count * datatype.itemsize
    return st.binary(min_size=size, max_size=size)


@st.composite
def v2_request(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """A V2 body (JSON, or JSON + binary blobs) that is mostly valid, and its header length."""
    tensors, blobs = [], []
    for _ in range(draw(st.integers(0, 3))):
        datatype = draw(st.sampled_from(list(DataType)))
        shape = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
        tensor: dict[str, Any] = {"name": draw(st.sampled_from(["x", "s", "i", "x"])),
                                  "shape": shape, "datatype": datatype.v2}
        if draw(st.booleans()):
            data = draw(blob(datatype, math.prod(shape)))
            tensor["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            tensor["data"] = draw(st.lists(leaf(datatype), min_size=math.prod(shape),
                                           max_size=math.prod(shape)))
        tensors.append(draw(corrupt(tensor)))
    document = draw(corrupt({"inputs": tensors, "id": draw(st.text(max_size=4)),
                             "outputs": [{"name": "y"}]}))
    head = orjson.dumps(document)
    return head + b"".join(blobs), len(head) if blobs else None


@st.composite
def tf_request(draw: st.DrawFn) -> dict[str, Any]:
    """A mostly valid :predict / :classify body for ``SIGNATURE`` (x: 3 floats, s: a string,
    i: 2 INT8 values per row), in row, columnar or example form."""
    rows = draw(st.integers(0, 3))
    def row() -> dict[str, Any]:
        return draw(corrupt({
            "x": draw(st.lists(leaf(DataType.FP32), min_size=3, max_size=3)),
            "s": draw(st.text(max_size=3) | st.builds(dict, b64=st.sampled_from(["YWI=", "@"]))),
            "i": draw(st.lists(st.integers(-128, 127) | st.integers(-300, 300), min_size=2,
                               max_size=2))}))
    table = [row() for _ in range(rows)]
    form = draw(st.sampled_from(["instances", "inputs", "examples"]))
    if form == "inputs":
        body: Any = {k: [r.get(k) for r in table] for k in ("x", "s", "i")}
    elif form == "examples":
        body = [{k: (v if isinstance(v, list) else [v]) for k, v in r.items()} for r in table]
    else:
        body = table
    return draw(corrupt({form: body}))


def _decodes_or_refuses(call: Any, *args: Any, **kwargs: Any) -> None:
    with contextlib.suppress(KilnError):
        call(*args, **kwargs)


@FUZZ
@given(request=v2_request(), split=st.none() | st.none() | st.integers(0, 4))
def test_v2_json_and_binary_requests(request: tuple[bytes, int | None],
                                     split: int | None) -> None:
    body, header_length = request
    if split is not None and split < 3:
        header_length = split  # lie about where the JSON ends
    one_input = Signature(inputs=(SIGNATURE.inputs[1],), outputs=())
    _decodes_or_refuses(v2_json.decode_infer_request, one_input, body, model_name="m",
                        model_version=None, header_length=header_length, limits=LIMITS)


@FUZZ
@given(body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_v2_json_raw_bytes(body: bytes) -> None:
    _decodes_or_refuses(v2_json.decode_infer_request, SIGNATURE, body, model_name="m",
                        model_version="1", header_length=None, limits=LIMITS)


@FUZZ
@given(data=st.binary(max_size=96), datatype=st.sampled_from(list(DataType)),
       shape=st.lists(st.integers(0, 6), max_size=3))
def test_binary_tensors_and_bytes_length_prefixes(data: bytes, datatype: DataType,
                                                  shape: list[int]) -> None:
    _decodes_or_refuses(binary.decode_tensor, data, datatype, tuple(shape), math.prod(shape),
                        what="t")


@FUZZ
@given(document=tf_request() | json_values, junk=st.booleans())
def test_tf_serving_predict_classify_regress(document: Any, junk: bool) -> None:
    body = orjson.dumps(document) + (b" NaN Infinity -Infinity ]" if junk else b"")
    for decode in (tfserving.decode_predict, tfserving_examples.decode_classify,
                   tfserving_examples.decode_regress):
        _decodes_or_refuses(decode, SIGNATURE, body, model_name="m", model_version=None,
                            limits=LIMITS)


@st.composite
def grpc_tensor(draw: st.DrawFn) -> tuple[Any, bytes]:
    """A mostly consistent input tensor and its raw contents."""
    datatype = draw(st.sampled_from(list(DataType)))
    shape = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3)
                 | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4))
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=draw(st.sampled_from(["x", "s", "", "x"])),
        datatype=draw(st.sampled_from([datatype.v2, datatype.v2, "NOPE"])), shape=shape)
    count = math.prod(shape) if all(0 <= d < 8 for d in shape) else 1
    raw = draw(blob(datatype, count) | st.binary(max_size=24))
    if draw(st.booleans()) and datatype in v2_grpc.CONTENTS:
        field, kind = v2_grpc.CONTENTS[datatype]
        values = draw(st.lists(st.booleans() if kind == "bool"
                               else st.binary(max_size=3) if kind == "object"
                               else st.floats(width=32) if kind.startswith("float")
                               else st.integers(0, 255), min_size=count, max_size=count))
        getattr(tensor.contents, field).extend(values)
    return tensor, raw


@FUZZ
@given(tensors=st.lists(grpc_tensor(), max_size=3), use_raw=st.booleans(),
       name=st.sampled_from(["m", "m", ""]), garbage=st.binary(max_size=64))
def test_grpc_infer_messages(tensors: list[tuple[Any, bytes]], use_raw: bool, name: str,
                             garbage: bytes) -> None:
    message = pb.ModelInferRequest(model_name=name, inputs=[t for t, _ in tensors])
    if use_raw:
        for tensor in message.inputs:
            tensor.ClearField("contents")
        message.raw_input_contents.extend(raw for _, raw in tensors)
    _decodes_or_refuses(v2_grpc.decode_infer_request, message, limits=LIMITS)
    parsed = pb.ModelInferRequest()
    try:
        parsed.ParseFromString(message.SerializeToString() + garbage)
    except Exception:  # the server answers these bytes INVALID_ARGUMENT before decoding
        return
    _decodes_or_refuses(v2_grpc.decode_infer_request, parsed, limits=LIMITS)
