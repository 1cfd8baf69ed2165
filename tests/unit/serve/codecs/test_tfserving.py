"""The TF Serving JSON codec on its own: shapes from nesting, b64, tokens, formats."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from kiln.errors import InvalidArgument
from kiln.serve.codecs import tfserving, tfserving_examples
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.messages import InferenceRequest, State, VersionStatus
from kiln.tensors import DataType, Signature, TensorSpec

LIMITS = DecodeLimits(max_rank=4)
ONE = Signature((TensorSpec("x", DataType.FP32, (-1, 2)),),
                (TensorSpec("y", DataType.FP32, (-1, 2)),), 8)
TEXT = Signature((TensorSpec("s", DataType.BYTES, (-1,)),), (), 8)


def _decode(body: bytes, signature: Signature = ONE) -> InferenceRequest:
    return tfserving.decode_predict(signature, body, model_name="m", model_version=None,
                                    limits=LIMITS)


def test_orjson_is_the_fast_path_and_tokens_fall_back_to_the_stdlib() -> None:
    assert tfserving.loads(b'{"a": [1.5]}') == {"a": [1.5]}
    doc = tfserving.loads(b'{"a": [NaN, Infinity, -Infinity]}')
    assert np.isnan(doc["a"][0]) and doc["a"][1:] == [float("inf"), float("-inf")]
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        tfserving.loads(b'{"a": [NaN, }')
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        tfserving.loads(b'{"a": nan}')


def test_row_and_columnar_formats_decode_to_the_same_tensor() -> None:
    row = _decode(b'{"instances": [[1, 2], [3, NaN]]}')
    columnar = _decode(b'{"inputs": {"x": [[1, 2], [3, NaN]]}}')
    assert row.wire == tfserving.ROW and columnar.wire == tfserving.COLUMNAR
    for decoded in (row, columnar):
        x = decoded.inputs["x"]
        assert x.dtype == np.float32 and x.shape == (2, 2)
        np.testing.assert_array_equal(x, [[1, 2], [3, np.nan]])


def test_b64_strings_decode_with_or_without_padding() -> None:
    decoded = _decode(b'{"instances": [{"b64": "AAE="}, {"b64": "AAE"}, "caf\xc3\xa9"]}', TEXT)
    assert decoded.inputs["s"].tolist() == [b"\x00\x01", b"\x00\x01", "café".encode()]


@pytest.mark.parametrize(("body", "message"), [
    (b'{"instances": [[[[[1]]]]]}', "rank limit 4"),
    (b'{"instances": []}', "non-empty list"),
    (b'{"instances": [{"x": [1, 2]}, [1, 2]]}', "keys of instances[0]"),
    (b'{"instances": [[1, 2], {"x": [1, 2]}]}', "instances[1] is an object"),
    (b'{"inputs": {"x": [[1, 2]], "z": 1}}', "no input 'z'"),
    (b'{"signature_name": 3, "inputs": 1}', "must be a string"),
])
def test_malformed_predict_bodies_name_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[").replace("]", r"\]")):
        _decode(body)


def test_ragged_strings_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="ragged"):
        _decode(b'{"inputs": [["a"], "b"]}', TEXT)
    with pytest.raises(InvalidArgument, match="not valid Unicode"):
        _decode(b'{"inputs": ["\\ud800"], "x": NaN}', TEXT)  # only the stdlib parses it


def test_non_finite_floats_are_written_as_tokens_in_row_order() -> None:
    y = np.array([[np.nan, 1.0], [-np.inf, np.inf]], np.float32)
    body = tfserving.encode_predict({"y": y}, row_format=False)
    assert body == b'{"outputs":[[NaN,1.0],[-Infinity,Infinity]]}'
    finite = tfserving.encode_predict({"y": np.ones((1, 2), np.float32)}, row_format=True)
    assert finite == b'{"predictions":[[1.0,1.0]]}'


def test_row_format_writes_one_object_per_row_for_several_outputs() -> None:
    outputs = {"label": np.array([3, 1], dtype=np.longlong),  # ONNX Runtime's int64 type
               "p": np.array([[0.5, np.inf], [0.25, 0.75]], np.float32),
               "ok": np.array([True, False])}
    assert tfserving.encode_predict(outputs, row_format=True) == (
        b'{"predictions":[{"label":3,"p":[0.5,Infinity],"ok":true},'
        b'{"label":1,"p":[0.25,0.75],"ok":false}]}')


def test_row_format_needs_outputs_that_share_the_batch() -> None:
    outputs = {"a": np.zeros((2, 1), np.float32), "b": np.zeros((3,), np.int64)}
    with pytest.raises(InvalidArgument, match="'b' has 3 rows"):
        tfserving.encode_predict(outputs, row_format=True)
    body = orjson.loads(tfserving.encode_predict(outputs, row_format=False))
    assert body == {"outputs": {"a": [[0.0], [0.0]], "b": [0, 0, 0]}}


def test_strings_out_are_text_unless_bytes_named_or_not_utf8() -> None:
    strings = np.array([b"ok", b"\xff"], dtype=object)
    body = orjson.loads(tfserving.encode_predict(
        {"s": strings, "s_bytes": strings}, row_format=False))
    assert body == {"outputs": {"s": ["ok", {"b64": "/w=="}],
                                "s_bytes": [{"b64": "b2s="}, {"b64": "/w=="}]}}


def test_model_status_maps_registry_states() -> None:
    body = orjson.loads(tfserving.encode_model_status([
        VersionStatus(1, State.UNAVAILABLE, "bad file"), VersionStatus(3, State.LOADING),
        VersionStatus(2, State.READY)]))
    assert body == {"model_version_status": [
        {"version": "3", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "2", "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}},
        {"version": "1", "state": "END",
         "status": {"error_code": "UNKNOWN", "error_message": "bad file"}},
    ]}


def test_examples_are_reshaped_to_the_input() -> None:
    signature = Signature((TensorSpec("img", DataType.FP32, (-1, 2, 2)),
                           TensorSpec("k", DataType.INT64, (-1,))), (), 8)
    tensors = tfserving_examples.decode_examples(
        b'{"context": {"k": 7}, "examples": [{"img": [1, 2, 3, 4]}, {"img": [5, 6, 7, 8]}]}',
        signature, model_name="m", limits=LIMITS)
    assert tensors["img"].shape == (2, 2, 2) and tensors["img"][1, 1, 0] == 7
    assert tensors["k"].tolist() == [7, 7]
    with pytest.raises(InvalidArgument, match="needs 4 value"):
        tfserving_examples.decode_examples(
            b'{"examples": [{"img": [1, 2, 3], "k": 1}]}', signature, model_name="m",
            limits=LIMITS)
    with pytest.raises(InvalidArgument, match="repeats context feature"):
        tfserving_examples.decode_examples(
            b'{"context": {"k": 1}, "examples": [{"img": [1, 2, 3, 4], "k": 2}]}', signature,
            model_name="m", limits=LIMITS)


def test_classify_and_regress_results() -> None:
    scores = np.array([[0.25, np.nan]], np.float32)
    assert tfserving_examples.encode_classify(scores, None) == \
        b'{"results":[[["0",0.25],["1",NaN]]]}'
    labels = np.array([[b"cat", b"dog"]], dtype=object)
    assert json.loads(tfserving_examples.encode_classify(scores, labels))["results"][0][0] == \
        ["cat", 0.25]
    assert tfserving_examples.encode_regress(np.array([[1.5], [-2.0]], np.float32)) == \
        b'{"results":[1.5,-2.0]}'
