"""The transport-neutral data plane: health, metadata and inference.

Protocol adapters (V2 REST, V2 gRPC, TF Serving REST) decode wire requests into
``InferenceRequest``, call the data plane, and encode what it returns; nothing here knows
a wire format.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Any

from kiln import __version__
from kiln.errors import ErrorKind, InternalError, KilnError, Unavailable
from kiln.serve.messages import InferenceRequest, InferenceResponse
from kiln.serve.model import ModelVersion
from kiln.serve.registry import ModelRegistry
from kiln.serve.statistics import Timing
from kiln.serve.validation import schedule_parameters, validate_request
from kiln.tensors import TensorSpec

#: Triton protocol extensions kiln implements (reported by server metadata).
EXTENSIONS = ("binary_tensor_data", "parameters", "model_configuration", "schedule_policy",
              "statistics", "logging")

#: The label of requests that named no model (or version) the server knows; keeps the
#: metrics' label values bounded whatever clients send.
UNKNOWN = "_unknown"


def failure_reason(exc: BaseException) -> str:
    """The bounded reason a request failed: an ``ErrorKind`` value."""
    return exc.kind.value if isinstance(exc, KilnError) else ErrorKind.INTERNAL.value


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class DataPlane:
    """What every protocol adapter calls; one instance per server."""

    def __init__(self, registry: ModelRegistry, *, strict_readiness: bool = True) -> None:
        self.registry = registry
        self.strict_readiness = strict_readiness
        #: False once shutdown begins: readiness answers no and new requests are refused.
        self.accepting = True
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: Failures of requests that reached no loaded version: (model label, reason) -> n.
        self.unresolved_failures: collections.Counter[tuple[str, str]] = collections.Counter()

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        if not self.accepting:
            return False
        return self.registry.all_ready() if self.strict_readiness else True

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name="kiln", version=__version__, extensions=EXTENSIONS)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self.accepting and self.registry.is_ready(name, version)

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        model = self.registry.get(name, version)
        entry = self.registry.entry(name)
        return ModelMetadata(
            name=name,
            versions=tuple(str(v) for v in entry.ready_versions()),
            platform=model.backend.platform,
            inputs=model.signature.inputs,
            outputs=model.signature.outputs,
        )

    async def infer(self, request: InferenceRequest, *,
                    timing: Timing | None = None) -> InferenceResponse:
        """Run one request on the version it names, counting it in that version's statistics.
        ``timing``, when given, receives when the request queued, started and finished."""
        if not self.accepting:
            raise Unavailable("the server is shutting down; send the request to another "
                              "replica", retry_after_s=1)
        started = time.monotonic_ns()
        try:
            model = self.registry.get(request.model_name, request.model_version)
        except KilnError as exc:
            self._count_unresolved(request.model_name, exc)
            raise
        if not self._in_flight:
            self._idle.clear()
        self._in_flight += 1
        try:
            response = await self._infer(model, request, timing)
        except Exception as exc:
            model.batcher.stats.record_failure(time.monotonic_ns() - started,
                                               failure_reason(exc))
            raise
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        model.batcher.stats.record_success(time.monotonic_ns() - started)
        return response

    def check_room(self, name: str, version: str | None) -> None:
        """Refuses a request before it is decoded when its model's queue has no room (503),
        so that shedding an overload costs as little as possible."""
        try:
            model = self.registry.get(name, version)
        except KilnError:
            return  # ``infer`` reports it, after the request was read
        model.batcher.check_room()

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests, then wait (at most ``timeout_s``) for those in flight to
        finish; True when none is left."""
        self.accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def reject(self, name: str, version: str | None, exc: BaseException, ns: int) -> None:
        """Count a request that failed before it reached ``infer`` (e.g. while decoding)."""
        try:
            model = self.registry.get(name, version)
        except KilnError:
            self._count_unresolved(name, exc)
            return
        model.batcher.stats.record_failure(ns, failure_reason(exc))

    def _count_unresolved(self, name: str, exc: BaseException) -> None:
        label = name if name in self.registry.names() else UNKNOWN
        self.unresolved_failures[label, failure_reason(exc)] += 1

    async def _infer(self, model: ModelVersion, request: InferenceRequest,
                     timing: Timing | None) -> InferenceResponse:
        rows = validate_request(request, model.signature)
        priority, timeout_us = schedule_parameters(request.parameters)
        names = [o.name for o in request.outputs] if request.outputs is not None else None
        outputs = await model.infer(request.inputs, rows=rows, outputs=names, priority=priority,
                                    timeout_us=timeout_us, timing=timing)
        expected = names or [s.name for s in model.signature.outputs]
        missing = [n for n in expected if n not in outputs]
        if missing:
            raise InternalError(
                f"model '{model.name}' version {model.version} returned no output(s) "
                f"{', '.join(missing)}"
            )
        return InferenceResponse(
            model_name=model.name,
            model_version=str(model.version),
            outputs={n: outputs[n] for n in expected},
            id=request.id,
        )

    def statistics(self, name: str | None = None,
                   version: str | None = None) -> list[dict[str, Any]]:
        """Triton-shaped statistics of every loaded version (or of one model / version)."""
        if name is None:
            models = [(n, v) for n in self.registry.names()
                      for v in self.registry.entry(n).loaded.values()]
        elif version is None:
            models = [(name, v) for v in self.registry.entry(name).loaded.values()]
        else:
            models = [(name, self.registry.get(name, version))]
        return [model.batcher.stats.as_triton(n, str(model.version)) for n, model in models]
