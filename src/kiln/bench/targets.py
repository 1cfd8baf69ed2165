"""What ``kiln bench`` measures: the ``Target`` seam, the in-process target and the target table.

A target turns a ``TensorDict`` into a request once (``encode``), sends it as many times as
the load generator wants (``call``), and turns a reply back into tensors (``decode``) only when
the numbers are needed (accuracy, agreement). The load loop never decodes, like
``perf_analyzer``, so the generator stays cheap.

    target = open_target("grpc://127.0.0.1:8001", model="digits")
    signature = await target.open()
    outputs = await infer(target, {"pixels": x})
    await target.close()

Remote targets live in their own modules, listed in ``PROTOCOLS`` and imported on first use.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from kiln.errors import ErrorKind, InvalidArgument, KilnError
from kiln.runtime import BackendTable, ModelArtifact, SessionOptions
from kiln.runtime.base import Session
from kiln.tensors import Signature, TensorDict


@runtime_checkable
class Target(Protocol):
    """Something that answers inference requests: a model file, a server, an endpoint.

    ``call`` raises a ``KilnError`` (its ``kind`` is what the report counts) or
    ``TimeoutError``; it must be safe to await from many coroutines at once.
    """

    #: A short name for tables and plots.
    label: str
    #: The protocol spoken: ``onnxruntime`` (in-process), ``v2-json``, ``v2-binary``,
    #: ``v2-grpc`` or ``tfserving``.
    protocol: str
    #: A file path or ``host:port``.
    address: str
    #: Bytes of the model file for in-process targets; ``None`` when unknown.
    size_bytes: int | None

    async def open(self) -> Signature:
        """Connect (or load) and return the model's signature."""
        ...

    def encode(self, inputs: TensorDict) -> Any:
        """Build the wire request once; ``call`` may send it many times."""
        ...

    async def call(self, request: Any) -> Any:
        """Send one encoded request and return the raw reply."""
        ...

    def decode(self, reply: Any) -> TensorDict:
        """The output tensors of a raw reply."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class BlockingTarget(Target, Protocol):
    """A target that computes in this process. The closed-loop generator calls
    ``call_blocking`` from one thread per concurrent caller, so no event-loop hop is counted
    in what is meant to be the limit."""

    def call_blocking(self, request: Any) -> Any: ...


class RemoteError(KilnError):
    """A failure a server reported; its ``kind`` comes from the status code it answered."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


async def infer(target: Target, inputs: TensorDict) -> TensorDict:
    """One request through ``target``, decoded."""
    return target.decode(await target.call(target.encode(inputs)))


class OnnxTarget:
    """An ONNX file run in this process by ONNX Runtime: the limit any server is measured by."""

    protocol = "onnxruntime"

    def __init__(self, path: Path, *, intra_op_threads: int = 1, label: str | None = None) -> None:
        self.path = path
        self.address = str(path)
        self.label = label or _short_name(path)
        self.size_bytes: int | None = path.stat().st_size
        self._options = SessionOptions(intra_op_threads=intra_op_threads)
        self._session: Session | None = None

    async def open(self) -> Signature:
        self._session = BackendTable().get("onnxruntime").load(ModelArtifact(path=self.path),
                                                        self._options)
        return self._session.signature

    def encode(self, inputs: TensorDict) -> TensorDict:
        return inputs

    def call_blocking(self, request: TensorDict) -> TensorDict:
        if self._session is None:
            raise RuntimeError("OnnxTarget.open() was not called")
        return self._session.run(request)

    async def call(self, request: TensorDict) -> TensorDict:
        return await asyncio.get_running_loop().run_in_executor(None, self.call_blocking, request)

    def decode(self, reply: TensorDict) -> TensorDict:
        return reply

    async def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def _short_name(path: Path) -> str:
    """``model.onnx`` in a repository's version folder is named with its model and version."""
    if path.name == "model.onnx" and path.parent.name.isdigit():
        return "/".join(path.parts[-3:])
    return path.name


#: Protocol name -> "module:class" of its target; imported on first use.
PROTOCOLS: dict[str, str] = {
    "v2-json": "kiln.bench.v2_http:V2HttpTarget",
    "v2-binary": "kiln.bench.v2_http:V2HttpTarget",
    "tfserving": "kiln.bench.tfserving:TfServingTarget",
    "v2-grpc": "kiln.bench.v2_grpc:V2GrpcTarget",
}
#: URL scheme -> the protocols it carries (the first is the default).
SCHEMES: dict[str, tuple[str, ...]] = {
    "http": ("v2-json", "v2-binary", "tfserving"),
    "grpc": ("v2-grpc",),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteSpec:
    """Where a remote target is and what to ask it; passed to each protocol's target class."""

    protocol: str
    host: str
    port: int
    model: str
    version: str | None = None
    timeout_s: float = 30.0


def open_target(spec: str | Target, *, model: str | None = None, version: str | None = None,
                protocol: str | None = None, timeout_s: float = 30.0,
                intra_op_threads: int = 1) -> Target:
    """A target from its command-line spelling.

    ``model.onnx`` runs in-process; ``http://host:port`` speaks ``protocol`` (default
    ``v2-json``), ``grpc://host:port`` speaks V2 gRPC, and ``v2-binary+http://host:port`` (any
    protocol name before ``+``) picks the protocol for that one target.
    """
    if not isinstance(spec, str):
        return spec
    if "://" not in spec:
        path = Path(spec)
        if not path.is_file():
            raise InvalidArgument(
                f"target '{spec}' is neither a model file nor a URL such as "
                "http://127.0.0.1:8000 or grpc://127.0.0.1:8001")
        return OnnxTarget(path, intra_op_threads=intra_op_threads)
    remote = _remote_spec(spec, model=model, version=version, protocol=protocol,
                          timeout_s=timeout_s)
    module_name, _, attribute = PROTOCOLS[remote.protocol].partition(":")
    target_class = getattr(importlib.import_module(module_name), attribute)
    target: Target = target_class(remote)
    return target


def _remote_spec(spec: str, *, model: str | None, version: str | None,
                 protocol: str | None, timeout_s: float) -> RemoteSpec:
    url = urlsplit(spec)
    named, _, scheme = url.scheme.rpartition("+")
    if scheme not in SCHEMES:
        raise InvalidArgument(f"target '{spec}': unknown scheme '{scheme}'; use "
                              + " or ".join(f"{s}://" for s in SCHEMES))
    allowed = SCHEMES[scheme]
    chosen = named or (protocol if protocol in allowed else allowed[0])
    if chosen not in allowed:
        raise InvalidArgument(f"target '{spec}': {scheme}:// carries {', '.join(allowed)}, "
                              f"not '{chosen}'")
    if not model:
        raise InvalidArgument(f"target '{spec}' is a server: name the model with --model")
    if url.hostname is None or url.port is None:
        raise InvalidArgument(f"target '{spec}' needs a host and a port, e.g. "
                              f"{scheme}://127.0.0.1:{8001 if scheme == 'grpc' else 8000}")
    return RemoteSpec(protocol=chosen, host=url.hostname, port=url.port, model=model,
                      version=version, timeout_s=timeout_s)
