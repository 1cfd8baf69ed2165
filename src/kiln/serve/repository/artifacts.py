"""Reading a model version's file safely: the admission pipeline before a backend loads it.

1. Only ONNX files (``*.onnx``, or ``*.onnx.kiln-enc`` when encrypted); never pickle or any
   other format that runs code when loaded.
2. The file is opened without following symbolic links and read once, into memory.
3. Its SHA-256 is checked against ``manifest.json`` (when the version has one, or always
   with ``require_manifest``), over the bytes just read.
4. An encrypted file is decrypted in memory (nothing touches the disk).
5. The ONNX graph is checked: operator domains and external-data locations
   (``onnx_checks``); encrypted models may not use external data.
6. The backend receives those same bytes (``ModelArtifact.content``), never the path to
   re-open.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import InternalError
from kiln.runtime import ModelArtifact
from kiln.serve.repository import onnx_checks
from kiln.serve.repository.encryption import SUFFIX, decrypt
from kiln.serve.repository.integrity import Manifest, read_manifest, sha256_file
from kiln.serve.repository.model_keys import KeyProvider

#: ONNX's protobuf limit; bigger models keep their weights in external data.
MAX_MODEL_BYTES = (2 << 30) - 1
#: Model file suffixes kiln loads.
SAFE_SUFFIXES = (".onnx",)


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactPolicy:
    """How model files are admitted: the keys for encrypted ones, whether a manifest is
    required."""

    keys: KeyProvider | None = None
    require_manifest: bool = False

    def read(self, folder: Path, filename: str, *, binding: str) -> ModelArtifact:
        """Read, verify, decrypt and check ``folder/filename`` (or its ``.kiln-enc``).

        ``binding`` (``"<model>/<version>"``) is where the file is served from; a file
        encrypted for another model or version is refused."""
        _check_name(filename)
        if folder.is_symlink():
            raise InternalError(f"version folder {folder.name} is a symbolic link")
        plain, sealed = folder / filename, folder / (filename + SUFFIX)
        exists = [p for p in (plain, sealed) if os.path.lexists(p)]
        if len(exists) != 1:
            raise InternalError(
                f"version {folder.name} has both {plain.name} and {sealed.name}; keep one"
                if exists else f"version {folder.name} has no file {filename} (or "
                f"{sealed.name})")
        path = exists[0]
        content, digest, size = self._read(path, binding)
        manifest = read_manifest(folder)
        if manifest is None and self.require_manifest:
            raise InternalError(f"version {folder.name} has no manifest.json, and the server "
                                "requires one (--require-manifest)")
        if manifest is not None:
            manifest.verify(path.name, digest, size)
        model = onnx_checks.parse_model(content)
        onnx_checks.check_domains(model)
        external = onnx_checks.external_files(model, folder)
        if external and path is sealed:
            raise InternalError("an encrypted model may not keep weights in external data "
                                f"files ({', '.join(external)})")
        if manifest is not None:
            _verify_external(manifest, folder, external)
        return ModelArtifact(path=path, content=content)

    def _read(self, path: Path, binding: str) -> tuple[bytes, str, int]:
        """(plaintext, SHA-256 of the bytes on disk, their size)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise InternalError(f"{path.name} cannot be opened ({exc.strerror}); a model "
                                "file must be a regular file, not a symbolic link") from None
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InternalError(f"{path.name} is not a regular file")
            if info.st_size > MAX_MODEL_BYTES + (1 << 20):
                raise InternalError(f"{path.name} is {info.st_size} bytes; ONNX files over "
                                    "2 GiB must keep their weights in external data")
            digest = hashlib.sha256()
            read = _hashing(file.read, digest)
            if path.name.endswith(SUFFIX):
                content = decrypt(file, self.keys, binding=binding, file_bytes=info.st_size,
                                  read=read)
            else:
                content = read(info.st_size)
                if len(content) != info.st_size:
                    raise InternalError(f"{path.name} changed size while it was read")
        return content, digest.hexdigest(), info.st_size


def _check_name(filename: str) -> None:
    if "/" in filename or "\\" in filename or filename.startswith("."):
        raise InternalError(f"model file name '{filename[:80]}' must be a plain file name")
    if not filename.endswith(SAFE_SUFFIXES):
        raise InternalError(f"model file '{filename[:80]}' is not an ONNX file; kiln loads "
                            "ONNX models only (never pickle, torch.save or other formats "
                            "that run code when loaded)")


def _hashing(read: Callable[[int], bytes], digest: hashlib._Hash) -> Callable[[int], bytes]:
    def hashed(size: int) -> bytes:
        data = read(size)
        digest.update(data)
        return data

    return hashed


def _verify_external(manifest: Manifest, folder: Path, names: list[str]) -> None:
    """External data files are hashed as found; ONNX Runtime then reads them itself.
    NOTE: unlike the model file, they could change between this check and that read."""
    for name in names:
        digest, size = sha256_file(folder / name)
        manifest.verify(name, digest, size)
