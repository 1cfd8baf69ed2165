"""kiln's own HTTP/1.1 connection, spoken to over raw sockets: keep-alive, pipelining,
chunked bodies, 100-continue, early refusals and the connection limit."""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import Callable, Iterator

import httptools
import numpy as np
import orjson
import pytest

from tests.models import add_sub_model, save
from tests.server import KilnProcess, kiln_serve

LIMIT = 256 << 10
MAX_CONNECTIONS = 4
INFER = b"/v2/models/add_sub/infer"
#: status, headers, body
Answer = tuple[int, dict[bytes, bytes], bytes]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnProcess]:
    repo = tmp_path_factory.mktemp("repo")
    save(add_sub_model(), repo, "add_sub", config="max_batch_size: 4096\n")
    with kiln_serve(repo, "--http-max-input-size", str(LIMIT),
                    env={"KILN_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS)},
                    log_dir=tmp_path_factory.mktemp("logs")) as process:
        yield process
    assert "Traceback" not in process.log()


def infer_body(rows: int = 1, value: float = 1.0) -> bytes:
    data = [value] * (rows * 16)
    return orjson.dumps({"inputs": [
        {"name": n, "shape": [rows, 16], "datatype": "FP32", "data": data}
        for n in ("INPUT0", "INPUT1")]})


def post(path: bytes, body: bytes, *extra: bytes) -> bytes:
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (path, len(body))
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


class Reader:
    """Parses the responses arriving on one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Answer] = []
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.closed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), self.headers, self.body))
        self.headers, self.body = {}, b""

    def responses(self, count: int, timeout_s: float = 10) -> list[Answer]:
        self.sock.settimeout(timeout_s)
        while len(self.done) < count:
            data = self.sock.recv(1 << 20)
            if not data:
                self.closed = True
                break
            self.parser.feed_data(data)
        taken, self.done = self.done[:count], self.done[count:]
        return taken

    def wait_closed(self, timeout_s: float = 10) -> bool:
        self.sock.settimeout(timeout_s)
        try:
            return self.sock.recv(1) == b""
        except (TimeoutError, ConnectionResetError):
            return False


Connect = Callable[[], tuple[socket.socket, "Reader"]]


@pytest.fixture
def connect(server: KilnProcess) -> Iterator[Connect]:
    opened: list[socket.socket] = []

    def make() -> tuple[socket.socket, Reader]:
        sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
        opened.append(sock)
        return sock, Reader(sock)

    yield make
    for sock in opened:
        sock.close()


def outputs(body: bytes) -> dict[str, np.ndarray]:
    return {o["name"]: np.array(o["data"]) for o in orjson.loads(body)["outputs"]}


def test_keep_alive_and_pipelined_requests_are_answered_in_order(connect: Connect) -> None:
    sock, reader = connect()
    sock.sendall(post(INFER, infer_body(1, 1.0)))
    assert reader.responses(1)[0][0] == 200
    # Three requests in one write: an inference, a route that does not exist, a health check.
    sock.sendall(post(INFER, infer_body(2, 3.0)) + post(b"/v2/nothing", b"{}")
                 + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    (s1, _, b1), (s2, _, b2), (s3, _, _) = reader.responses(3)
    assert (s1, s2, s3) == (200, 404, 200)
    assert outputs(b1)["OUTPUT0"].tolist() == [6.0] * 32
    assert "/v2/nothing" in orjson.loads(b2)["error"]
    assert not reader.closed


def test_connection_close_and_http_1_0(connect: Connect) -> None:
    sock, reader = connect()
    sock.sendall(post(INFER, infer_body(), b"Connection: close"))
    (status, headers, _), = reader.responses(1)
    assert status == 200 and headers[b"connection"] == b"close"
    assert reader.wait_closed()
    sock, reader = connect()
    sock.sendall(b"GET /v2/health/ready HTTP/1.0\r\n\r\n")
    assert reader.responses(1)[0][0] == 200 and reader.wait_closed()


def test_chunked_and_gzipped_bodies(connect: Connect) -> None:
    sock, reader = connect()
    body = infer_body(3, 2.0)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 100]), body[i:i + 100])
                      for i in range(0, len(body), 100))
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % INFER
                 + chunks + b"0\r\n\r\n")
    (status, _, answer), = reader.responses(1)
    assert status == 200 and outputs(answer)["OUTPUT0"].tolist() == [4.0] * 48
    sock.sendall(post(INFER, gzip.compress(body), b"Content-Encoding: gzip"))
    (status, _, answer), = reader.responses(1)
    assert status == 200 and outputs(answer)["OUTPUT1"].tolist() == [0.0] * 48


def test_expect_100_continue(connect: Connect) -> None:
    sock, reader = connect()
    body = infer_body()
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                 b"Expect: 100-continue\r\n\r\n" % (INFER, len(body)))
    sock.settimeout(10)
    assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    sock.sendall(body)
    assert reader.responses(1)[0][0] == 200


def test_a_declared_oversized_body_is_refused_before_it_is_sent(connect: Connect) -> None:
    sock, reader = connect()
    started = time.monotonic()
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                 % (INFER, LIMIT + 1))  # and no body at all
    (status, headers, answer), = reader.responses(1)
    assert status == 413 and str(LIMIT) in orjson.loads(answer)["error"]
    assert headers[b"connection"] == b"close" and reader.wait_closed()
    assert time.monotonic() - started < 5


def test_an_oversized_chunked_body_is_cut_off(connect: Connect) -> None:
    sock, reader = connect()
    chunk = b"x" * (64 << 10)
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % INFER)
    try:
        for _ in range(LIMIT // len(chunk) + 2):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed while we were still sending
    (status, _, answer), = reader.responses(1)
    assert status == 413 and "exceeds the limit" in orjson.loads(answer)["error"]


def test_a_large_answer_arrives_whole(connect: Connect) -> None:
    sock, reader = connect()
    rows = 1000  # 2 x 16,000 numbers as JSON: well past one write's join limit
    sock.sendall(post(INFER, infer_body(rows, 0.5)))
    (status, headers, answer), = reader.responses(1)
    assert status == 200 and int(headers[b"content-length"]) == len(answer) > 64 << 10
    assert outputs(answer)["OUTPUT0"].tolist() == [1.0] * rows * 16


def test_head_answers_without_a_body(connect: Connect) -> None:
    sock, _ = connect()
    sock.sendall(b"HEAD /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(10)
    data = b""
    while data.count(b"HTTP/1.1") < 2:
        data += sock.recv(65536)
    first, second = data.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"405") and first.endswith(b"\r\n\r\n")  # head only
    assert second.startswith(b"200")


def test_past_the_connection_limit_a_request_gets_503(connect: Connect) -> None:
    idle = [connect()[0] for _ in range(MAX_CONNECTIONS)]
    time.sleep(0.2)
    sock, reader = connect()
    sock.sendall(post(INFER, infer_body()))
    (status, headers, answer), = reader.responses(1)
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert "--http-max-connections" in orjson.loads(answer)["error"]
    for other in idle:
        other.close()
    time.sleep(0.2)
    sock, reader = connect()
    sock.sendall(post(INFER, infer_body()))
    assert reader.responses(1)[0][0] == 200


def test_a_malformed_request_target_is_400_and_the_connection_goes_on(connect: Connect) -> None:
    sock, reader = connect()
    sock.sendall(b"GET http://a:b:c/ HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"GET http://x HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    (s1, _, b1), (s2, _, _), (s3, _, _) = reader.responses(3)
    assert s1 == 400 and "request target" in orjson.loads(b1)["error"]
    assert s2 == 404  # an absolute URL without a path asks for "/"
    assert s3 == 200
