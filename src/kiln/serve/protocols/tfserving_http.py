"""TensorFlow Serving REST routes, served on the same HTTP port as KServe V2.

Paths follow TF Serving's own regular expressions: matched case-insensitively, the model
name and label free of ``/`` and ``:``, the version digits only, so that
``/v1/models/m/versions/2:predict`` splits into model ``m``, version ``2``, verb predict.

    GET  /v1/models/{m}[/versions/{v}|/labels/{l}]             model version status
    GET  /v1/models/{m}[/versions/{v}|/labels/{l}]/metadata    signature_def
    POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict     row or columnar tensors
    POST /v1/models/{m}[/versions/{v}|/labels/{l}]:classify    Example-based (see codec)
    POST /v1/models/{m}[/versions/{v}|/labels/{l}]:regress

Each handler decodes with the model's signature, calls ``DataPlane.infer`` (validation and
batching are the V2 path's own), and encodes; errors go through ``HttpApp``'s error table.
"""

from __future__ import annotations

import functools
import re
from typing import Protocol

from kiln.serve.codecs import tfserving, tfserving_examples
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.core.dataplane import DataPlane
from kiln.serve.messages import InferenceRequest, InferenceResponse
from kiln.serve.protocols.http import Handler, Request, Response, Route
from kiln.tensors import Signature

_MODEL = r"/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"


class _Codec(Protocol):
    """A TF Serving codec's decoding function (``decode_predict``, ...)."""

    def __call__(self, signature: Signature, body: bytes, *, model_name: str,
                 model_version: str | None, limits: DecodeLimits) -> InferenceRequest: ...


def _route(method: str, suffix: str, handler: Handler, *, group: str,
           reads_body: bool = False) -> Route:
    pattern = re.compile(_MODEL + re.escape(suffix) + "$", re.IGNORECASE)
    return Route(method, pattern, handler, group, reads_body)


def tfserving_routes(plane: DataPlane, limits: DecodeLimits) -> list[Route]:
    """The TF Serving route table; each handler decodes, calls the data plane, encodes."""
    handlers = _Handlers(plane, limits)
    return [
        _route("GET", "", handlers.status, group="health"),
        _route("GET", "/metadata", handlers.metadata, group="metadata"),
        _route("POST", ":predict", handlers.predict, group="infer", reads_body=True),
        _route("POST", ":classify", handlers.classify, group="infer", reads_body=True),
        _route("POST", ":regress", handlers.regress, group="infer", reads_body=True),
    ]


class _Handlers:
    def __init__(self, plane: DataPlane, limits: DecodeLimits) -> None:
        self.plane = plane
        self.limits = limits

    async def status(self, request: Request) -> Response:
        name, selector = _model(request)
        return Response(body=tfserving.encode_model_status(
            self.plane.model_status(name, selector)))

    async def metadata(self, request: Request) -> Response:
        name, selector = _model(request)
        view = self.plane.model_config(name, selector)
        return Response(body=tfserving.encode_model_metadata(name, view.version,
                                                             view.signature))

    async def predict(self, request: Request) -> Response:
        decoded, response = await self._infer(request, tfserving.decode_predict)
        return Response(body=tfserving.encode_predict(
            response.outputs, row_format=decoded.wire == tfserving.ROW))

    async def classify(self, request: Request) -> Response:
        decoded, response = await self._infer(request, tfserving_examples.decode_classify)
        scores, labels = decoded.wire
        return Response(body=tfserving_examples.encode_classify(
            response.outputs[scores], response.outputs[labels] if labels else None))

    async def regress(self, request: Request) -> Response:
        decoded, response = await self._infer(request, tfserving_examples.decode_regress)
        return Response(body=tfserving_examples.encode_regress(response.outputs[decoded.wire]))

    async def _infer(self, request: Request, codec: _Codec
                     ) -> tuple[InferenceRequest, InferenceResponse]:
        name, selector = _model(request)
        decode = functools.partial(codec, body=request.body, model_name=name,
                                   model_version=selector, limits=self.limits)
        return await self.plane.infer(name, selector, decode)


def _model(request: Request) -> tuple[str, str | None]:
    """The model name and its version selector (a version number or a label), if any."""
    params = request.params
    return params["model"], params.get("version") or params.get("label")
