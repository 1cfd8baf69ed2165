"""The runtime seam: a ``Backend`` admits a model version's files, then loads them into a
``Session`` that runs it.

Admission and loading are two steps so that every check on what a version folder holds
happens before a runtime parses anything: the repository hands a backend the folder as
``VersionFiles`` (files read without following links, checked against the version's
manifest, decrypted in memory), the backend checks what its format can hide (an ONNX graph's
operator domains and external-data paths, say) and returns a ``ModelArtifact``.

A session is used from several threads at once (one per model instance); ``run`` must be
safe to call concurrently and should release the GIL while the model computes.

Example, with the test double shipped in ``kiln.runtime.testing``::

    backend = EchoBackend([TensorSpec("x", DataType.FP32, (-1, 4))])
    session = backend.load(backend.admit(files, "model.echo", SessionOptions()),
                           SessionOptions())
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


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file of a version folder, read once into memory."""

    #: Where it is on disk (the ``.kiln-enc`` file when it was encrypted).
    path: Path
    #: Its plaintext.
    data: bytes = field(repr=False)
    #: Whether it was decrypted from an encrypted file.
    sealed: bool = False


class VersionFiles(Protocol):
    """A model version's folder as the repository hands it to a backend.

    Every file comes through here, so a backend never opens a path itself unchecked:
    ``read`` opens without following symbolic links, refuses anything but a regular file,
    checks the SHA-256 the version's manifest lists and decrypts encrypted files in memory.
    """

    @property
    def path(self) -> Path:
        """The version folder."""
        ...

    def read(self, name: str) -> StoredFile:
        """The file ``name`` (or its encrypted form ``name.kiln-enc``), checked and decrypted;
        raises ``InvalidModel`` naming the file and the problem."""
        ...

    def check(self, name: str) -> int:
        """For a file the runtime opens itself (e.g. ONNX external data): check that the
        relative path ``name`` stays in the folder through no link, is a regular file with
        one hard link and matches the manifest; returns its size in bytes."""
        ...


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
    """Knows one runtime: admits and loads artifacts and names its platform for metadata."""

    #: Name used in model configs (``backend: onnxruntime``).
    name: str
    #: Platform string reported in model metadata (``onnxruntime_onnx``).
    platform: str
    #: The file a version folder holds when the config does not name one.
    default_filename: str

    def admit(self, files: VersionFiles, filename: str,
              options: SessionOptions) -> ModelArtifact:
        """Read ``filename`` through ``files`` and check that this runtime may load it;
        raises ``InvalidModel`` naming the problem."""
        ...

    def load(self, artifact: ModelArtifact, options: SessionOptions) -> Session: ...
