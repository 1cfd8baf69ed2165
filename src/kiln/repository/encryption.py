"""Models encrypted at rest: the ``.kiln-enc`` format (AES-256-GCM, chunked, envelope keys).

Layout (integers big-endian)::

    magic "KILNENC\\0" | format version (1 B) | key id length (1 B) | key id
    | binding length (2 B) | binding ("<model>/<version>" or empty)
    | wrapped data key length (2 B) | wrapped data key | salt (32 B) | nonce prefix (7 B)
    | chunk size (4 B) | plaintext length (8 B)
    | chunk 0 | chunk 1 | ... each AES-256-GCM ciphertext + 16-byte tag

Each file gets a random 256-bit data key, stored wrapped by a master key (``KeyProvider``;
the key id names which). Chunks are encrypted under HKDF-SHA256(data key, salt) with the
nonce ``prefix || chunk index (4 B) || last-chunk flag (1 B)`` and the whole header as
associated data: a changed header byte, a flipped ciphertext bit, a removed, repeated or
reordered chunk, or a file cut short all fail authentication (Tink's streaming AEAD
construction). A file bound to a model version opens only there.

Decryption happens in memory, chunk by chunk; nothing is written to disk.
"""

from __future__ import annotations

import io
import os
import secrets
import stat
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kiln.errors import InvalidModel
from kiln.repository.model_keys import KeyProvider

MAGIC = b"KILNENC\0"
FORMAT_VERSION = 1
SUFFIX = ".kiln-enc"
CHUNK_SIZE = 4 << 20
_TAG = 16
_TAIL = struct.Struct(">32s7sIQ")
_MAX_CHUNKS = (1 << 32) - 1


@dataclass(frozen=True, slots=True)
class Header:
    key_id: str
    binding: str
    wrapped_key: bytes
    salt: bytes
    nonce_prefix: bytes
    chunk_size: int
    plaintext_bytes: int
    raw: bytes

    @property
    def chunks(self) -> int:
        return max(1, -(-self.plaintext_bytes // self.chunk_size))

    @property
    def file_bytes(self) -> int:
        return len(self.raw) + self.plaintext_bytes + self.chunks * _TAG


def _prefix(key_id: str, binding: str) -> bytes:
    kid, bound = key_id.encode(), binding.encode()
    return (MAGIC + bytes([FORMAT_VERSION, len(kid)]) + kid
            + struct.pack(">H", len(bound)) + bound)


def _wrap_aad(binding: str) -> bytes:
    return MAGIC + bytes([FORMAT_VERSION]) + binding.encode()


def _chunk_cipher(data_key: bytes, salt: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"kiln-enc/1 chunks")
    return AESGCM(hkdf.derive(data_key))


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">I?", index, last)


def encrypt_file(source: Path, target: Path, keys: KeyProvider, *, binding: str = "",
                 chunk_size: int = CHUNK_SIZE) -> None:
    """Encrypt ``source`` into ``target`` (written to a temporary file, then renamed)."""
    size = source.stat().st_size
    data_key, salt, prefix = (secrets.token_bytes(32), secrets.token_bytes(32),
                              secrets.token_bytes(7))
    key_id, wrapped = keys.wrap(data_key, _wrap_aad(binding))
    header = (_prefix(key_id, binding) + struct.pack(">H", len(wrapped)) + wrapped
              + _TAIL.pack(salt, prefix, chunk_size, size))
    cipher = _chunk_cipher(data_key, salt)
    chunks = max(1, -(-size // chunk_size))
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as plain:
            out.write(header)
            for index in range(chunks):
                chunk = plain.read(chunk_size)
                out.write(cipher.encrypt(_nonce(prefix, index, index == chunks - 1), chunk,
                                         header))
            if plain.read(1):
                raise InvalidModel(f"{source} grew while it was being encrypted")
        os.chmod(temp, stat.S_IMODE(source.stat().st_mode))
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_header(read: Callable[[int], bytes]) -> Header:
    """Parse the header from ``read`` (a file's ``read``); refuses anything malformed."""
    raw = bytearray()

    def take(n: int) -> bytes:
        part = read(n)
        if len(part) != n:
            raise InvalidModel("not a kiln encrypted model: the header is cut short")
        raw.extend(part)
        return part

    if take(len(MAGIC)) != MAGIC:
        raise InvalidModel("not a kiln encrypted model (no KILNENC header)")
    version, kid_len = take(2)
    if version != FORMAT_VERSION:
        raise InvalidModel(f"encrypted model format version {version} is not supported "
                           f"(this kiln reads version {FORMAT_VERSION})")
    kid = take(kid_len).decode("ascii", errors="replace")
    binding = take(struct.unpack(">H", take(2))[0]).decode("utf-8", errors="replace")
    wrapped = take(struct.unpack(">H", take(2))[0])
    salt, prefix, chunk_size, plain = _TAIL.unpack(take(_TAIL.size))
    header = Header(kid, binding, wrapped, salt, prefix, chunk_size, plain, bytes(raw))
    if not 1024 <= chunk_size <= 1 << 28 or header.chunks > _MAX_CHUNKS:
        raise InvalidModel(f"encrypted model header is invalid (chunk size {chunk_size}, "
                           f"{plain} bytes)")
    return header


def decrypt(file: BinaryIO, keys: KeyProvider | None, *, binding: str, file_bytes: int,
            read: Callable[[int], bytes] | None = None) -> bytes:
    """The plaintext of the encrypted model in ``file`` (``file_bytes`` long), in memory.

    ``read`` replaces ``file.read`` (e.g. to hash the bytes as they are read)."""
    read = read or file.read
    header = read_header(read)
    if header.binding and header.binding != binding:
        raise InvalidModel(f"this file was encrypted for {header.binding}, not {binding}")
    if keys is None:
        raise InvalidModel("the model file is encrypted but no model key is configured; "
                           "pass --model-key-file or set KILN_MODEL_KEY")
    if file_bytes != header.file_bytes:
        raise InvalidModel(f"encrypted model file is {file_bytes} bytes, its header says "
                           f"{header.file_bytes}: the file is truncated or was altered")
    data_key = keys.unwrap(header.key_id, header.wrapped_key, _wrap_aad(header.binding))
    cipher = _chunk_cipher(data_key, header.salt)
    # NOTE: BytesIO.getvalue() hands over its buffer without a copy, so the peak is about
    # one plaintext plus one chunk, not two plaintexts.
    out = io.BytesIO()
    for index in range(header.chunks):
        last = index == header.chunks - 1
        size = (header.plaintext_bytes - index * header.chunk_size if last
                else header.chunk_size)
        try:
            out.write(cipher.decrypt(_nonce(header.nonce_prefix, index, last),
                                     read(size + _TAG), header.raw))
        except InvalidTag:
            raise InvalidModel(
                f"chunk {index} of {header.chunks} failed authentication: the file was "
                "altered, truncated or reordered, or the header belongs to another file"
            ) from None
    return out.getvalue()
