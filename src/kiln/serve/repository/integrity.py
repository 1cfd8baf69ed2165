"""Integrity manifests: ``<version>/manifest.json`` lists the SHA-256 of the version's files.

The format is the one ``kiln convert`` writes (other top-level fields are kept but not
read here)::

    {"format": "kiln-manifest/1",
     "files": {"model.onnx": {"sha256": "<64 hex digits>", "bytes": 90392019}}, ...}

When a version has a manifest, every file kiln loads from it must be listed with the same
hash; the hash is taken over the very bytes that are then loaded. A manifest stored next to
the model catches accidents and partial copies; it cannot stop someone who can rewrite the
whole folder (encrypted models are authenticated by their key instead).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path
from typing import Annotated

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from kiln.errors import InternalError
from kiln.serve.repository.config import describe_validation_error

MANIFEST_NAME = "manifest.json"
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
            raise InternalError(f"{MANIFEST_NAME} does not list {name}; every loaded file "
                                "must be listed with its sha256")
        if not hmac.compare_digest(entry.sha256, digest) or entry.bytes not in (None, size):
            raise InternalError(f"{name} does not match {MANIFEST_NAME}: sha256 {digest[:16]}… "
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
        raise InternalError(f"{MANIFEST_NAME} cannot be read ({exc.strerror}); it must be "
                            "a regular file, not a symbolic link") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_MANIFEST_BYTES:
            raise InternalError(f"{MANIFEST_NAME} is not a regular file of at most "
                                f"{_MAX_MANIFEST_BYTES} bytes")
        raw = file.read()
    try:
        return Manifest.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise InternalError(f"{MANIFEST_NAME} is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise InternalError(
            f"{MANIFEST_NAME}: {describe_validation_error(exc, Manifest)}") from None


def sha256_file(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file, read in 1 MiB pieces."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as file:
        while piece := file.read(1 << 20):
            digest.update(piece)
            size += len(piece)
    return digest.hexdigest(), size
