"""API keys: random tokens handed out once, stored only as salted SHA-256 hashes.

A token reads ``kiln_<id>_<secret>``: ``id`` (16 hex digits) is public and finds the record,
``secret`` is 256 random bits. The keys file (YAML or JSON, written by ``kiln keys``) holds
one record per key with its scopes and, optionally, the models it may use::

    version: 1
    keys:
    - id: 3f9a1c0b7e2d4a55
      name: ci
      scopes: [infer, metadata]
      models: [digits]          # absent: every model
      salt: 9c1e...             # 16 random bytes, hex
      sha256: 5d0f...           # SHA-256(salt || secret), hex
      created: '2026-05-01T12:00:00Z'

NOTE: a plain salted SHA-256 is enough here because the secret has 256 bits of entropy;
slow password hashes (scrypt, argon2) only matter for secrets people choose.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import orjson
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from kiln.errors import ConfigError
from kiln.repository.config import describe_validation_error
from kiln.repository.layout import MODEL_NAME

#: Scopes a key may carry; ``admin`` implies every other one.
SCOPES = ("infer", "metadata", "metrics", "admin")
Scope = Literal["infer", "metadata", "metrics", "admin"]

_TOKEN = re.compile(r"kiln_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]+$")]
ModelName = Annotated[str, StringConstraints(pattern=f"^{MODEL_NAME.pattern}$")]


class KeyRecord(BaseModel):
    """One API key as stored: everything but the secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
    name: str = ""
    scopes: list[Scope] = Field(min_length=1)
    #: Models this key may name; ``None`` = every model.
    models: list[ModelName] | None = None
    salt: Annotated[Hex, StringConstraints(min_length=32, max_length=32)]
    sha256: Annotated[Hex, StringConstraints(min_length=64, max_length=64)]
    created: str = ""

    def matches(self, secret: str) -> bool:
        """Constant-time comparison of ``secret``'s salted hash with the stored one."""
        return hmac.compare_digest(_hash(self.salt, secret), self.sha256)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


class KeysFile(BaseModel):
    """The whole keys file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    keys: list[KeyRecord] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> KeysFile:
        ids = [k.id for k in self.keys]
        if len(ids) != len(set(ids)):
            raise ValueError("two keys share an id")
        return self


def _hash(salt_hex: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt_hex) + secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, else ``None``."""
    found = _TOKEN.fullmatch(token)
    return (found.group(1), found.group(2)) if found else None


def new_key(*, scopes: list[str], models: list[str] | None = None,
            name: str = "") -> tuple[str, KeyRecord]:
    """A fresh token (shown once, never stored) and the record that verifies it."""
    key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_hex(16)
    try:
        record = KeyRecord.model_validate({
            "id": key_id, "name": name, "scopes": scopes, "models": models, "salt": salt,
            "sha256": _hash(salt, secret),
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    except ValidationError as exc:
        raise ConfigError(f"invalid key: {describe_validation_error(exc, KeyRecord)}") from None
    return f"kiln_{key_id}_{secret}", record


def load_keys(path: Path) -> KeysFile:
    """Read and validate a keys file; every problem raises ``ConfigError`` naming it."""
    try:
        info = path.stat()
        raw = yaml.safe_load(path.read_bytes()) if info.st_size else None
    except OSError as exc:
        raise ConfigError(f"keys file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"keys file {path}: not valid YAML or JSON: {exc}") from None
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"keys file {path} is writable by other users, who could add keys; "
                          f"run 'chmod go-w {path}'")
    if not isinstance(raw, dict):
        raise ConfigError(f"keys file {path}: expected a mapping with 'version' and 'keys'")
    try:
        return KeysFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"keys file {path}: {describe_validation_error(exc, KeysFile)}") from None


def save_keys(path: Path, keys: KeysFile) -> None:
    """Write ``keys`` atomically (temporary file + rename), readable by the owner only."""
    text = ("# kiln API keys: only salted hashes are stored; each key was shown once.\n"
            + yaml.safe_dump(orjson.loads(keys.model_dump_json(exclude_none=True)),
                             sort_keys=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def load_or_empty(path: Path) -> KeysFile:
    """The keys in ``path``, or none when the file does not exist yet."""
    return load_keys(path) if path.exists() else KeysFile()
