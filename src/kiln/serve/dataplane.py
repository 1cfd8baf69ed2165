"""The transport-neutral data plane: health, metadata and inference.

Protocol adapters (V2 REST, V2 gRPC, TF Serving REST) decode wire requests into
``InferenceRequest``, call the data plane, and encode what it returns; nothing here knows
a wire format.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from kiln import __version__
from kiln.errors import InternalError, Unavailable
from kiln.serve.messages import InferenceRequest, InferenceResponse
from kiln.serve.model import ModelVersion
from kiln.serve.registry import ModelRegistry
from kiln.serve.validation import schedule_parameters, validate_request
from kiln.tensors import TensorSpec

#: Triton protocol extensions kiln implements (reported by server metadata).
EXTENSIONS = ("binary_tensor_data", "parameters", "model_configuration", "schedule_policy",
              "statistics")


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

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        if not self.accepting:
            raise Unavailable("the server is shutting down; send the request to another "
                              "replica", retry_after_s=1)
        model = self.registry.get(request.model_name, request.model_version)
        started = time.monotonic_ns()
        if not self._in_flight:
            self._idle.clear()
        self._in_flight += 1
        try:
            response = await self._infer(model, request)
        except Exception:
            model.batcher.stats.fail.add(time.monotonic_ns() - started)
            raise
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        model.batcher.stats.success.add(time.monotonic_ns() - started)
        return response

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests, then wait (at most ``timeout_s``) for those in flight to
        finish; True when none is left."""
        self.accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _infer(self, model: ModelVersion, request: InferenceRequest) -> InferenceResponse:
        rows = validate_request(request, model.signature)
        priority, timeout_us = schedule_parameters(request.parameters)
        names = [o.name for o in request.outputs] if request.outputs is not None else None
        outputs = await model.infer(request.inputs, rows=rows, outputs=names, priority=priority,
                                    timeout_us=timeout_us)
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
