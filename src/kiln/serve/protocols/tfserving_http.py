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

import re

from kiln.errors import NotFound
from kiln.serve.codecs import tfserving, tfserving_examples
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.dataplane import DataPlane
from kiln.serve.messages import InferenceRequest, RequestedOutput
from kiln.serve.model import ModelVersion
from kiln.serve.protocols.http import Handler, Request, Response, Route
from kiln.tensors import TensorDict

_MODEL = r"/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"


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
        entry = self.plane.registry.entry(name)
        if selector is None:
            if not entry.status:
                reason = f": {entry.reason}" if entry.reason else ""
                raise NotFound(f"model '{name}' has no versions{reason}")
            return Response(body=tfserving.encode_model_status(entry.status.values()))
        number = self.plane.registry.resolve(name, selector)
        found = entry.status.get(number)
        if found is None:
            raise NotFound(f"model '{name}' has no version {number}")
        return Response(body=tfserving.encode_model_status([found]))

    async def metadata(self, request: Request) -> Response:
        model = self._serving(request)
        return Response(body=tfserving.encode_model_metadata(model.name, model.version,
                                                             model.signature))

    async def predict(self, request: Request) -> Response:
        model = self._serving(request)
        decoded = tfserving.decode_predict(request.body, model.signature,
                                           model_name=model.name, limits=self.limits)
        decoded.request.model_version = str(model.version)
        response = await self.plane.infer(decoded.request)
        return Response(body=tfserving.encode_predict(response.outputs,
                                                      row_format=decoded.row_format))

    async def classify(self, request: Request) -> Response:
        model = self._serving(request)
        scores, labels = tfserving_examples.classify_outputs(model.signature, model.name)
        outputs = await self._run_examples(model, request.body,
                                           [scores] + ([labels] if labels else []))
        return Response(body=tfserving_examples.encode_classify(
            outputs[scores], outputs[labels] if labels else None))

    async def regress(self, request: Request) -> Response:
        model = self._serving(request)
        output = tfserving_examples.regress_output(model.signature, model.name)
        outputs = await self._run_examples(model, request.body, [output])
        return Response(body=tfserving_examples.encode_regress(outputs[output]))

    def _serving(self, request: Request) -> ModelVersion:
        """The version that serves this request; the request then pins it by number, so a
        version swap cannot come between reading its signature and running it."""
        name, selector = _model(request)
        return self.plane.registry.get(name, selector)

    async def _run_examples(self, model: ModelVersion, body: bytes,
                            outputs: list[str]) -> TensorDict:
        inputs = tfserving_examples.decode_examples(body, model.signature,
                                                    model_name=model.name, limits=self.limits)
        response = await self.plane.infer(InferenceRequest(
            model_name=model.name, model_version=str(model.version), inputs=inputs,
            outputs=[RequestedOutput(n) for n in outputs],
        ))
        return response.outputs


def _model(request: Request) -> tuple[str, str | None]:
    """The model name and its version selector (a version number or a label), if any."""
    params = request.params
    return params["model"], params.get("version") or params.get("label")
