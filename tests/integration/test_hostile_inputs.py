"""Hostile input, beyond the cases in test_v2_validation.py, test_grpc.py and test_tfserving.py:
traversal in names, parser bombs, lying sizes, malformed protobuf, slow and oversized HTTP
framing. Each gets a 4xx or a clean gRPC error (never a 500 or a crash), and the server
answers a normal request right after."""

from __future__ import annotations

import gzip
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import orjson
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from kiln.tensors import DataType
from tests.models import add_sub_model, identity_model, save
from tests.server import KilnProcess, kiln_serve

LIMIT = 1 << 20
ADD_SUB = "/v2/models/add_sub/infer"
SERVICE = "/inference.GRPCInferenceService"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnProcess]:
    repo = tmp_path_factory.mktemp("repo")
    save(add_sub_model(), repo, "add_sub", config="max_batch_size: 8\n")
    save(identity_model([DataType.BYTES, DataType.FP32]), repo, "identity")
    with kiln_serve(repo, "--http-max-input-size", str(LIMIT), "--grpc-max-message-bytes",
                    str(LIMIT), "--http-header-timeout-s", "1", "--http-body-timeout-s", "1",
                    log_dir=tmp_path_factory.mktemp("logs")) as process:
        yield process
    log = process.log()
    assert "Traceback" not in log and "internal error" not in log
    assert process.process.returncode == 0


