"""JSON tensor values -> numpy arrays, every value checked: shared by the V2 JSON and the TF
Serving codecs."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from kiln.errors import InvalidArgument
from kiln.serve.codecs.checks import check_int_range
from kiln.serve.codecs.limits import DecodeLimits
from kiln.tensors import DataType, format_shape


def loads(body: bytes | memoryview, what: str = "request body") -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None


def json_to_array(data: Any, datatype: DataType, shape: tuple[int, ...], count: int, *,
                  what: str, limits: DecodeLimits) -> np.ndarray:
    """JSON ``data`` (nested or flat, row-major) -> array of ``shape``, checking every value."""
    if not isinstance(data, list):
        data = [data]
    depth, probe = 0, data
    while isinstance(probe, list) and probe:
        depth += 1
        if depth > limits.max_json_depth:
            raise InvalidArgument(f"{what}: data is nested deeper than {limits.max_json_depth}")
        probe = probe[0]
    if datatype is DataType.BYTES:
        return _json_bytes(data, shape, count, what)
    try:
        array = np.asarray(data)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{what}: data is ragged or holds values of mixed kinds") from None
    if array.size != count:
        raise InvalidArgument(
            f"{what} declares shape {format_shape(shape)} ({count} elements) but data holds "
            f"{array.size}"
        )
    if array.ndim != 1 and array.shape != shape:
        raise InvalidArgument(
            f"{what}: nested data has shape {format_shape(array.shape)}, declared "
            f"{format_shape(shape)}"
        )
    if array.dtype.kind == "f" and datatype.numpy.kind in "iu":
        return _big_integers(data, shape, datatype, what)
    return _convert(array, datatype, what).reshape(shape)


def _convert(array: np.ndarray, datatype: DataType, what: str) -> np.ndarray:
    kind = array.dtype.kind
    if array.size == 0:
        return array.astype(datatype.numpy)
    if datatype is DataType.BOOL:
        if kind != "b":
            raise InvalidArgument(f"{what}: BOOL data must be true/false")
        return array
    if datatype.numpy.kind in "iu":
        if kind not in "iu":
            raise InvalidArgument(f"{what}: {datatype.v2} data must be integers")
        check_int_range(array, datatype, what)
        return array.astype(datatype.numpy)
    if kind not in "iuf":
        raise InvalidArgument(f"{what}: {datatype.v2} data must be numbers")
    return array.astype(datatype.numpy)


def _big_integers(data: list[Any], shape: tuple[int, ...], datatype: DataType,
                  what: str) -> np.ndarray:
    """Integers past the int64 range (valid UINT64 data), which numpy reads as floats."""
    values = np.array(data, dtype=object).reshape(-1)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise InvalidArgument(f"{what}: {datatype.v2} data must be integers")
    try:
        return np.array(values, dtype=datatype.numpy).reshape(shape)
    except OverflowError:
        raise InvalidArgument(f"{what}: a value is outside the range of {datatype.v2}") from None


def _json_bytes(data: list[Any], shape: tuple[int, ...], count: int, what: str) -> np.ndarray:
    flat = _flatten(data, what)
    if len(flat) != count:
        raise InvalidArgument(
            f"{what} declares shape {format_shape(shape)} ({count} elements) but data holds "
            f"{len(flat)}"
        )
    out = np.empty(count, dtype=object)
    for i, item in enumerate(flat):
        if not isinstance(item, str):
            raise InvalidArgument(f"{what}: BYTES data must be strings")
        out[i] = item.encode("utf-8")
    return out.reshape(shape)


def _flatten(data: list[Any], what: str) -> list[Any]:
    if not data or not isinstance(data[0], list):
        return data
    out: list[Any] = []
    for part in data:
        if not isinstance(part, list):
            raise InvalidArgument(f"{what}: data is ragged")
        out.extend(_flatten(part, what))
    return out
