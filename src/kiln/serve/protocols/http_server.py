"""kiln's HTTP/1.1 connection: httptools parses, ``HttpApp`` answers, one write per response.

``HttpListener`` (``http_listener``) accepts the connections. A general-purpose server's
protocol (uvicorn's, say) builds an ASGI scope and message dicts for every request, checks
every response header with a regex, writes the head and the body with two system calls and
runs proxy-header middleware: on the tiny-model benchmark that was about a fifth of the
server's CPU (``benchmarks/http_stack.py``). Here the head decides the request (route,
access, declared size: ``HttpApp.admit``) before any body is kept, the body is collected up
to the app's limit, and the answer (``HttpApp.answer``) goes out in one write.

Limits, each enforced by closing the connection:

* the request line and headers must arrive within ``header_timeout_s`` of the connection
  opening or of the request's first byte (slowloris), and hold at most ``max_header_bytes``
  (431);
* a body may pause at most ``body_timeout_s`` between two pieces;
* an idle keep-alive connection is closed after ``keep_alive_s``;
* past ``max_connections`` open connections, a request is answered 503 and its connection
  closed.

Pipelined requests are answered in order; reading pauses while one waits behind another or
while the client is not reading its answers.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote

import httptools

from kiln.serve.protocols.http import Response, encode_error
from kiln.serve.protocols.http_app import Admitted, HttpApp

log = logging.getLogger("kiln.serve.http")

#: Largest request line plus headers accepted, in bytes (Triton: 16 KiB).
MAX_HEADER_BYTES = 16 << 10

_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode())
                 for s in http.HTTPStatus}

#: Bodies larger than this are handed to the transport beside the head instead of being
#: copied into one buffer with it.
_JOIN_LIMIT = 64 << 10


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """How long a client may take and how much it may send, per connection."""

    #: Time to send a request's line and headers, from the connection's (or the request's)
    #: first byte.
    header_timeout_s: float = 10.0
    #: Longest pause between two pieces of a body.
    body_timeout_s: float = 30.0
    #: How long an idle keep-alive connection stays open.
    keep_alive_s: float = 30.0
    max_header_bytes: int = MAX_HEADER_BYTES
    #: Open connections beyond which requests are answered 503 (None: no limit).
    max_connections: int | None = None


class Connections(Protocol):
    """What a connection needs of the listener that accepted it."""

    #: The open connections.
    connections: set[HttpConnection]
    #: The handlers running now.
    tasks: set[asyncio.Task[None]]


class _Exchange:
    """One parsed request waiting for (or getting) its answer."""

    __slots__ = ("body", "head_only", "keep_alive", "step")

    def __init__(self, step: Admitted | Response, body: bytes, keep_alive: bool,
                 head_only: bool) -> None:
        self.step, self.body = step, body
        self.keep_alive, self.head_only = keep_alive, head_only


class HttpConnection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, app: HttpApp, listener: Connections, limits: ConnectionLimits) -> None:
        self.app = app
        self.loop = asyncio.get_running_loop()
        self.listener = listener
        self.header_timeout_s = limits.header_timeout_s
        self.body_timeout_s = limits.body_timeout_s
        self.keep_alive_s = limits.keep_alive_s
        self.max_header_bytes = limits.max_header_bytes
        self.max_connections = limits.max_connections
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: str | None = None
        # The request being parsed.
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._step: Admitted | Response | None = None
        # NOTE: one buffer, not a list of pieces: a body sent in millions of one-byte chunks
        # must not cost a Python object per chunk (Triton CVE-2025-23310).
        self._body: bytes | bytearray = b""
        self._body_size = 0  # also counts the bodies of refused requests, which are not kept
        # Parsed requests in order; the first is being answered when ``_busy``.
        self._queue: deque[_Exchange] = deque()
        self._busy = False
        self._closing = False  # no more requests: close once the queue is answered
        self._write_paused = False
        self._reading = True
        # NOTE: one timer per connection, moved only when a deadline comes *earlier* than
        # it; a keep-alive connection's requests then cost a clock read each, not a timer.
        self._expires: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        self.listener.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else None
        self._arm(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        self._expires = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._closing = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The upgrading request was parsed and is answered as plain HTTP; nothing after
            # it on this connection is HTTP/1.1 any more.
            self._stop(None)
        except httptools.HttpParserCallbackError:
            if self._header_bytes > self.max_header_bytes:
                self._stop(Response(431, encode_error(
                    f"request headers exceed the limit of {self.max_header_bytes} bytes")))
            else:  # a fault of ours while parsing: never leave the connection half-read
                log.error("internal error while reading a request from %s", self.client,
                          exc_info=True)
                self._stop(Response(500, encode_error("internal error while reading the "
                                                      "request")))
        except httptools.HttpParserError as exc:
            self._stop(Response(400, encode_error(f"malformed HTTP request: {exc}")))

    def eof_received(self) -> bool:
        return False  # the client is done sending: close once the transport is flushed

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # -- the listener -------------------------------------------------------------------

    def abort(self) -> None:
        """Close at once, whatever is in flight."""
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    def shutdown(self) -> None:
        """Close now if idle, else after the answer in flight."""
        self._closing = True
        if not self._busy:
            self._close()
        else:
            while len(self._queue) > 1:
                self._queue.pop()

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url, self._headers, self._header_bytes = b"", [], 0
        self._body, self._body_size, self._step = b"", 0, None
        self._arm(self.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        self._headers.append((name.lower(), value))

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            raise ValueError("request headers too large")  # -> HttpParserCallbackError

    def on_headers_complete(self) -> None:
        if self._closing:
            return
        self._arm(self.body_timeout_s)
        headers = dict(self._headers)
        if self.max_connections is not None and \
                len(self.listener.connections) > self.max_connections:
            self._step = Response(503, encode_error(
                f"too many connections (limit {self.max_connections}, --http-max-connections)"),
                headers=[(b"retry-after", b"1")])
        elif (path := _path(self._url)) is None:
            self._step = Response(400, encode_error(
                f"malformed request target '{self._url[:200].decode('latin-1')}'"))
        else:
            self._step = self.app.admit(self.parser.get_method().decode("latin-1"), path,
                                        headers, self.client)
        expects_continue = headers.get(b"expect", b"").lower() == b"100-continue"
        if isinstance(self._step, Response):
            if expects_continue or self._step.status in (413, 503):
                self._stop(self._step)  # do not wait for a body that will not be used
        elif expects_continue and not self._busy:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._step is None:  # stopped: the rest is not read
            return
        self._arm(self.body_timeout_s)
        self._body_size += len(body)
        if self._body_size > self.app.max_request_bytes:
            self._stop(Response(413, encode_error(
                f"request body exceeds the limit of {self.app.max_request_bytes} bytes "
                "(--http-max-input-size)")))
        elif isinstance(self._step, Admitted):
            if not self._body:
                self._body = body  # the usual case: the whole body in one piece, no copy
            else:
                if isinstance(self._body, bytes):
                    self._body = bytearray(self._body)
                self._body += body

    def on_message_complete(self) -> None:
        self._expires = None  # the app's time is not bounded here
        if self._closing or self._step is None:
            return
        body = bytes(self._body) if isinstance(self._body, bytearray) else self._body
        self._queue.append(_Exchange(self._step, body, self.parser.should_keep_alive(),
                                     self.parser.get_method() == b"HEAD"))
        self._step, self._body = None, b""
        if not self._busy:
            self._next()
        self._update_reading()

    # -- answering ----------------------------------------------------------------------

    def _next(self) -> None:
        """Answer the first queued request (in a task, unless its answer is already known)."""
        while self._queue and not self._busy:
            exchange = self._queue[0]
            if isinstance(exchange.step, Response):
                self._finish(exchange, exchange.step)
                continue
            self._busy = True
            task = self.loop.create_task(self._answer(exchange, exchange.step))
            self.listener.tasks.add(task)
            task.add_done_callback(self.listener.tasks.discard)

    async def _answer(self, exchange: _Exchange, step: Admitted) -> None:
        try:
            response = await self.app.answer(step, exchange.body)
        finally:
            self._busy = False
        self._finish(exchange, response)
        self._next()

    def _finish(self, exchange: _Exchange, response: Response) -> None:
        if self._queue and self._queue[0] is exchange:
            self._queue.popleft()
        last = not exchange.keep_alive or (self._closing and not self._queue)
        self._write(_encode(response, close=last, head_only=exchange.head_only))
        if last:
            self._close()
            return
        self._update_reading()
        if not self._queue:
            self._arm(self.keep_alive_s)

    def _stop(self, response: Response | None) -> None:
        """No more requests on this connection: answer what was parsed, then ``response``
        (if any), then close."""
        self._closing = True
        self._step = None
        if response is not None:
            self._queue.append(_Exchange(response, b"", False, False))
        elif self._queue:
            self._queue[-1].keep_alive = False
        if not self._queue:
            self._close()
        elif not self._busy:
            self._next()
        self._update_reading()

    def _write(self, data: bytes | list[bytes]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if isinstance(data, list):
            self.transport.writelines(data)
        else:
            self.transport.write(data)

    def _close(self) -> None:
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _update_reading(self) -> None:
        """Read while nothing waits behind the request in flight and the client reads."""
        if self.transport is None or self.transport.is_closing():
            return
        wanted = not self._write_paused and not self._closing and len(self._queue) <= 1
        if wanted != self._reading:
            self._reading = wanted
            if wanted:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    # -- timeouts -------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._expires = self.loop.time() + seconds
        if self._timer is None or self._timer_at > self._expires:
            self._schedule(self._expires)

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = self.loop.call_at(when, self._check), when

    def _check(self) -> None:
        self._timer = None
        if self._expires is None:
            return
        if self.loop.time() < self._expires:
            self._schedule(self._expires)
        else:
            self._close()


def _path(target: bytes) -> str | None:
    """The decoded path of a request target (origin or absolute form), None if malformed."""
    try:
        path = httptools.parse_url(target).path
    except httptools.HttpParserInvalidURLError:
        return None
    return unquote(path.decode("latin-1")) if path else "/"


def _encode(response: Response, *, close: bool, head_only: bool) -> bytes | list[bytes]:
    body = response.body
    parts = [_STATUS_LINES.get(response.status) or b"HTTP/1.1 %d \r\n" % response.status,
             b"content-type: ", response.content_type,
             b"\r\ncontent-length: %d\r\n" % len(body)]
    for name, value in response.headers:
        parts += (name, b": ", value, b"\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if head_only or not body:
        return b"".join(parts)
    if len(body) > _JOIN_LIMIT:
        return [b"".join(parts), body]
    parts.append(body)
    return b"".join(parts)