def good_body() -> dict[str, Any]:
    return {"inputs": [{"name": n, "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}
                       for n in ("INPUT0", "INPUT1")]}


def with_input(**changes: Any) -> bytes:
    body = good_body()
    body["inputs"][0].update(changes)
    return orjson.dumps(body)


def binary(header: dict[str, Any], blob: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + blob, {"Inference-Header-Content-Length": str(len(head))}


def nest(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def bytes_input(blob: bytes, size: int | None = None) -> tuple[bytes, dict[str, str]]:
    return binary({"inputs": [{"name": "in_BYTES", "shape": [1, 4], "datatype": "BYTES",
                               "parameters": {"binary_data_size": size or len(blob)}},
                              {"name": "in_FP32", "shape": [1, 4], "datatype": "FP32",
                               "data": [0.0] * 4}]}, blob)


def assert_serves(server: KilnProcess) -> None:
    assert server.alive()
    response = httpx.post(server.base + ADD_SUB, content=orjson.dumps(good_body()))
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [2.0] * 16


def chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // 65536):
        yield b" " * 65536


def tf(body: Any) -> bytes:
    return orjson.dumps(body)


# (id, path, body or (body, headers), status, words in the error)
HTTP_CASES: list[tuple[str, str, Any, int, list[str]]] = [
    ("name-encoded-slashes", "/v2/models/..%2F..%2Fetc%2Fpasswd/infer", good_body(), 404,
     ["no endpoint"]),
    ("name-dotdot", "/v2/models/%2e%2e/infer", good_body(), 404, ["unknown model '..'"]),
    ("name-backslashes", "/v2/models/..%5C..%5Cwindows/infer", good_body(), 404,
     ["unknown model"]),
    ("name-nul", "/v2/models/add%00sub/infer", good_body(), 404, ["unknown model"]),
    ("name-5000-chars", "/v2/models/" + "a" * 5000 + "/infer", good_body(), 404,
     ["unknown model"]),
    ("version-dotdot", "/v2/models/add_sub/versions/%2e%2e/infer", good_body(), 404,
     ["no version or label '..'"]),
    ("version-absolute", "/v2/models/add_sub/versions/%2Fetc%2Fpasswd/infer", good_body(), 404,
     ["no endpoint"]),
    ("deep-json-parameters", ADD_SUB,
     b'{"parameters": {"a": ' + nest(5000) + b'}, "inputs": []}', 400, ["depth"]),
    ("deep-json-body", ADD_SUB, nest(100_000), 400, ["depth"]),
    ("deep-json-data", ADD_SUB, with_input(data=orjson.loads(nest(200))), 400, ["nested"]),
    ("invalid-utf8", ADD_SUB, (b'{"inputs": "\xff\xfe"}', {}), 400, ["UTF-8"]),
    ("nan-literal", ADD_SUB, (with_input().replace(b"1.0", b"NaN", 1), {}), 400, ["JSON"]),
    ("float-overflow", ADD_SUB, (with_input().replace(b"1.0", b"1e400", 1), {}), 400,
     ["infinity"]),
    ("shape-float", ADD_SUB, with_input(shape=[1.0, 16]), 400, ["non-negative integers"]),
    ("shape-string", ADD_SUB, with_input(shape="1,16"), 400, ["shape"]),
    ("shape-2^63", ADD_SUB, with_input(shape=[2**63, 2]), 400, ["holds more than"]),
    ("300-inputs", ADD_SUB, {"inputs": [good_body()["inputs"][0]] * 300}, 400, ["twice"]),
    ("binary-negative-size", ADD_SUB, binary({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
         "parameters": {"binary_data_size": -64}}]}, b"\0" * 64), 400, ["binary_data_size"]),
    ("binary-size-2^64", ADD_SUB, binary({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
         "parameters": {"binary_data_size": 2**64 - 1}}]}, b"\0" * 64), 400,
     ["binary_data_size"]),
    ("header-length-negative", ADD_SUB,
     (orjson.dumps(good_body()), {"Inference-Header-Content-Length": "-5"}), 400,
     ["Inference-Header-Content-Length"]),
    ("bytes-prefix-cut", "/v2/models/identity/infer", bytes_input(b"\x04\0\0"), 400,
     ["BYTES elements but the data ends"]),
    ("bytes-prefix-2^32", "/v2/models/identity/infer",
     bytes_input(struct.pack("<I", 2**32 - 1) + b"abcd"), 400, ["claims 4294967295 bytes"]),
    ("bytes-extra-elements", "/v2/models/identity/infer",
     bytes_input(b"".join(struct.pack("<I", 1) + b"x" for _ in range(6))), 400,
     ["beyond its 4 BYTES elements"]),
    ("deflate-bomb", ADD_SUB, (zlib.compress(b" " * (8 * LIMIT)),
                               {"Content-Encoding": "deflate"}), 413, ["decompressed"]),
    ("stacked-encodings", ADD_SUB, (gzip.compress(gzip.compress(orjson.dumps(good_body()))),
                                    {"Content-Encoding": "gzip, gzip"}), 400,
     ["Content-Encoding"]),
    ("chunked-over-limit", ADD_SUB, (chunks(2 * LIMIT), {}), 413, ["limit"]),
    ("tf-name-traversal", "/v1/models/..%2F..%2Fetc:predict", tf({"instances": [[1.0]]}), 404,
     ["no endpoint"]),
    ("tf-negative-version", "/v1/models/add_sub/versions/-1:predict",
     tf({"instances": [[1.0]]}), 404, ["no endpoint"]),
    ("tf-deep-json", "/v1/models/add_sub:predict", b'{"instances": ' + nest(3000) + b"}", 400,
     ["depth"]),
    ("tf-oversized", "/v1/models/add_sub:predict", (b" " * (LIMIT + 1), {}), 413, ["limit"]),
    ("tf-gzip-bomb", "/v1/models/add_sub:predict", (gzip.compress(b" " * (8 * LIMIT)),
                                                    {"Content-Encoding": "gzip"}), 413,
     ["decompressed"]),
    ("tf-b64-as-float", "/v1/models/add_sub:predict",
     tf({"inputs": {"INPUT0": [[{"b64": "AAAA"}] * 16], "INPUT1": [[1.0] * 16]}}), 400,
     ["INPUT0"]),
    ("tf-batch-over-max", "/v1/models/add_sub:predict",
     tf({"inputs": {"INPUT0": [[1.0] * 16] * 9, "INPUT1": [[1.0] * 16] * 9}}), 400,
     ["max_batch_size 8"]),
    ("tf-columnar-deep", "/v1/models/add_sub:predict",
     b'{"inputs": {"INPUT0": ' + nest(3000) + b"}}", 400, ["depth"]),
]


