"""Raw tensor bytes: little-endian, row-major; BYTES elements as 4-byte length + bytes.

Shared by the V2 binary extension (HTTP) and V2 gRPC raw contents.
"""

from __future__ import annotations

import struct

import numpy as np

from kiln.errors import InvalidArgument
from kiln.tensors import DataType, format_shape

_LENGTH = struct.Struct("<I")


def decode_tensor(data: bytes | memoryview, datatype: DataType, shape: tuple[int, ...],
                  count: int, *, what: str) -> np.ndarray:
    """Raw bytes -> array of ``shape``; numeric tensors are zero-copy views of ``data``.

    ``count`` is the element count of ``shape`` (checked by the caller without overflow).
    """
    if datatype is DataType.BYTES:
        return decode_bytes_elements(data, count, what=what).reshape(shape)
    expected = count * datatype.itemsize
    if len(data) != expected:
        raise InvalidArgument(
            f"{what} declares shape {format_shape(shape)} of {datatype.v2}, which is "
            f"{expected} bytes, but {len(data)} bytes were sent"
        )
    return np.frombuffer(data, dtype=datatype.numpy.newbyteorder("<")).reshape(shape)


def decode_bytes_elements(data: bytes | memoryview, count: int, *, what: str) -> np.ndarray:
    """Length-prefixed BYTES elements -> 1-D object array of ``bytes``; every prefix is checked."""
    view = memoryview(data)
    out = np.empty(count, dtype=object)
    offset, end = 0, len(view)
    for i in range(count):
        if offset + 4 > end:
            raise InvalidArgument(
                f"{what} declares {count} BYTES elements but the data ends after {i}"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidArgument(
                f"{what} element {i} claims {length} bytes but only {end - offset} remain"
            )
        out[i] = bytes(view[offset:offset + length])
        offset += length
    if offset != end:
        raise InvalidArgument(
            f"{what} holds {end - offset} bytes beyond its {count} BYTES elements"
        )
    return out


def encode_tensor(array: np.ndarray, datatype: DataType) -> bytes:
    """Array -> raw bytes in the wire layout."""
    if datatype is DataType.BYTES:
        parts = []
        for item in array.reshape(-1):
            raw = element_bytes(item)
            parts.append(_LENGTH.pack(len(raw)))
            parts.append(raw)
        return b"".join(parts)
    wire = datatype.numpy.newbyteorder("<")
    return np.ascontiguousarray(array, dtype=wire).tobytes()


def element_bytes(item: object) -> bytes:
    """One BYTES element as bytes: ``bytes`` as they are, anything else as UTF-8 text."""
    return item if isinstance(item, bytes) else str(item).encode("utf-8")
