"""Connection-level limits uvicorn lacks: header and body timeouts, a header size cap.

uvicorn only times out idle keep-alive connections *between* requests, so a client that
connects and sends nothing, or sends its headers one byte at a time (slowloris), or stops
half-way through a body, holds a connection forever. ``limited_protocol`` returns an HTTP
protocol class (for ``uvicorn.Config(http=...)``) that closes such connections:

* the request line and headers must arrive within ``header_timeout_s`` of the connection
  opening or of the request's first byte, and hold at most ``max_header_bytes``;
* a body may pause at most ``body_timeout_s`` between two pieces.

Closing the connection ends a pending body read with a disconnect, which the ASGI app
treats as "no request" (``ClientDisconnected``), never as a short body.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Largest request line plus headers accepted, in bytes (Triton: 16 KiB).
MAX_HEADER_BYTES = 16 << 10


class _LimitedProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = MAX_HEADER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        #: When the current phase must be over (``None``: no deadline, e.g. while the app
        #: computes the response).
        self._expires: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # NOTE: one timer per connection, moved only when a deadline comes *earlier* than it; a
    # keep-alive connection's requests then cost a clock read each, not a timer each.
    def _arm(self, seconds: float) -> None:
        self._expires = self.loop.time() + seconds
        if self._timer is None or self._timer_at > self._expires:
            self._schedule(self._expires)

    def _disarm(self) -> None:
        self._expires = None

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
        elif not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        self._arm(self.header_timeout_s)
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            # The parser turns this into an error, and uvicorn into ``send_400_response``.
            raise ValueError("request headers too large")

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout_s)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._arm(self.body_timeout_s)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._header_bytes <= self.max_header_bytes:
            super().send_400_response(msg)
            return
        self._disarm()
        body = b'{"error":"request headers exceed the limit of %d bytes"}' % self.max_header_bytes
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json"
            b"\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        self.transport.close()


def limited_protocol(*, header_timeout_s: float, body_timeout_s: float,
                     max_header_bytes: int = MAX_HEADER_BYTES) -> type[asyncio.Protocol]:
    """An httptools-based HTTP protocol class enforcing these limits."""
    return type("KilnHttpProtocol", (_LimitedProtocol,), {
        "header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s,
        "max_header_bytes": max_header_bytes,
    })
