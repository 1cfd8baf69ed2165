"""Sample tensors for every datatype, reproducible, spanning each integer type's full range."""

from __future__ import annotations

import numpy as np

from kiln.tensors import DataType

#: Arbitrary bytes: NUL bytes, an empty element, bytes that are not UTF-8.
BYTES = np.array([b"\x00nul\x00", b"", b"\xff\xfe not utf-8", "é".encode()] * 2, dtype=object)


def sample(datatype: DataType, shape: tuple[int, ...] = (2, 4)) -> np.ndarray:
    """A reproducible ``shape`` array of ``datatype`` (the same array on every call)."""
    rng = np.random.default_rng(7)
    count = int(np.prod(shape))
    if datatype is DataType.BYTES:
        return BYTES[:count].reshape(shape)
    if datatype is DataType.BOOL:
        return rng.integers(0, 2, shape).astype(bool)
    dtype = datatype.numpy
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)
