"""Reading a model version's files safely: ``VersionFolder`` is what backends admit from.

Every file a backend loads comes through ``VersionFolder.read``:

1. the name is a plain file name (no separators, no leading dot);
2. the file is opened without following symbolic links and read once, into memory;
3. its SHA-256 is checked against ``manifest.json`` (when the version has one, or always
   with ``require_manifest``), over the bytes just read;
4. an encrypted file (``<name>.kiln-enc``) is decrypted in memory, nothing touches the disk.

Files a runtime opens itself (ONNX external data) are checked by ``VersionFolder.check``:
a plain relative path inside the folder, no link on the way, one hard link, listed in the
manifest. What a format can hide (an ONNX graph's operators, say) is the backend's to check
(``kiln.runtime.onnx_admission``).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import InvalidModel
from kiln.repository.encryption import SUFFIX, decrypt
from kiln.repository.manifest import Manifest, read_manifest, sha256_file
from kiln.repository.model_keys import KeyProvider
from kiln.runtime.base import StoredFile

#: Largest file read into memory (ONNX's protobuf limit plus a margin); bigger models keep
#: their weights in external data, which the runtime reads itself.
MAX_FILE_BYTES = (2 << 30) - 1 + (1 << 20)
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactPolicy:
    """How model files are admitted: the keys for encrypted ones, whether a manifest is
    required."""

    keys: KeyProvider | None = None
    require_manifest: bool = False


class VersionFolder:
    """One version folder of a model, read under an ``ArtifactPolicy`` (``VersionFiles``).

    ``binding`` (``"<model>/<version>"``) is where the files are served from; a file
    encrypted for another model or version is refused.
    """

    def __init__(self, path: Path, *, binding: str, policy: ArtifactPolicy) -> None:
        self._path = path
        self.binding = binding
        self.policy = policy
        self._manifest: Manifest | None = None
        self._manifest_read = False
        self._checked: dict[str, int] = {}

    @property
    def path(self) -> Path:
        return self._path

    def manifest(self) -> Manifest | None:
        """The version's manifest (read once), ``None`` when it has none."""
        if not self._manifest_read:
            self._manifest = read_manifest(self._path)
            self._manifest_read = True
            if self._manifest is None and self.policy.require_manifest:
                raise InvalidModel(f"version {self._path.name} has no manifest.json, and the "
                                   "server requires one (--require-manifest)")
        return self._manifest

    def read(self, name: str) -> StoredFile:
        _check_name(name)
        if self._path.is_symlink():
            raise InvalidModel(f"version folder {self._path.name} is a symbolic link")
        plain, sealed = self._path / name, self._path / (name + SUFFIX)
        exists = [p for p in (plain, sealed) if os.path.lexists(p)]
        if len(exists) != 1:
            raise InvalidModel(
                f"version {self._path.name} has both {plain.name} and {sealed.name}; keep one"
                if exists else f"version {self._path.name} has no file {name} (or "
                f"{sealed.name})")
        path = exists[0]
        data, digest, size = self._read(path)
        manifest = self.manifest()
        if manifest is not None:
            manifest.verify(path.name, digest, size)
        return StoredFile(path, data, sealed=path is sealed)

    def check(self, name: str) -> int:
        if name not in self._checked:
            info = _lstat_inside(self._path, name)
            manifest = self.manifest()
            if manifest is not None:
                # NOTE: unlike a file read here, the runtime reads this one again itself,
                # so it could change between this check and that read.
                digest, size = sha256_file(self._path / name)
                manifest.verify(name, digest, size)
            self._checked[name] = info.st_size
        return self._checked[name]

    def _read(self, path: Path) -> tuple[bytes, str, int]:
        """(plaintext, SHA-256 of the bytes on disk, their size)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise InvalidModel(f"{path.name} cannot be opened ({exc.strerror}); a model "
                               "file must be a regular file, not a symbolic link") from None
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidModel(f"{path.name} is not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise InvalidModel(f"{path.name} is {info.st_size} bytes; model files over "
                                   "2 GiB must keep their weights in external data")
            digest = hashlib.sha256()
            read = _hashing(file.read, digest)
            if path.name.endswith(SUFFIX):
                data = decrypt(file, self.policy.keys, binding=self.binding,
                               file_bytes=info.st_size, read=read)
            else:
                data = read(info.st_size)
                if len(data) != info.st_size:
                    raise InvalidModel(f"{path.name} changed size while it was read")
        return data, digest.hexdigest(), info.st_size


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise InvalidModel(f"model file name '{name[:80]}' must be a plain file name")


def _lstat_inside(folder: Path, location: str) -> os.stat_result:
    """The ``lstat`` of ``folder/location`` once it is shown to be a plain relative path to
    a regular file with one hard link, reached through no symbolic link."""
    parts = location.split("/")
    if (not location or location.startswith(("/", "\\")) or "\\" in location
            or _WINDOWS_DRIVE.match(location) or any(p in ("", ".", "..") for p in parts)
            or "\0" in location):
        raise InvalidModel(f"'{location[:80]}' must be a plain relative path inside the "
                           "version folder (no '..', no absolute or drive paths)")
    path = folder
    for part in parts:
        path = path / part
        try:
            info = os.lstat(path)
        except OSError:
            raise InvalidModel(f"'{location[:80]}' does not exist") from None
        if stat.S_ISLNK(info.st_mode):
            raise InvalidModel(f"'{location[:80]}' goes through a symbolic link")
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        raise InvalidModel(f"'{location[:80]}' must be a regular file with a single hard link")
    return info


def _hashing(read: Callable[[int], bytes], digest: hashlib._Hash) -> Callable[[int], bytes]:
    def hashed(size: int) -> bytes:
        data = read(size)
        digest.update(data)
        return data

    return hashed
