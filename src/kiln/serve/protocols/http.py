"""Requests, responses, a visible route table, and request bodies read within limits.

kiln's HTTP path is its own rather than a web framework's because the per-request cost of
routing, validation and middleware in frameworks is most of a small model's serving time
(see ``benchmarks/``); this module keeps the plumbing to what the protocols need, for
kiln's own connection (``http_server``) and for ASGI servers alike.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from kiln.errors import InvalidArgument, ResourceExhausted
from kiln.serve.observability.requestlog import RequestRecord

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[bytes, bytes]
    params: dict[str, str]
    body: bytes = b""
    #: The request id (see ``kiln.serve.observability.requestlog``); a handler may set it
    #: when still None.
    id: str | None = None
    #: The caller's address, when the server knows it.
    client: str | None = None
    #: Phase timestamps, when the request is being logged or traced (else None).
    record: RequestRecord | None = None

    def header(self, name: bytes) -> bytes | None:
        return self.headers.get(name)


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


def encode_error(message: str) -> bytes:
    """An error body as KServe V2 (and tritonclient) expect it: ``{"error": "..."}``."""
    return orjson.dumps({"error": message})


class ClientDisconnected(Exception):
    """The client went away (or was cut off for being too slow) before sending its body."""


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint. ``group`` names the API group it belongs to (for access control)."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler
    group: str
    #: Whether the handler needs the request body.
    reads_body: bool = False


def route(method: str, path: str, handler: Handler, *, group: str,
          reads_body: bool = False) -> Route:
    """``path`` uses ``{name}`` placeholders for one path segment each."""
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
    return Route(method, re.compile(f"{regex}$"), handler, group, reads_body)


class Router:
    """Finds the route for a method and path; 404 and 405 are told apart."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        self._by_method: dict[str, tuple[Route, ...]] = {}
        for r in self.routes:
            self._by_method[r.method] = (*self._by_method.get(r.method, ()), r)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """Returns (route, params, path_exists)."""
        for candidate in self._by_method.get(method, ()):
            found = candidate.pattern.match(path)
            if found:
                return candidate, found.groupdict(), True
        return None, {}, any(r.pattern.match(path) for r in self.routes)


def check_declared_size(headers: dict[bytes, bytes], limit: int) -> None:
    """Refuses a body whose declared Content-Length is past ``limit`` before it is read."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ResourceExhausted(
            f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes "
            "(--http-max-input-size)"
        )


async def receive_body(receive: Receive, limit: int) -> bytes:
    """An ASGI request's body as sent, refused past ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ResourceExhausted(
                f"request body exceeds the limit of {limit} bytes (--http-max-input-size)"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_body(body: bytes, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The body decompressed if gzip/deflate, refused past ``limit`` bytes once inflated."""
    encoding = headers.get(b"content-encoding")
    if encoding is None:
        return body
    encoding = encoding.lower()
    if encoding in (b"gzip", b"deflate"):
        return _decompress(body, encoding, limit)
    if encoding != b"identity":
        raise InvalidArgument(f"unsupported Content-Encoding '{encoding.decode(errors='replace')}'")
    return body


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    wbits = 16 + zlib.MAX_WBITS if encoding == b"gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidArgument(
            f"request body is not valid {encoding.decode()} data: {exc}"
        ) from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ResourceExhausted(
            f"decompressed request body exceeds the limit of {limit} bytes (--http-max-input-size)"
        )
    return out


async def send_response(send: Send, response: Response) -> None:
    headers = [(b"content-type", response.content_type),
               (b"content-length", str(len(response.body)).encode()), *response.headers]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
