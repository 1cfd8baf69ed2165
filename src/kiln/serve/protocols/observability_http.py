"""HTTP routes for seeing into the server: Triton's logging extension and Prometheus ``/metrics``.

``/v2/logging`` lives on the main HTTP listener in the route group ``logging`` and answers
loopback callers only; ``/metrics`` is served on its own listener (``--metrics-port``).
"""

from __future__ import annotations

import ipaddress

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kiln.errors import InvalidArgument, PermissionDenied
from kiln.serve.observability.logcontrol import LogControl
from kiln.serve.protocols.http import Request, Response, Route, route


def logging_routes(control: LogControl) -> list[Route]:
    """``GET|POST /v2/logging``: read or change the log settings (Triton's names)."""

    async def get_settings(request: Request) -> Response:
        _loopback_only(request)
        return Response(body=orjson.dumps(control.settings()))

    async def update_settings(request: Request) -> Response:
        _loopback_only(request)
        try:
            changes = orjson.loads(request.body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise InvalidArgument(f"logging settings are not valid JSON: {exc}") from None
        return Response(body=orjson.dumps(control.update(changes)))

    return [route("GET", "/v2/logging", get_settings, group="logging"),
            route("POST", "/v2/logging", update_settings, group="logging", reads_body=True)]


def metrics_routes(registry: CollectorRegistry) -> list[Route]:
    """``GET /metrics``: the registry in Prometheus' text format, collected at each scrape."""

    async def metrics(request: Request) -> Response:
        return Response(body=generate_latest(registry),
                        content_type=CONTENT_TYPE_LATEST.encode())

    return [route("GET", "/metrics", metrics, group="metrics")]


def _loopback_only(request: Request) -> None:
    try:
        loopback = request.client is not None and ipaddress.ip_address(request.client).is_loopback
    except ValueError:  # a Unix socket path, not an address
        loopback = False
    if not loopback:
        raise PermissionDenied("the logging API answers callers on this machine (loopback) only")
