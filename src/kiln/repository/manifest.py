"""Manifests: ``<version>/manifest.json`` (or ``<file>.manifest.json`` beside a model file
outside a repository) says what a model is, where it came from, and the SHA-256 of its files.

One module writes them (``build_manifest``, for ``kiln convert``, ``kiln optimize`` and
``kiln encrypt``) and reads them (``read_manifest``, for the server). A stable, plain JSON
object; ``format`` names its version::

    {
      "format": "kiln-manifest/1",
      "files": {"model.onnx": {"sha256": "<64 hex digits>", "bytes": 90392019}},
      "model": {"name": "minilm", "version": 1},            # only inside a repository
      "source": {...}, "onnx": {...}, "parity": {...},        # what produced it (convert)
      "optimization": {...},                                  # or how it was optimized
      "signature": {"inputs": [{"name": "...", "datatype": "INT64", "shape": [-1, -1]}],
                    "outputs": [...]},
      "kiln_version": "0.1.0",
      "created": "2026-05-01T12:00:00Z"
    }

When a version has a manifest, every file kiln loads from it must be listed with the same
hash; the hash is taken over the very bytes that are then loaded. A manifest stored next to
the model catches accidents and partial copies; it cannot stop someone who can rewrite the
whole folder (encrypted models are authenticated by their key instead).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from kiln import __version__
from kiln.errors import InvalidModel
from kiln.repository.config import describe_validation_error
from kiln.tensors import Signature, TensorSpec

#: The manifest of a repository version; a model file's is ``<file>.manifest.json``.
MANIFEST_NAME = "manifest.json"
FORMAT = "kiln-manifest/1"
_MAX_MANIFEST_BYTES = 4 << 20


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    bytes: Annotated[int, Field(ge=0)] | None = None


class Manifest(BaseModel):
    """The part of a manifest that integrity checks read."""

    model_config = ConfigDict(extra="allow", frozen=True)

    files: dict[str, FileEntry]

    def verify(self, name: str, digest: str, size: int) -> None:
        """Refuse ``name`` unless listed with this SHA-256 (and size, when given)."""
        entry = self.files.get(name)
        if entry is None:
            raise InvalidModel(f"{MANIFEST_NAME} does not list {name}; every loaded file "
                               "must be listed with its sha256")
        if not hmac.compare_digest(entry.sha256, digest) or entry.bytes not in (None, size):
            raise InvalidModel(f"{name} does not match {MANIFEST_NAME}: sha256 {digest[:16]}… "
                               f"({size} bytes) but the manifest says {entry.sha256[:16]}… "
                               f"({entry.bytes} bytes); the file was changed or copied "
                               "incompletely")


def read_manifest(folder: Path) -> Manifest | None:
    """The version folder's manifest, ``None`` when it has none."""
    path = folder / MANIFEST_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidModel(f"{MANIFEST_NAME} cannot be read ({exc.strerror}); it must be "
                           "a regular file, not a symbolic link") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_MANIFEST_BYTES:
            raise InvalidModel(f"{MANIFEST_NAME} is not a regular file of at most "
                               f"{_MAX_MANIFEST_BYTES} bytes")
        raw = file.read()
    try:
        return Manifest.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise InvalidModel(f"{MANIFEST_NAME} is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise InvalidModel(
            f"{MANIFEST_NAME}: {describe_validation_error(exc, Manifest)}") from None


def sha256_file(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file, read in 1 MiB pieces."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as file:
        while piece := file.read(1 << 20):
            digest.update(piece)
            size += len(piece)
    return digest.hexdigest(), size


def build_manifest(files: Mapping[str, bytes], *, signature: Signature,
                   model: tuple[str, int] | None = None,
                   sections: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of the ``files`` (name -> bytes written) of one model.

    ``model`` is its (name, version) inside a repository; ``sections`` say what produced it
    (``source``, ``parity``, ``optimization``, ...)."""
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                  for name, data in files.items()},
    }
    if model is not None:
        manifest["model"] = {"name": model[0], "version": model[1]}
    manifest.update(sections or {})
    manifest.update({
        "signature": {"inputs": [_spec(s) for s in signature.inputs],
                      "outputs": [_spec(s) for s in signature.outputs]},
        "kiln_version": __version__,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    return manifest


def manifest_json(manifest: Mapping[str, Any]) -> bytes:
    """The manifest as the file's bytes."""
    return (json.dumps(manifest, indent=2) + "\n").encode()


def _spec(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype.v2, "shape": list(spec.shape)}
