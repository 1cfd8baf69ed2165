"""KServe V2 REST routes (with Triton's binary tensor extension and config endpoint)."""

from __future__ import annotations

import functools
import time
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict

from kiln.repository.pbtxt import config_to_proto
from kiln.serve.codecs import v2_json
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.core.dataplane import DataPlane
from kiln.serve.messages import InferenceRequest
from kiln.serve.observability.requestlog import usable_id
from kiln.serve.protocols.http import Request, Response, Route, route

_HEADER_LENGTH_NAME = b"Inference-Header-Content-Length"


def v2_routes(plane: DataPlane, limits: DecodeLimits) -> list[Route]:
    """The V2 route table; each handler decodes, calls the data plane, encodes."""

    async def live(request: Request) -> Response:
        return Response(200 if plane.live() else 503)

    async def ready(request: Request) -> Response:
        return Response(200 if plane.ready() else 503)

    async def server_metadata(request: Request) -> Response:
        return Response(body=v2_json.encode_server_metadata(plane.server_metadata()))

    async def model_metadata(request: Request) -> Response:
        name, version = _model(request)
        return Response(body=v2_json.encode_model_metadata(plane.model_metadata(name, version)))

    async def model_ready(request: Request) -> Response:
        name, version = _model(request)
        plane.check_model(name)  # 404 for an unknown model
        return Response(200 if plane.model_ready(name, version) else 503)

    async def model_config(request: Request) -> Response:
        name, version = _model(request)
        view = plane.model_config(name, version)
        message = config_to_proto(view.name, view.platform, view.backend, view.config,
                                  view.signature)
        return Response(body=orjson.dumps(_ints(MessageToDict(
            message, preserving_proto_field_name=True))))

    async def infer(request: Request) -> Response:
        name, version = _model(request)
        decode = functools.partial(
            v2_json.decode_infer_request, body=request.body, model_name=name,
            model_version=version, limits=limits,
            header_length=request.header(v2_json.HEADER_LENGTH))

        def name_request(decoded: InferenceRequest) -> None:
            if request.id is None:
                request.id = usable_id(decoded.id)

        record = request.record
        if record is None:
            decoded, response = await plane.infer(name, version, decode,
                                                  on_decoded=name_request)
        else:
            record.model = name
            record.traceparent = _text(request.header(b"traceparent"))
            decoded, response = await plane.infer(name, version, decode, timing=record.timing,
                                                  on_decoded=name_request)
            record.version, record.encoding = response.model_version, time.monotonic_ns()
        body, json_length = v2_json.encode_infer_response(response, decoded)
        if json_length is None:
            return Response(body=body)
        return Response(body=body, content_type=b"application/octet-stream",
                        headers=[(_HEADER_LENGTH_NAME, str(json_length).encode())])

    async def statistics(request: Request) -> Response:
        name, version = request.params.get("model"), request.params.get("version")
        return Response(body=orjson.dumps({"model_stats": plane.statistics(name, version)}))

    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    routes = [
        route("GET", "/v2/health/live", live, group="health"),
        route("GET", "/v2/health/ready", ready, group="health"),
        route("GET", "/v2", server_metadata, group="metadata"),
        route("GET", "/v2/models/stats", statistics, group="statistics"),
    ]
    for base in (model, versioned):
        routes += [
            route("GET", base, model_metadata, group="metadata"),
            route("GET", f"{base}/ready", model_ready, group="health"),
            route("GET", f"{base}/config", model_config, group="metadata"),
            route("GET", f"{base}/stats", statistics, group="statistics"),
            route("POST", f"{base}/infer", infer, group="infer", reads_body=True),
        ]
    return routes


def _model(request: Request) -> tuple[str, str | None]:
    return request.params["model"], request.params.get("version")


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


_INT64_FIELDS = {"dims", "versions", "max_queue_delay_microseconds",
                 "default_timeout_microseconds", "priority_levels", "default_priority_level"}


def _ints(value: Any) -> Any:
    """Protobuf's JSON writes 64-bit integers as strings; Triton's config JSON has numbers."""
    if isinstance(value, dict):
        return {k: ([int(x) for x in v] if isinstance(v, list) else int(v))
                if k in _INT64_FIELDS else _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value
