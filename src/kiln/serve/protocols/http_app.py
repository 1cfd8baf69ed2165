"""The ASGI application every HTTP protocol mounts its routes on, and HTTP's error table."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from kiln.errors import ErrorKind, KilnError
from kiln.serve.observability.requestlog import RequestIds, RequestObserver, usable_id
from kiln.serve.protocols.http import (
    ClientDisconnected,
    Receive,
    Request,
    Response,
    Route,
    Router,
    Scope,
    Send,
    check_declared_size,
    decode_body,
    encode_error,
    receive_body,
    send_response,
)
from kiln.serve.security.auth import AccessControl, check_groups

log = logging.getLogger("kiln.serve.http")

#: The one table mapping error kinds to HTTP status codes (Triton's mapping, plus 413).
HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.PERMISSION_DENIED: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.RESOURCE_EXHAUSTED: 413,
    ErrorKind.INTERNAL: 500,
    ErrorKind.UNIMPLEMENTED: 501,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.OVERLOADED: 503,
}


def error_response(exc: KilnError) -> Response:
    headers = []
    if exc.retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, round(exc.retry_after_s))).encode()))
    if exc.kind is ErrorKind.UNAUTHENTICATED:
        headers.append((b"www-authenticate", b'Bearer realm="kiln"'))
    return Response(HTTP_STATUS[exc.kind], encode_error(exc.message), headers=headers)


@dataclass(slots=True)
class Admitted:
    """A request whose head was accepted: its route, waiting for its body."""

    route: Route
    request: Request


class HttpApp:
    """Dispatches HTTP requests to routes; every failure becomes ``{"error": ...}``.

    A request is decided in two steps, so a server can refuse it before reading its body:
    ``admit`` (route, access, declared size) and ``answer`` (body decoding and the handler).
    ``HttpConnection`` calls them directly; ``__call__`` offers the same as an ASGI app.
    Every response carries the request's id in ``x-request-id`` (the caller's, when it sent a
    usable one); ``observer`` logs and traces requests (none: only failures are logged).
    ``access`` (``None``: authentication off) is asked about every route before its body is
    read; building an app whose routes name a group without an access rule fails.
    """

    def __init__(self, routes: Iterable[Route], *, max_request_bytes: int,
                 access: AccessControl | None, observer: RequestObserver | None = None) -> None:
        self.router = Router(routes)
        check_groups((r.group for r in self.router.routes), "HTTP routes")
        self.max_request_bytes = max_request_bytes
        self.access = access
        self.observer = observer or RequestObserver()
        self.ids = RequestIds()

    def admit(self, method: str, path: str, headers: dict[bytes, bytes],
              client: str | None) -> Admitted | Response:
        """The route for a request head, or the final answer (404, 405, 401, 403, 413)."""
        route, params, path_exists = self.router.match(method, path)
        if route is None:
            status = 405 if path_exists else 404
            message = (f"method {method} is not allowed on {path}" if path_exists
                       else f"no endpoint at {path}")
            return Response(status, encode_error(message))
        request = Request(method, path, headers, params, id=usable_id(headers.get(_ID_HEADER)),
                          client=client, record=self.observer.begin())
        try:
            if self.access is not None:
                self.access.check(route.group, headers.get(b"authorization"),
                                  params.get("model"))
            if route.reads_body:
                check_declared_size(headers, self.max_request_bytes)
        except Exception as exc:
            return self._finish(request, None, exc)
        return Admitted(route, request)

    async def answer(self, admitted: Admitted, body: bytes) -> Response:
        """The response to an admitted request, given its body as received."""
        request = admitted.request
        try:
            if admitted.route.reads_body:
                request.body = decode_body(body, request.headers, self.max_request_bytes)
            response = await admitted.route.handler(request)
        except Exception as exc:
            return self._finish(request, None, exc)
        return self._finish(request, response, None)

    def _finish(self, request: Request, response: Response | None,
                error: BaseException | None) -> Response:
        request.id = request.id or self.ids.new()
        if error is not None:
            response = _error_response(error, request.method, request.path, request.id)
        assert response is not None
        response.headers.append((_ID_HEADER, request.id.encode()))
        if request.record is not None or error is not None:
            self.observer.finish(request.record, request_id=request.id, protocol="http",
                                 method=request.method, path=request.path,
                                 status=response.status, error=error)
        return response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        client = scope.get("client")
        step = self.admit(scope["method"], scope["path"], dict(scope["headers"]),
                          client[0] if client else None)
        if isinstance(step, Admitted):
            try:
                body = (await receive_body(receive, self.max_request_bytes)
                        if step.route.reads_body else b"")
            except ClientDisconnected:
                return
            except Exception as exc:
                step = self._finish(step.request, None, exc)
            else:
                step = await self.answer(step, body)
        await send_response(send, step)


_ID_HEADER = b"x-request-id"


def _error_response(exc: BaseException, method: str, path: str, request_id: str) -> Response:
    if isinstance(exc, KilnError) and exc.kind is not ErrorKind.INTERNAL:
        return error_response(exc)
    # A fault in kiln or a backend: report it with the request id, keep serving.
    log.error("internal error on %s %s (request id %s): %s", method, path, request_id, exc,
              exc_info=exc)
    message = exc.message if isinstance(exc, KilnError) else "internal error"
    return Response(500, encode_error(f"{message} (request id {request_id})"))


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
