"""The HTTP servers ``benchmarks/http_stack.py`` compares. Each runner serves one ASGI app
(kiln's ``HttpApp``) on ``host:port`` in the running event loop until ``stop`` is set.

One of them is an adapter written here: ``granian-rsgi`` runs ``HttpApp`` through granian's
RSGI interface.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from kiln.errors import KilnError
from kiln.serve.protocols.http import (
    Request,
    Route,
    check_declared_size,
    decode_body,
    encode_error,
    receive_body,
)
from kiln.serve.protocols.http_app import HttpApp, error_response

Runner = Callable[[Any, str, int, asyncio.Event], Awaitable[None]]


class Exchange:
    """One request through an ASGI app with its whole body in hand."""

    __slots__ = ("chunks", "headers", "request_body", "status")

    def __init__(self, body: bytes) -> None:
        self.request_body = body
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": self.request_body, "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = message.get("headers", [])
        else:
            self.chunks.append(message.get("body", b""))

    def body(self) -> bytes:
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)


def http_scope(method: str, path: str, query: bytes,
               headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
            "headers": headers}


# --- uvicorn, hypercorn, granian ----------------------------------------------------------

async def _uvicorn(app: Any, host: str, port: int, stop: asyncio.Event, protocol: str) -> None:
    config = uvicorn.Config(
        app, host=host, port=port, http=protocol, loop="none", lifespan="off", access_log=False,
        log_config=None, server_header=False, date_header=False, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task


async def uvicorn_httptools(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    """uvicorn's own httptools protocol (what kiln ran before ``HttpConnection``)."""
    await _uvicorn(app, host, port, stop, "httptools")


async def uvicorn_h11(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    await _uvicorn(app, host, port, stop, "h11")


async def uvicorn_starlette(app: HttpApp, host: str, port: int, stop: asyncio.Event) -> None:
    await _uvicorn(starlette_app(app), host, port, stop, "httptools")


async def hypercorn(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.include_date_header = config.include_server_header = False
    config.keep_alive_timeout = 30
    config.keep_alive_max_requests = 1 << 30  # default 1000: wrk would reconnect
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


async def _granian(target: Any, interface: str, host: str, port: int,
                   stop: asyncio.Event) -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.server.embed import Server

    server = Server(target, address=host, port=port, interface=Interfaces(interface),
                    http=HTTPModes.http1, websockets=False, log_enabled=False)
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.stop()
    await task


async def granian_asgi(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    await _granian(app, "asginl", host, port, stop)


async def granian_rsgi(app: Any, host: str, port: int, stop: asyncio.Event) -> None:
    await _granian(RsgiAdapter(app), "rsgi", host, port, stop)


class RsgiAdapter:
    """An ASGI app behind granian's RSGI interface (body in hand, one bytes response)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        exchange = Exchange(await protocol())
        headers = [(k.encode(), v.encode()) for k, v in scope.headers.items()]
        await self.app(http_scope(scope.method, scope.path, scope.query_string.encode(),
                                  headers), exchange.receive, exchange.send)
        protocol.response_bytes(exchange.status,
                                [(k.decode(), v.decode()) for k, v in exchange.headers],
                                exchange.body())


# --- Starlette routing in front of kiln's handlers -----------------------------------------

def starlette_app(app: HttpApp) -> Any:
    """kiln's routes as Starlette routes: Starlette matches, builds its Request and Response;
    kiln's handlers (and error table) do the rest."""
    from starlette.applications import Starlette
    from starlette.convertors import CONVERTOR_TYPES
    from starlette.routing import Route as StarletteRoute

    routes = []
    for r in app.router.routes:
        s = StarletteRoute("/", _starlette_endpoint(r, app.max_request_bytes), methods=[r.method])
        s.path_regex = r.pattern  # kiln's own patterns, so both stacks accept the same paths
        s.param_convertors = {name: CONVERTOR_TYPES["str"] for name in r.pattern.groupindex}
        routes.append(s)
    return Starlette(routes=routes, exception_handlers={404: _starlette_error,
                                                         405: _starlette_error})


async def _starlette_error(request: Any, exc: Any) -> Any:
    from starlette.responses import Response as StarletteResponse

    path = request.url.path
    message = (f"no endpoint at {path}" if exc.status_code == 404
               else f"method {request.method} is not allowed on {path}")
    return StarletteResponse(encode_error(message), exc.status_code,
                             media_type="application/json")


def _starlette_endpoint(r: Route, limit: int) -> Callable[[Any], Awaitable[Any]]:
    from starlette.responses import Response as StarletteResponse

    async def endpoint(request: Any) -> Any:
        headers = dict(request.headers.raw)
        try:
            body = b""
            if r.reads_body:
                check_declared_size(headers, limit)
                body = decode_body(await receive_body(request.receive, limit), headers, limit)
            response = await r.handler(Request(r.method, request.url.path, headers,
                                               request.path_params, body))
        except KilnError as exc:
            response = error_response(exc)
        return StarletteResponse(
            response.body, response.status, media_type=response.content_type.decode(),
            headers={k.decode(): v.decode() for k, v in response.headers})

    return endpoint


#: Stack name -> runner; the current stack (kiln's own connection) is ``KilnServer`` itself.
RUNNERS: dict[str, Runner] = {
    "uvicorn-httptools": uvicorn_httptools,
    "uvicorn-h11": uvicorn_h11,
    "hypercorn": hypercorn,
    "granian-asgi": granian_asgi,
    "granian-rsgi": granian_rsgi,
    "uvicorn-starlette": uvicorn_starlette,
}
