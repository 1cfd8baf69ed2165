"""A lean asyncio HTTP/1.1 client for load generation: keep-alive connections, prebuilt requests.

A load generator that costs more CPU than the server it measures reports its own limit, not
the server's. This client keeps the per-request work to one ``transport.write`` of bytes built
once (``build_request``) and one pass of ``httptools``' C parser over the reply, on a pool of
keep-alive connections (one per concurrent caller, like ``wrk``).

    client = HttpClient("127.0.0.1", 8000)
    raw = build_request("POST", "/v2/models/digits/infer", "127.0.0.1:8000", body)
    reply = await client.send(raw)          # HttpReply(status, headers, body)
    await client.close()
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

import httptools

from kiln.errors import Unavailable


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A complete response: status code, lower-cased headers, body."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes


def build_request(method: str, path: str, host: str, body: bytes = b"", *,
                  headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The whole request as bytes, ready to be written as many times as needed."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[HttpReply] | None = None
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self.reusable = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Unavailable(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._fail(Unavailable(f"the server closed the connection ({exc or 'EOF'})"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers, self._body = {}, []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.reusable = self.reusable and self._parser.should_keep_alive()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(HttpReply(self._parser.get_status_code(), self._headers,
                                              b"".join(self._body)))

    def _fail(self, exc: Exception) -> None:
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self._transport is not None:
            self._transport.close()

    async def exchange(self, raw: bytes) -> HttpReply:
        if self._transport is None or self._transport.is_closing():
            raise Unavailable("the connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return await self._waiter

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()


class HttpClient:
    """A pool of keep-alive connections to one ``host:port``; ``send`` is safe to call from
    many coroutines at once (each borrows its own connection)."""

    def __init__(self, host: str, port: int, *, timeout_s: float = 30.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    async def send(self, raw: bytes) -> HttpReply:
        """Send a request built by ``build_request``; raises ``Unavailable`` when the server
        cannot be reached, ``TimeoutError`` after ``timeout_s``."""
        reused = bool(self._idle)
        connection = self._idle.pop() if reused else await self._connect()
        try:
            async with asyncio.timeout(self.timeout_s):
                reply = await connection.exchange(raw)
        except Unavailable:
            self._discard(connection)
            if not reused:
                raise
            # NOTE: a kept-alive connection may have been closed by the server while idle;
            # the request was never answered, so it is safe to send it once more.
            return await self.send(raw)
        except BaseException:
            self._discard(connection)
            raise
        if connection.reusable:
            self._idle.append(connection)
        else:
            self._discard(connection)
        return reply

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(_Connection, self.host, self.port)
        except OSError as exc:
            raise Unavailable(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        self._all.add(connection)
        return connection

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._all.discard(connection)

    async def close(self) -> None:
        for connection in list(self._all):
            self._discard(connection)
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
