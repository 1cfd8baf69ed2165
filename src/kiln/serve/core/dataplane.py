"""The transport-neutral data plane: what every protocol adapter calls, and all it calls.

Inference is one call for every protocol (V2 HTTP, V2 gRPC, each TF Serving verb)::

    request, response = await plane.infer("digits", None, decode)

``decode`` turns the wire request into an ``InferenceRequest`` for the signature of the
version that serves it (``Decoder``). The data plane looks that version up once, refuses the
request before decoding when the version's queue has no room (so shedding an overload costs
as little as possible), decodes, validates against the signature, runs the request on the
version's batcher and counts it in the version's statistics, failures included, whatever
step failed. Health, metadata, config, status and statistics are data-plane queries too, so
no adapter or exporter touches the registry or a batcher. Nothing here knows a wire format.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

from kiln import __version__
from kiln.errors import InternalError, KilnError, NotFound, Unavailable, kind_of
from kiln.repository.config import ModelConfig
from kiln.serve.core.model import ModelVersion
from kiln.serve.core.registry import ModelRegistry
from kiln.serve.core.statistics import ModelStats, Timing
from kiln.serve.core.validation import schedule_parameters, validate_request
from kiln.serve.messages import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ServerMetadata,
    VersionStatus,
)
from kiln.tensors import Signature

#: Turns a wire request into an ``InferenceRequest`` for the serving version's signature.
Decoder = Callable[[Signature], InferenceRequest]

#: Triton protocol extensions kiln implements (reported by server metadata).
EXTENSIONS = ("binary_tensor_data", "parameters", "model_configuration", "schedule_policy",
              "statistics", "logging")

#: The label of requests that named no model (or version) the server knows; keeps the
#: metrics' label values bounded whatever clients send.
UNKNOWN = "_unknown"


@dataclass(frozen=True, slots=True)
class ModelConfigView:
    """The effective (auto-completed) config of a served version."""

    name: str
    version: int
    platform: str
    backend: str
    config: ModelConfig
    signature: Signature


@dataclass(frozen=True, slots=True)
class VersionReport:
    """What the metrics exporter reads of one loaded version."""

    name: str
    version: int
    stats: ModelStats
    #: Requests waiting in its queue now.
    pending: int
    #: How long loading and warming it up took, in seconds.
    load_s: float


class DataPlane:
    """What every protocol adapter calls; one instance per server."""

    def __init__(self, registry: ModelRegistry, *, strict_readiness: bool = True) -> None:
        self._registry = registry
        self.strict_readiness = strict_readiness
        #: False once shutdown begins: readiness answers no and new requests are refused.
        self.accepting = True
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: Failures of requests that reached no loaded version: (model label, reason) -> n.
        self.unresolved_failures: collections.Counter[tuple[str, str]] = collections.Counter()

    # -- health and metadata ----------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        if not self.accepting:
            return False
        return self._registry.all_ready() if self.strict_readiness else True

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(name="kiln", version=__version__, extensions=EXTENSIONS)

    def check_model(self, name: str) -> None:
        """Raise ``NotFound`` unless the server knows ``name``."""
        self._registry.entry(name)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self.accepting and self._registry.is_ready(name, version)

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        model = self._registry.get(name, version)
        return ModelMetadata(
            name=name,
            versions=tuple(str(v) for v in self._registry.entry(name).ready_versions()),
            platform=model.backend.platform,
            inputs=model.signature.inputs,
            outputs=model.signature.outputs,
        )

    def model_config(self, name: str, version: str | None = None) -> ModelConfigView:
        model = self._registry.get(name, version)
        return ModelConfigView(name=name, version=model.version,
                               platform=model.backend.platform,
                               backend=model.backend.name, config=model.config,
                               signature=model.signature)

    def model_status(self, name: str, selector: str | None = None) -> list[VersionStatus]:
        """The status of every version of ``name`` the server knows, or of the one a
        version number or label selects (TF Serving's model status)."""
        entry = self._registry.entry(name)
        if selector is None:
            if not entry.status:
                reason = f": {entry.reason}" if entry.reason else ""
                raise NotFound(f"model '{name}' has no versions{reason}")
            return list(entry.status.values())
        number = self._registry.resolve(name, selector)
        found = entry.status.get(number)
        if found is None:
            raise NotFound(f"model '{name}' has no version {number}")
        return [found]

    # -- statistics -------------------------------------------------------------------

    def statistics(self, name: str | None = None, version: str | None = None, *,
                   models: Container[str] | None = None) -> list[dict[str, Any]]:
        """Triton-shaped statistics of every loaded version (or of one model / version);
        ``models``, when given, limits the listing to the models a caller may see."""
        if name is None:
            chosen = [(n, v) for n in self._registry.names()
                      if models is None or n in models
                      for v in self._registry.entry(n).loaded.values()]
        elif version is None:
            chosen = [(name, v) for v in self._registry.entry(name).loaded.values()]
        else:
            chosen = [(name, self._registry.get(name, version))]
        return [model.stats.as_triton(n, str(model.version)) for n, model in chosen]

    def model_states(self) -> list[tuple[str, VersionStatus]]:
        """Every version the server knows of, with its state."""
        return [(name, status) for name in self._registry.names()
                for _, status in sorted(self._registry.entry(name).status.items())]

    def versions(self) -> list[VersionReport]:
        """Every loaded version, for the metrics exporter."""
        return [VersionReport(name=name, version=number, stats=model.stats,
                              pending=model.batcher.queue_depth, load_s=model.load_s)
                for name in self._registry.names()
                for number, model in sorted(self._registry.entry(name).loaded.items())]

    # -- inference --------------------------------------------------------------------

    async def infer(self, name: str, version: str | None, decode: Decoder, *,
                    timing: Timing | None = None,
                    on_decoded: Callable[[InferenceRequest], None] | None = None,
                    ) -> tuple[InferenceRequest, InferenceResponse]:
        """Decode and run one request on the version ``name``/``version`` selects (``None``:
        the newest ready one); returns the decoded request and the response. ``timing``,
        when given, receives when the request was decoded, queued, started and finished;
        ``on_decoded`` sees the decoded request before it is checked and run (so an adapter
        can name a request that then fails by the id it carries)."""
        started = time.monotonic_ns()
        if not self.accepting:
            raise Unavailable("the server is shutting down; send the request to another "
                              "replica", retry_after_s=1)
        try:
            model = self._registry.get(name, version)
        except KilnError as exc:
            self._count_unresolved(name, exc)
            raise
        if not self._in_flight:
            self._idle.clear()
        self._in_flight += 1
        stats = model.stats
        try:
            response = await self._infer(model, decode, timing, on_decoded)
        except Exception as exc:
            stats.record_failure(time.monotonic_ns() - started, kind_of(exc).value)
            raise
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        stats.record_success(time.monotonic_ns() - started)
        return response

    async def _infer(self, model: ModelVersion, decode: Decoder, timing: Timing | None,
                     on_decoded: Callable[[InferenceRequest], None] | None,
                     ) -> tuple[InferenceRequest, InferenceResponse]:
        model.batcher.check_room()
        request = decode(model.signature)
        if timing is not None:
            timing.decoded = time.monotonic_ns()
        if on_decoded is not None:
            on_decoded(request)
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
        return request, InferenceResponse(
            model_name=model.name,
            model_version=str(model.version),
            outputs={n: outputs[n] for n in expected},
            id=request.id,
        )

    def _count_unresolved(self, name: str, exc: BaseException) -> None:
        label = name if name in self._registry.names() else UNKNOWN
        self.unresolved_failures[label, kind_of(exc).value] += 1

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests, then wait (at most ``timeout_s``) for those in flight to
        finish; True when none is left."""
        self.accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
