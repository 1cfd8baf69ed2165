"""Checks every V2 codec (JSON and gRPC) applies to a declared tensor, so that a request is
judged the same way whatever wire it came on."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.errors import InvalidArgument
from kiln.serve.codecs.limits import DecodeLimits
from kiln.tensors import DataType, element_count

_INT_RANGES = {d: (int(np.iinfo(d.numpy).min), int(np.iinfo(d.numpy).max))
               for d in DataType if d.numpy.kind in "iu"}


def parse_datatype(value: Any, what: str) -> DataType:
    """A V2 datatype name -> ``DataType``; the error lists the names accepted."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} needs a 'datatype' string such as FP32")
    try:
        return DataType.from_v2(value)
    except ValueError as exc:
        raise InvalidArgument(f"{what}: {exc}") from None


def check_shape(value: Any, what: str, limits: DecodeLimits) -> tuple[int, ...]:
    """A declared shape: a list of non-negative integers no longer than the rank limit."""
    if not isinstance(value, list):
        raise InvalidArgument(f"{what} needs a 'shape' list of non-negative integers")
    if len(value) > limits.max_rank:
        raise InvalidArgument(f"{what}: rank {len(value)} exceeds the limit {limits.max_rank}")
    for dim in value:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise InvalidArgument(
                f"{what}: shape {value!r:.80} must hold non-negative integers"
            )
    return tuple(value)


def count_elements(shape: tuple[int, ...], what: str, limits: DecodeLimits) -> int:
    """Elements in ``shape``, refusing counts over the limit before anything is allocated."""
    try:
        return element_count(shape, limit=limits.max_elements)
    except ValueError as exc:
        raise InvalidArgument(f"{what}: {exc}") from None


def check_int_range(array: np.ndarray, datatype: DataType, what: str) -> None:
    """Refuse integer values that ``datatype`` cannot hold (before a narrowing cast)."""
    low, high = _INT_RANGES[datatype]
    if array.size and (int(array.min()) < low or int(array.max()) > high):
        raise InvalidArgument(f"{what}: a value is outside the range of {datatype.v2}")
