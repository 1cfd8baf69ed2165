"""Triton's model repository extension over HTTP (route group ``repository``).

    POST /v2/repository/index             {"ready": true}?  -> [{name, version, state, reason}]
    POST /v2/repository/models/{m}/load   {"parameters": {"config": "<JSON>"}}?
    POST /v2/repository/models/{m}/unload {"parameters": {"unload_dependents": ...}}?
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from kiln.errors import InvalidArgument
from kiln.serve.core.control import IndexRow, ModelControl
from kiln.serve.protocols.http import Request, Response, Route, route

GROUP = "repository"


def repository_routes(control: ModelControl) -> list[Route]:
    """The repository extension's routes; each decodes, calls ``control``, encodes."""

    async def index(request: Request) -> Response:
        ready = _body(request).get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidArgument("field 'ready' of a repository index request must be a boolean")
        rows = await control.index(ready_only=ready)
        return Response(body=orjson.dumps([_row(r) for r in rows]))

    async def load(request: Request) -> Response:
        await control.load(request.params["model"], _parameters(request))
        return Response()

    async def unload(request: Request) -> Response:
        await control.unload(request.params["model"], _parameters(request))
        return Response()

    return [
        route("POST", "/v2/repository/index", index, group=GROUP, reads_body=True),
        _any_name("/load", load),
        _any_name("/unload", unload),
    ]


def _any_name(action: str, handler: Any) -> Route:
    # NOTE: the name may hold '/' (a decoded %2F) so that such names reach the name check
    # and are refused with 400 instead of falling through to 404.
    pattern = re.compile(rf"/v2/repository/models/(?P<model>.+){re.escape(action)}$")
    return Route("POST", pattern, handler, GROUP, reads_body=True)


def _body(request: Request) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("request body must be a JSON object")
    return body


def _parameters(request: Request) -> dict[str, Any]:
    parameters = _body(request).get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidArgument("field 'parameters' must be a JSON object")
    return parameters


def _row(row: IndexRow) -> dict[str, str]:
    out = {"name": row.name}
    for key in ("version", "state", "reason"):
        if value := getattr(row, key):
            out[key] = value
    return out
