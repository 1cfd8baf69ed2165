"""Datatypes, tensor specs and signatures: the nouns shared by runtime, serve and bench.

One table, ``DataType``, maps every name a datatype goes by (KServe V2, numpy, ONNX,
TensorFlow, Triton's ``config.pbtxt``); every lookup is derived from it.

    >>> DataType.from_onnx("tensor(float)") is DataType.FP32
    True
    >>> spec = TensorSpec("pixels", DataType.FP32, (-1, 64))
    >>> spec.describe_shape()
    '[-1, 64]'
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TypeAlias

import numpy as np

#: The currency between runtime, serve and bench: tensor name -> numpy array.
TensorDict: TypeAlias = dict[str, np.ndarray]


def _bfloat16() -> np.dtype | None:
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes ships with onnx
        return None
    bfloat16: np.dtype = np.dtype(ml_dtypes.bfloat16)
    return bfloat16


class DataType(enum.Enum):
    """A tensor datatype and its names in every protocol and runtime kiln speaks.

    Value tuple: (V2 name, numpy dtype name, ONNX type string, TF Serving name,
    Triton config name, bytes per element; 0 = variable).
    """

    BOOL = ("BOOL", "bool", "tensor(bool)", "DT_BOOL", "TYPE_BOOL", 1)
    UINT8 = ("UINT8", "uint8", "tensor(uint8)", "DT_UINT8", "TYPE_UINT8", 1)
    UINT16 = ("UINT16", "uint16", "tensor(uint16)", "DT_UINT16", "TYPE_UINT16", 2)
    UINT32 = ("UINT32", "uint32", "tensor(uint32)", "DT_UINT32", "TYPE_UINT32", 4)
    UINT64 = ("UINT64", "uint64", "tensor(uint64)", "DT_UINT64", "TYPE_UINT64", 8)
    INT8 = ("INT8", "int8", "tensor(int8)", "DT_INT8", "TYPE_INT8", 1)
    INT16 = ("INT16", "int16", "tensor(int16)", "DT_INT16", "TYPE_INT16", 2)
    INT32 = ("INT32", "int32", "tensor(int32)", "DT_INT32", "TYPE_INT32", 4)
    INT64 = ("INT64", "int64", "tensor(int64)", "DT_INT64", "TYPE_INT64", 8)
    FP16 = ("FP16", "float16", "tensor(float16)", "DT_HALF", "TYPE_FP16", 2)
    FP32 = ("FP32", "float32", "tensor(float)", "DT_FLOAT", "TYPE_FP32", 4)
    FP64 = ("FP64", "float64", "tensor(double)", "DT_DOUBLE", "TYPE_FP64", 8)
    BF16 = ("BF16", "bfloat16", "tensor(bfloat16)", "DT_BFLOAT16", "TYPE_BF16", 2)
    BYTES = ("BYTES", "object", "tensor(string)", "DT_STRING", "TYPE_STRING", 0)

    @property
    def v2(self) -> str:
        return self.value[0]

    @property
    def onnx(self) -> str:
        return self.value[2]

    @property
    def tf(self) -> str:
        return self.value[3]

    @property
    def triton(self) -> str:
        return self.value[4]

    @property
    def itemsize(self) -> int:
        """Bytes per element on the wire; 0 for BYTES (each element is length-prefixed)."""
        return self.value[5]

    @property
    def numpy(self) -> np.dtype:
        dtype = _NUMPY[self]
        if dtype is None:  # pragma: no cover - ml_dtypes ships with onnx
            raise TypeError("BF16 needs the 'ml_dtypes' package")
        return dtype

    @property
    def json_capable(self) -> bool:
        """FP16 and BF16 have no JSON form; they travel only as binary."""
        return self not in (DataType.FP16, DataType.BF16)

    @classmethod
    def from_v2(cls, name: str) -> DataType:
        try:
            return _BY_V2[name]
        except KeyError:
            raise ValueError(
                f"unknown datatype '{name}'; expected one of {', '.join(_BY_V2)}"
            ) from None

    @classmethod
    def from_any(cls, name: str) -> DataType:
        """Accept a V2 (``FP32``), Triton (``TYPE_FP32``) or TF (``DT_FLOAT``) name."""
        found = _BY_V2.get(name) or _BY_TRITON.get(name) or _BY_TF.get(name)
        if found is None:
            raise ValueError(
                f"unknown datatype '{name}'; expected a KServe V2 name such as "
                f"{', '.join(_BY_V2)} (Triton TYPE_* and TF DT_* names are accepted too)"
            )
        return found

    @classmethod
    def from_onnx(cls, type_string: str) -> DataType:
        try:
            return _BY_ONNX[type_string]
        except KeyError:
            raise ValueError(f"ONNX type '{type_string}' has no KServe V2 datatype") from None

    @classmethod
    def from_numpy(cls, dtype: np.dtype) -> DataType:
        return _by_numpy(np.dtype(dtype))


_NUMPY = {d: _bfloat16() if d is DataType.BF16 else np.dtype(d.value[1]) for d in DataType}
_BY_V2 = {d.v2: d for d in DataType}
_BY_TRITON = {d.triton: d for d in DataType}
_BY_TF = {d.tf: d for d in DataType}
_BY_ONNX = {d.onnx: d for d in DataType}


@cache
def _by_numpy(dtype: np.dtype) -> DataType:
    if dtype.kind in "OSU":
        return DataType.BYTES
    for d in DataType:
        if d is not DataType.BYTES and d.numpy == dtype:
            return d
    raise ValueError(f"numpy dtype '{dtype}' has no KServe V2 datatype")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A named tensor: datatype and shape, with -1 for a dimension of any size."""

    name: str
    datatype: DataType
    shape: tuple[int, ...]

    def describe_shape(self) -> str:
        return format_shape(self.shape)

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        )


@dataclass(frozen=True, slots=True)
class Signature:
    """What a model takes and returns. ``max_batch_size`` > 0 means dim 0 is the batch."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0

    def input(self, name: str) -> TensorSpec | None:
        return _find(self.inputs, name)

    def output(self, name: str) -> TensorSpec | None:
        return _find(self.outputs, name)


def _find(specs: tuple[TensorSpec, ...], name: str) -> TensorSpec | None:
    for spec in specs:
        if spec.name == name:
            return spec
    return None


def format_shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def element_count(shape: Sequence[int], *, limit: int) -> int:
    """Elements in ``shape``; raises ``ValueError`` for negative dims or a count over ``limit``.

    NOTE: checks as it multiplies, so a hostile shape never builds a huge integer.
    """
    count = 1
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise ValueError(f"dimension {dim!r} is not a non-negative integer")
        count *= dim
        if count > limit or dim > limit:
            raise ValueError(f"shape {format_shape(shape)} holds more than {limit} elements")
    return count
