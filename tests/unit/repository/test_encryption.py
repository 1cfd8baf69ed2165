"""The ``.kiln-enc`` format: round trip, and every kind of tampering refused with a reason."""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.errors import ConfigError, InvalidModel
from kiln.repository.encryption import MAGIC, decrypt, encrypt_file, read_header
from kiln.repository.model_keys import KeyRing, new_key_line, write_key_file

CHUNK = 1024
PLAIN = os.urandom(4 * CHUNK + 100)  # five chunks, the last one short


def ring(*lines: str) -> KeyRing:
    ring = KeyRing.load([], ",".join(lines))
    assert ring is not None
    return ring


KEY = new_key_line()


def sealed(tmp_path: Path, data: bytes = PLAIN, *, binding: str = "m/1",
           key: str = KEY) -> bytes:
    source, target = tmp_path / "model.onnx", tmp_path / "model.onnx.kiln-enc"
    source.write_bytes(data)
    encrypt_file(source, target, ring(key), binding=binding, chunk_size=CHUNK)
    return target.read_bytes()


def open_(blob: bytes, keys: KeyRing | None = None, binding: str = "m/1") -> bytes:
    return decrypt(io.BytesIO(blob), keys if keys is not None else ring(KEY), binding=binding,
                   file_bytes=len(blob))


def header_bytes(blob: bytes) -> int:
    return len(read_header(io.BytesIO(blob).read).raw)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 7])
def test_round_trip_is_bit_identical(tmp_path: Path, size: int) -> None:
    data = PLAIN[:size]
    blob = sealed(tmp_path, data)
    assert size < 16 or data not in blob
    assert open_(blob) == data


def test_each_file_gets_its_own_data_key_and_nonces(tmp_path: Path) -> None:
    first, second = sealed(tmp_path), sealed(tmp_path)
    h = header_bytes(first)
    assert first[:len(MAGIC)] == second[:len(MAGIC)]
    assert first[h:] != second[h:]


def _flip(offset: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    def change(blob: bytes) -> bytes:
        at = offset(blob)
        return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1:]
    return change


def _chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    h = header_bytes(blob)
    body = blob[h:]
    step = CHUNK + 16
    return blob[:h], [body[i:i + step] for i in range(0, len(body), step)]


def _swap(blob: bytes) -> bytes:
    head, chunks = _chunks(blob)
    chunks[1], chunks[2] = chunks[2], chunks[1]
    return head + b"".join(chunks)


def _duplicate(blob: bytes) -> bytes:
    head, chunks = _chunks(blob)
    return head + b"".join([chunks[0], chunks[0], *chunks[2:]])


def _drop_last(blob: bytes) -> bytes:
    head, chunks = _chunks(blob)
    return head + b"".join(chunks[:-1])


TAMPERING = {
    "magic": (_flip(lambda b: 0), "no KILNENC header"),
    "format-version": (_flip(lambda b: len(MAGIC)), "format version 0"),
    "key-id": (_flip(lambda b: len(MAGIC) + 3), "not among the configured model keys"),
    "binding": (_flip(lambda b: header_bytes(b) - 51 - 60 - 4), "encrypted for"),
    "wrapped-key": (_flip(lambda b: header_bytes(b) - 51 - 30), "header was altered"),
    "salt": (_flip(lambda b: header_bytes(b) - 51), "chunk 0 of 5 failed"),
    "plaintext-length": (_flip(lambda b: header_bytes(b) - 1), "truncated or was altered"),
    "chunk-0": (_flip(lambda b: header_bytes(b) + 5), "chunk 0 of 5 failed"),
    "middle-chunk": (_flip(lambda b: header_bytes(b) + 2 * (CHUNK + 16) + 9),
                     "chunk 2 of 5 failed"),
    "last-tag": (_flip(lambda b: len(b) - 1), "chunk 4 of 5 failed"),
    "swapped-chunks": (_swap, "chunk 1 of 5 failed"),
    "duplicated-chunk": (_duplicate, "chunk 1 of 5 failed"),
    "truncated": (lambda b: b[:-700], "truncated"),
    "last-chunk-removed": (_drop_last, "truncated"),
    "extra-bytes": (lambda b: b + b"\0", "truncated or was altered"),
    "empty": (lambda b: b"", "cut short"),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_tampering_is_refused_with_a_reason(tmp_path: Path, case: str) -> None:
    change, reason = TAMPERING[case]
    with pytest.raises(InvalidModel) as info:
        open_(change(sealed(tmp_path)))
    assert reason in info.value.message


def test_a_header_from_another_file_is_refused(tmp_path: Path) -> None:
    """Same key, same model, same length: the other file's data key cannot open these chunks."""
    first, second = sealed(tmp_path), sealed(tmp_path)
    h = header_bytes(first)
    with pytest.raises(InvalidModel, match="chunk 0 of 5 failed"):
        open_(second[:h] + first[h:])


def test_truncation_is_caught_by_authentication_even_if_the_length_is_rewritten(
        tmp_path: Path) -> None:
    blob = _drop_last(sealed(tmp_path))
    h = header_bytes(blob)
    forged = blob[:h - 8] + struct.pack(">Q", 4 * CHUNK) + blob[h:]
    with pytest.raises(InvalidModel, match="chunk 0 of 4 failed"):
        open_(forged)


def test_wrong_or_missing_key_and_wrong_place(tmp_path: Path) -> None:
    blob = sealed(tmp_path)
    with pytest.raises(InvalidModel, match="not among the configured model keys"):
        open_(blob, ring(new_key_line()))
    with pytest.raises(InvalidModel, match="no model key is configured"):
        decrypt(io.BytesIO(blob), None, binding="m/1", file_bytes=len(blob))
    with pytest.raises(InvalidModel, match="encrypted for m/1, not other/1"):
        open_(blob, binding="other/1")
    unbound = sealed(tmp_path, binding="")
    assert open_(unbound, binding="anything/7") == PLAIN


def test_rotation_old_files_open_while_both_keys_are_listed(tmp_path: Path) -> None:
    old, new = KEY, new_key_line()
    blob = sealed(tmp_path, key=old)
    assert open_(blob, ring(new, old)) == PLAIN
    assert ring(new, old).primary == ring(new).primary
    with pytest.raises(InvalidModel, match="not among"):
        open_(blob, ring(new))


def test_a_header_claiming_too_many_chunks_is_refused_before_reading(tmp_path: Path) -> None:
    blob = sealed(tmp_path)
    h = header_bytes(blob)
    forged = blob[:h - 12] + struct.pack(">IQ", 1024, 1 << 50) + blob[h:]
    with pytest.raises(InvalidModel, match="header is invalid"):
        open_(forged)


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "model.key"
    key_id = write_key_file(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    loaded = KeyRing.load([path])
    assert loaded is not None and loaded.ids == [key_id]
    with pytest.raises(FileExistsError):
        write_key_file(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        KeyRing.load([path])
    path.chmod(0o600)
    path.write_text(path.read_text().replace(key_id, "0" * 16))
    with pytest.raises(ConfigError, match="line 2: not a kiln model key"):
        KeyRing.load([path])
    assert KeyRing.load([], None) is None
