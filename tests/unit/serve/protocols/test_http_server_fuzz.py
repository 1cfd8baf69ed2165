"""kiln's HTTP/1.1 connection fed byte streams cut anywhere (hypothesis).

Valid requests, however they are split into reads, get exactly their answers in order;
hostile bytes never raise out of the protocol, and whatever it writes parses as HTTP.
The connection runs on a real event loop with a real ``HttpApp``; only the socket is
replaced, by a transport that records what is written.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln.serve.protocols.http import Request, Response, route
from kiln.serve.protocols.http_app import HttpApp
from kiln.serve.protocols.http_listener import HttpListener
from kiln.serve.protocols.http_server import ConnectionLimits, HttpConnection

LIMIT = 4096


async def _echo(request: Request) -> Response:
    return Response(body=request.body, content_type=b"application/octet-stream")


async def _ok(request: Request) -> Response:
    return Response(body=b"{}")


class RecordingTransport(asyncio.Transport):
    """Stands in for the socket: keeps what the connection writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


def _connection() -> tuple[HttpConnection, RecordingTransport]:
    app = HttpApp([route("POST", "/echo", _echo, group="infer", reads_body=True),
                   route("GET", "/ok", _ok, group="health")],
                  max_request_bytes=LIMIT, access=None)
    limits = ConnectionLimits(header_timeout_s=5, body_timeout_s=5, keep_alive_s=5,
                              max_header_bytes=2048)
    connection = HttpConnection(app, HttpListener(app, limits=limits), limits)
    transport = RecordingTransport()
    connection.connection_made(transport)
    return connection, transport


def _feed(pieces: list[bytes]) -> RecordingTransport:
    async def run() -> RecordingTransport:
        connection, transport = _connection()
        for piece in pieces:
            if transport.closed:
                break
            connection.data_received(piece)
            await asyncio.sleep(0)
        for _ in range(20):  # let the answers in flight finish
            await asyncio.sleep(0)
        connection.connection_lost(None)
        return transport

    return asyncio.run(run())


class _Responses:
    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.bodies: list[bytes] = []
        self._body = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status != 100:
            self.statuses.append(status)
            self.bodies.append(self._body)
        self._body = b""


def _parse(data: bytes) -> _Responses:
    responses = _Responses()
    responses.parser.feed_data(data)  # raises if the connection wrote anything but HTTP
    return responses


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def _request(kind: int, body: bytes) -> bytes:
    if kind == 0:
        return b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
    if kind == 1:
        return b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body), body)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7])
                      for i in range(0, len(body), 7))
    return b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n" \
        % chunks


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2), st.binary(max_size=200)), min_size=1,
                max_size=6), st.lists(st.integers(0, 5000), max_size=12))
def test_valid_requests_cut_anywhere_get_their_answers_in_order(
        requests: list[tuple[int, bytes]], cuts: list[int]) -> None:
    stream = b"".join(_request(kind, body) for kind, body in requests)
    transport = _feed(_split(stream, cuts))
    responses = _parse(bytes(transport.written))
    assert responses.statuses == [200] * len(requests)
    for (kind, body), answer in zip(requests, responses.bodies, strict=True):
        assert answer == (b"{}" if kind == 0 else body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n", b"0\r\n\r\n",
                     b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                     b"POST /echo HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
                     b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                     b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
                     b"GET /nothing HTTP/1.0\r\n\r\n", b"X-Pad: " + b"a" * 3000 + b"\r\n",
                     b"GET http://a:b:c/ HTTP/1.1\r\n\r\n", b"GET http://h HTTP/1.1\r\n\r\n",
                     b"fff\r\n" + b"z" * 4095, b"GET /ok HTTP/1.1\r\nUpgrade: h2c\r\n"
                     b"Connection: Upgrade\r\n\r\n"])), max_size=12))
def test_hostile_streams_never_raise_and_get_only_http_back(pieces: list[bytes]) -> None:
    transport = _feed(pieces)
    responses = _parse(bytes(transport.written))
    assert all(100 < s < 600 for s in responses.statuses)
    assert 500 not in responses.statuses  # bad input is the client's fault, never a fault of ours
