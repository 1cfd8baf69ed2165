"""Every malformed V2 request gets a clear 4xx; the server stays up and keeps answering."""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from kiln.tensors import DataType
from tests.models import add_sub_model, identity_model, save
from tests.server import KilnProcess, kiln_serve

LIMIT = 1 << 20
ADD_SUB_PBTXT = """
name: "add_sub"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] },
         { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnProcess]:
    repo = tmp_path_factory.mktemp("repo")
    save(add_sub_model(), repo, "add_sub", config=ADD_SUB_PBTXT, config_name="config.pbtxt")
    save(identity_model([DataType.FP16, DataType.BOOL, DataType.INT8, DataType.BYTES]),
         repo, "identity")
    with kiln_serve(repo, "--http-max-input-size", str(LIMIT),
                    log_dir=tmp_path_factory.mktemp("logs")) as process:
        yield process


def _tensor(name: str, shape: list[int], data: Any, datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def _good() -> dict[str, Any]:
    return {"inputs": [_tensor("INPUT0", [1, 16], [1.0] * 16),
                       _tensor("INPUT1", [1, 16], [2.0] * 16)]}


def _binary(header: dict[str, Any], blob: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + blob, {"Inference-Header-Content-Length": str(len(head))}


def _with(**changes: Any) -> dict[str, Any]:
    body = _good()
    body["inputs"][0].update(changes)
    return body


def _nested(depth: int) -> Any:
    data: Any = 1.0
    for _ in range(depth):
        data = [data]
    return data


def _bin_input(size: int, shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": "INPUT0", "shape": shape or [1, 16], "datatype": "FP32",
            "parameters": {"binary_data_size": size}}


# (id, path, body-or-(bytes, headers), expected status, words the message must contain)
CASES: list[tuple[str, str, Any, int, list[str]]] = [
    ("unknown-model", "/v2/models/nope/infer", _good(), 404, ["nope"]),
    ("unknown-version", "/v2/models/add_sub/versions/7/infer", _good(), 404, ["version 7"]),
    ("malformed-json", "/v2/models/add_sub/infer", (b"{not json", {}), 400, ["JSON"]),
    ("not-an-object", "/v2/models/add_sub/infer", [1, 2], 400, ["object"]),
    ("no-inputs", "/v2/models/add_sub/infer", {"id": "x"}, 400, ["inputs"]),
    ("empty-inputs", "/v2/models/add_sub/infer", {"inputs": []}, 400, ["inputs"]),
    ("input-without-name", "/v2/models/add_sub/infer",
     {"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, 400, ["name"]),
    ("unknown-input", "/v2/models/add_sub/infer", _with(name="INPUT9"), 400,
     ["INPUT9", "add_sub"]),
    ("missing-input", "/v2/models/add_sub/infer",
     {"inputs": [_tensor("INPUT0", [1, 16], [1.0] * 16)]}, 400, ["INPUT1", "missing"]),
    ("duplicate-input", "/v2/models/add_sub/infer",
     {"inputs": [_tensor("INPUT0", [1, 16], [1.0] * 16)] * 2}, 400, ["twice"]),
    ("wrong-datatype", "/v2/models/add_sub/infer", _with(datatype="INT32", data=[1] * 16),
     400, ["INPUT0", "FP32", "INT32"]),
    ("unknown-datatype", "/v2/models/add_sub/infer", _with(datatype="FLOAT"), 400,
     ["FLOAT"]),
    ("wrong-rank", "/v2/models/add_sub/infer", _with(shape=[16]), 400,
     ["INPUT0", "[-1, 16]", "[16]"]),
    ("wrong-fixed-dim", "/v2/models/add_sub/infer", _with(shape=[1, 15], data=[1.0] * 15),
     400, ["[-1, 16]", "[1, 15]"]),
    ("batch-over-max", "/v2/models/add_sub/infer",
     {"inputs": [_tensor("INPUT0", [9, 16], [1.0] * 144),
                 _tensor("INPUT1", [9, 16], [1.0] * 144)]}, 400, ["max_batch_size 8"]),
    ("batch-disagreement", "/v2/models/add_sub/infer",
     {"inputs": [_tensor("INPUT0", [2, 16], [1.0] * 32),
                 _tensor("INPUT1", [1, 16], [1.0] * 16)]}, 400, ["batch size"]),
    ("count-vs-shape", "/v2/models/add_sub/infer", _with(data=[1.0] * 15), 400,
     ["16 elements", "15"]),
    ("negative-dim", "/v2/models/add_sub/infer", _with(shape=[-1, 16]), 400, ["non-negative"]),
    ("overflowing-dim", "/v2/models/add_sub/infer",
     (json.dumps(_with(shape=[2**70, 16])).encode(), {}), 400,
     ["non-negative integers"]),
    ("huge-shape-small-data", "/v2/models/add_sub/infer",
     _with(shape=[65536, 65536, 65536]), 400, ["more than"]),
    ("too-many-dims", "/v2/models/add_sub/infer", _with(shape=[1] * 40, data=[1.0]), 400,
     ["rank"]),
    ("ragged-data", "/v2/models/add_sub/infer", _with(data=[[1.0] * 16, [1.0]]), 400,
     ["ragged"]),
    ("string-in-fp32", "/v2/models/add_sub/infer", _with(data=["a"] * 16), 400, ["numbers"]),
    ("deep-nesting", "/v2/models/add_sub/infer", _with(data=_nested(40)), 400, ["nested"]),
    ("unknown-output", "/v2/models/add_sub/infer", {**_good(), "outputs": [{"name": "OUT"}]},
     400, ["OUT", "OUTPUT0"]),
    ("parameters-not-object", "/v2/models/add_sub/infer", {**_good(), "parameters": [1]},
     400, ["parameters"]),
    ("nested-parameter", "/v2/models/add_sub/infer", {**_good(), "parameters": {"a": {}}},
     400, ["parameter 'a'"]),
    ("id-not-string", "/v2/models/add_sub/infer", {**_good(), "id": 5}, 400, ["id"]),
    ("fp16-as-json", "/v2/models/identity/infer",
     {"inputs": [_tensor("in_FP16", [1, 4], [1.0] * 4, "FP16")]}, 400, ["FP16", "binary"]),
    ("bool-not-bool", "/v2/models/identity/infer",
     {"inputs": [_tensor("in_BOOL", [1, 4], [1, 0, 1, 0], "BOOL")]}, 400, ["true/false"]),
    ("int8-out-of-range", "/v2/models/identity/infer",
     {"inputs": [_tensor("in_INT8", [1, 4], [1, 2, 3, 300], "INT8")]}, 400, ["range"]),
    ("bytes-not-strings", "/v2/models/identity/infer",
     {"inputs": [_tensor("in_BYTES", [1, 4], [1, 2, 3, 4], "BYTES")]}, 400, ["strings"]),
    ("binary-size-vs-shape", "/v2/models/add_sub/infer",
     _binary({"inputs": [_bin_input(60), _tensor("INPUT1", [1, 16], [1.0] * 16)]},
             b"\0" * 60), 400, ["64 bytes", "60"]),
    ("binary-size-past-body", "/v2/models/add_sub/infer",
     _binary({"inputs": [_bin_input(64), _tensor("INPUT1", [1, 16], [1.0] * 16)]},
             b"\0" * 10), 400, ["binary_data_size 64"]),
    ("binary-trailing-bytes", "/v2/models/add_sub/infer",
     _binary({"inputs": [_bin_input(64), _tensor("INPUT1", [1, 16], [1.0] * 16)]},
             b"\0" * 70), 400, ["6 bytes"]),
    ("binary-and-data", "/v2/models/add_sub/infer",
     _binary({"inputs": [{**_bin_input(64), "data": [1.0] * 16},
                         _tensor("INPUT1", [1, 16], [1.0] * 16)]}, b"\0" * 64), 400, ["both"]),
    ("bytes-length-prefix-lie", "/v2/models/identity/infer",
     _binary({"inputs": [{"name": "in_BYTES", "shape": [1, 4], "datatype": "BYTES",
                          "parameters": {"binary_data_size": 8}}]},
             struct.pack("<I", 1000) + b"abcd"), 400, ["claims 1000 bytes"]),
    ("header-length-past-body", "/v2/models/add_sub/infer",
     (orjson.dumps(_good()), {"Inference-Header-Content-Length": "99999"}), 400,
     ["Inference-Header-Content-Length"]),
    ("header-length-not-number", "/v2/models/add_sub/infer",
     (orjson.dumps(_good()), {"Inference-Header-Content-Length": "ten"}), 400,
     ["Inference-Header-Content-Length"]),
    ("body-over-limit", "/v2/models/add_sub/infer", (b" " * (LIMIT + 1), {}), 413,
     ["limit"]),
    ("gzip-bomb", "/v2/models/add_sub/infer",
     (gzip.compress(b" " * (LIMIT * 4)), {"Content-Encoding": "gzip"}), 413, ["decompressed"]),
    ("bad-gzip", "/v2/models/add_sub/infer", (b"not gzip", {"Content-Encoding": "gzip"}),
     400, ["gzip"]),
    ("unknown-encoding", "/v2/models/add_sub/infer", (b"{}", {"Content-Encoding": "br"}),
     400, ["Content-Encoding"]),
]


@pytest.mark.parametrize(("path", "body", "status", "words"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request(server: KilnProcess, path: str, body: Any, status: int,
                     words: list[str]) -> None:
    if isinstance(body, tuple):
        content, headers = body
    else:
        content, headers = orjson.dumps(body), {}
    response = httpx.post(server.base + path, content=content, headers=headers, timeout=10)
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for word in words:
        assert word in message, message
    _assert_still_serving(server)


def _assert_still_serving(server: KilnProcess) -> None:
    assert server.alive()
    good = httpx.post(server.base + "/v2/models/add_sub/infer", content=orjson.dumps(_good()))
    assert good.status_code == 200
    outputs = {o["name"]: o["data"] for o in good.json()["outputs"]}
    assert outputs["OUTPUT0"] == [3.0] * 16 and outputs["OUTPUT1"] == [-1.0] * 16


def test_wrong_method_and_unknown_path(server: KilnProcess) -> None:
    response = httpx.get(server.base + "/v2/models/add_sub/infer")
    assert response.status_code == 405 and "GET" in response.json()["error"]
    response = httpx.get(server.base + "/v3/nothing")
    assert response.status_code == 404 and "/v3/nothing" in response.json()["error"]
    _assert_still_serving(server)


def test_gzip_request_is_accepted(server: KilnProcess) -> None:
    response = httpx.post(server.base + "/v2/models/add_sub/infer",
                          content=gzip.compress(orjson.dumps(_good())),
                          headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [3.0] * 16


def test_many_bad_requests_leave_good_ones_unaffected(server: KilnProcess,
                                                      tmp_path: Path) -> None:
    """Bad and good requests interleaved on concurrent connections: every good one succeeds."""
    import concurrent.futures

    def send(i: int) -> int:
        body = _good() if i % 2 else _with(shape=[1, 15], data=[1.0] * 15)
        return httpx.post(server.base + "/v2/models/add_sub/infer",
                          content=orjson.dumps(body)).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(send, range(80)))
    assert codes[1::2] == [200] * 40 and codes[0::2] == [400] * 40
