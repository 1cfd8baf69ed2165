"""The runtime seam: a ``Backend`` loads a model artifact into a ``Session`` that runs it.

A session is used from several threads at once (one per model instance); ``run`` must be
safe to call concurrently and should release the GIL while the model computes.

Example, with the test double shipped in ``kiln.runtime.testing``::

    backend = EchoBackend()
    session = backend.load(artifact, SessionOptions())
    outputs = session.run({"x": np.ones((1, 4), np.float32)})
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from kiln.tensors import Signature, TensorDict


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionOptions:
    """How a backend should run a model; fields a backend does not know are ignored."""

    #: Threads one execution may use inside an operator (0 = the runtime's default).
    intra_op_threads: int = 1
    #: Threads used to run independent operators in parallel (0 = the runtime's default).
    inter_op_threads: int = 1
    #: Graph optimization: "disable", "basic", "extended" or "all".
    graph_optimization: str = "all"
    #: Execution providers in order of preference; unavailable ones are skipped.
    execution_providers: Sequence[str] = ("CPUExecutionProvider",)
    #: Spin-wait between operators (faster for tiny models, burns CPU when idle).
    allow_spinning: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelArtifact:
    """A model version on disk: its folder and the file a backend should load from it."""

    path: Path
    #: The loaded bytes when the file was decrypted or verified in memory; else ``None``.
    content: bytes | None = field(default=None, repr=False)


@runtime_checkable
class Session(Protocol):
    """A loaded model version, ready to run."""

    @property
    def signature(self) -> Signature: ...

    #: Execution providers actually in use, most preferred first.
    @property
    def providers(self) -> Sequence[str]: ...

    def run(self, inputs: TensorDict, output_names: Sequence[str] | None = None) -> TensorDict:
        """Run the model; returns the requested outputs (all when ``None``)."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """Knows one runtime: loads artifacts and names its platform for metadata."""

    #: Name used in model configs (``backend: onnxruntime``).
    name: str
    #: Platform string reported in model metadata (``onnxruntime_onnx``).
    platform: str
    #: The file a version folder holds when the config does not name one.
    default_filename: str

    def load(self, artifact: ModelArtifact, options: SessionOptions) -> Session: ...
