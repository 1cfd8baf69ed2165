"""Master keys for models encrypted at rest (``kiln keygen``), and the ``KeyProvider`` seam.

A key file holds one key per line, ``kiln-model-key-v1:<id>:<base64url 256-bit key>``;
lines starting with ``#`` are comments. The first key wraps new files; every key listed
can open files wrapped under it, so rotating is: add the new key first, re-encrypt (or
re-wrap), then drop the old one. The id is derived from the key, so it names the key
without revealing it. The same lines can come from ``KILN_MODEL_KEY`` (comma-separated)
instead of a file; note that a process's environment is readable by its own user.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kiln.errors import ConfigError, InvalidModel

_PREFIX = "kiln-model-key-v1"


class KeyProvider(Protocol):
    """Wraps and unwraps per-file data keys; a KMS plug-in would keep the master key."""

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        """Encrypt ``data_key`` under the primary master key: (key id, wrapped bytes)."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        """The data key, or ``InvalidModel`` naming why it cannot be recovered."""
        ...


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"kiln model key id\0" + key).hexdigest()[:16]


def new_key_line() -> str:
    """A fresh random 256-bit master key as one key-file line."""
    key = secrets.token_bytes(32)
    return f"{_PREFIX}:{key_id(key)}:{base64.urlsafe_b64encode(key).decode().rstrip('=')}"


class KeyRing:
    """Master keys held in memory; the first one wraps new data keys."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ConfigError("no model key given")
        self._keys = {key_id(k): k for k in keys}
        self.primary = key_id(keys[0])

    @classmethod
    def load(cls, files: list[Path], env_value: str | None = None) -> KeyRing | None:
        """Keys from key files and ``KILN_MODEL_KEY``'s value; ``None`` when none are given."""
        keys: list[bytes] = []
        for path in files:
            keys += _parse(_read_private(path), str(path))
        if env_value:
            keys += _parse(env_value.replace(",", "\n"), "KILN_MODEL_KEY")
        return cls(keys) if keys else None

    @property
    def ids(self) -> list[str]:
        return list(self._keys)

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        nonce = secrets.token_bytes(12)
        return self.primary, nonce + AESGCM(self._keys[self.primary]).encrypt(nonce, data_key,
                                                                               aad)

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        key = self._keys.get(key_id)
        if key is None:
            raise InvalidModel(f"encrypted with model key {key_id}, which is not among the "
                               f"configured model keys ({', '.join(self._keys)})")
        try:
            return AESGCM(key).decrypt(wrapped[:12], wrapped[12:], aad)
        except InvalidTag:
            raise InvalidModel(f"model key {key_id} does not open this file: the file's "
                               "header was altered") from None


def _read_private(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"model key file {path}: {getattr(exc, 'strerror', exc)}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"model key file {path} is readable by other users (mode "
                          f"{stat.S_IMODE(mode):04o}); run 'chmod 600 {path}'")
    return text


def _parse(text: str, source: str) -> list[bytes]:
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        prefix, _, rest = line.partition(":")
        kid, _, encoded = rest.partition(":")
        try:
            key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            key = b""
        if prefix != _PREFIX or len(key) != 32 or key_id(key) != kid:
            raise ConfigError(f"{source} line {number}: not a kiln model key (expected "
                              f"'{_PREFIX}:<id>:<key>' as written by 'kiln keygen')")
        keys.append(key)
    return keys


def write_key_file(path: Path) -> str:
    """Create ``path`` (mode 0600, never overwriting) holding a new key; returns its id."""
    line = new_key_line()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write("# kiln model encryption key (AES-256): keep it outside the model "
                   "repository, readable by the server's user only.\n" + line + "\n")
    return line.split(":")[1]