@pytest.mark.parametrize(("path", "body", "status", "words"), [c[1:] for c in HTTP_CASES],
                         ids=[c[0] for c in HTTP_CASES])
def test_hostile_http(server: KilnProcess, path: str, body: Any, status: int,
                      words: list[str]) -> None:
    if not isinstance(body, tuple):
        body = (body if isinstance(body, bytes) else orjson.dumps(body), {})
    content, headers = body
    response = httpx.post(server.base + path, content=content, headers=headers, timeout=20)
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert len(message) < 400  # never an echo of the input
    for word in words:
        assert word in message, message
    assert_serves(server)


def raw_http(server: KilnProcess, data: bytes, *, pause_after: int | None = None,
             wait_s: float = 0.0) -> tuple[bytes, float]:
    """Send ``data`` (optionally stalling after ``pause_after`` bytes); returns what came back
    before the server closed, and how long that took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(data[:pause_after])
        if wait_s:
            time.sleep(wait_s)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - started


def test_oversized_headers_get_431(server: KilnProcess) -> None:
    for headers in (b"X-Big: " + b"a" * (20 << 10) + b"\r\n",
                    b"".join(b"X-%d: v\r\n" % i for i in range(4000))):
        reply, _ = raw_http(server, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + headers
                            + b"\r\n")
        assert reply.startswith(b"HTTP/1.1 431"), reply[:100]
        assert_serves(server)


def test_slow_headers_and_stalled_bodies_are_cut_off(server: KilnProcess) -> None:
    """Slowloris: headers never finished, or a body that stops; both closed after ~1 s."""
    reply, took = raw_http(server, b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\n")
    assert reply == b"" and 0.5 < took < 5
    reply, took = raw_http(server, b"")  # connects and says nothing
    assert reply == b"" and 0.5 < took < 5
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" % ADD_SUB.encode()
    reply, took = raw_http(server, head + b'{"inputs": [')
    assert reply == b"" and 0.5 < took < 5
    assert_serves(server)


def test_garbage_request_line_is_400(server: KilnProcess) -> None:
    reply, _ = raw_http(server, b"\x16\x03\x01\x02\x00GARBAGE\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")
    assert_serves(server)


def _infer(**tensor: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=tensor.pop("model", "add_sub"))
    raw = tensor.pop("raw", None)
    request.inputs.add(**tensor)
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


def _bytes_request(blob: bytes) -> pb.ModelInferRequest:
    request = _infer(model="identity", name="in_BYTES", datatype="BYTES", shape=[1, 4], raw=blob)
    request.inputs.add(name="in_FP32", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(b"\0" * 16)
    return request


def _many_inputs() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="add_sub")
    for i in range(10_000):
        request.inputs.add(name=f"in{i}", datatype="FP32", shape=[1])
        request.raw_input_contents.append(b"\0" * 4)
    return request


# (id, method, request bytes, call options, status, words in the details)
GRPC_CASES: list[tuple[str, str, Callable[[], bytes], dict[str, Any], str, str]] = [
    ("garbage", "ModelInfer", lambda: b"\xff\xff\xff\xff", {}, "INVALID_ARGUMENT",
     "not a valid ModelInferRequest"),
    ("truncated-varint", "ModelInfer", lambda: b"\x08\x96", {}, "INVALID_ARGUMENT",
     "not a valid"),
    ("length-past-end", "ModelInfer", lambda: b"\x0a\xff\xff\xff\xff\x07abc", {},
     "INVALID_ARGUMENT", "not a valid"),
    ("unmatched-end-group", "ModelInfer", lambda: b"\x0c", {}, "INVALID_ARGUMENT",
     "not a valid"),
    ("invalid-wire-type", "ModelInfer", lambda: b"\x0f", {}, "INVALID_ARGUMENT", "not a valid"),
    ("string-not-utf8", "ModelInfer", lambda: b"\x0a\x02\xff\xfe", {}, "INVALID_ARGUMENT",
     "not a valid"),
    ("garbage-metadata", "ModelMetadata", lambda: b"\x0a\x05ab", {}, "INVALID_ARGUMENT",
     "not a valid ModelMetadataRequest"),
    ("negative-shape", "ModelInfer",
     lambda: _infer(name="INPUT0", datatype="FP32", shape=[-1, 16]).SerializeToString(), {},
     "INVALID_ARGUMENT", "non-negative"),
    ("huge-shape", "ModelInfer", lambda: _infer(name="INPUT0", datatype="FP32",
                                                shape=[2**40, 2**40], raw=b"").SerializeToString(),
     {}, "INVALID_ARGUMENT", "INPUT0"),
    ("bytes-prefix-lie", "ModelInfer", lambda: _bytes_request(
        struct.pack("<I", 1000) + b"abcd").SerializeToString(), {}, "INVALID_ARGUMENT",
     "claims 1000 bytes"),
    ("bytes-prefix-cut", "ModelInfer", lambda: _bytes_request(b"\x01\0").SerializeToString(),
     {}, "INVALID_ARGUMENT", "BYTES elements"),
    ("model-traversal", "ModelInfer", lambda: _infer(
        model="../../etc/passwd", name="INPUT0", datatype="FP32", shape=[1, 16],
        raw=b"\0" * 64).SerializeToString(), {}, "NOT_FOUND", "unknown model"),
    ("10k-inputs", "ModelInfer", lambda: _many_inputs().SerializeToString(), {},
     "INVALID_ARGUMENT", "add_sub"),
    ("gzip-over-limit", "ModelInfer", lambda: _infer(
        name="INPUT0", datatype="FP32", shape=[1, 16], raw=b"\0" * (4 * LIMIT)
    ).SerializeToString(), {"compression": grpc.Compression.Gzip}, "RESOURCE_EXHAUSTED",
     "larger than max"),
]


@pytest.mark.parametrize(("method", "payload", "options", "status", "words"),
                         [c[1:] for c in GRPC_CASES], ids=[c[0] for c in GRPC_CASES])
def test_hostile_grpc(server: KilnProcess, method: str, payload: Callable[[], bytes],
                      options: dict[str, Any], status: str, words: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        call = channel.unary_unary(f"{SERVICE}/{method}")
        with pytest.raises(grpc.RpcError) as info:
            call(payload(), timeout=20, **options)
        assert info.value.code().name == status, info.value.details()
        assert words in info.value.details()
        good = _infer(name="INPUT0", datatype="FP32", shape=[1, 16], raw=b"\0" * 64)
        good.inputs.add(name="INPUT1", datatype="FP32", shape=[1, 16])
        good.raw_input_contents.append(b"\0" * 64)
        assert pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(good).model_name == "add_sub"


def test_a_malformed_message_in_a_stream_is_answered_and_the_stream_goes_on(
        server: KilnProcess) -> None:
    good = _infer(name="INPUT0", datatype="FP32", shape=[1, 16], raw=b"\0" * 64)
    good.inputs.add(name="INPUT1", datatype="FP32", shape=[1, 16])
    good.raw_input_contents.append(b"\0" * 64)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stream = channel.stream_stream(f"{SERVICE}/ModelStreamInfer",
                                       response_deserializer=pb.ModelStreamInferResponse.FromString)
        answers = list(stream(iter([b"\xff\xff\xff", good.SerializeToString()]), timeout=20))
    errors = [a.error_message for a in answers if a.error_message]
    assert len(answers) == 2 and len(errors) == 1
    assert "not a valid ModelInferRequest" in errors[0]
    assert any(a.infer_response.model_name == "add_sub" for a in answers)
