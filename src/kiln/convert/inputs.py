"""Example inputs: naming them, declaring a signature, and generating more for the parity check.

Generated inputs follow the declared signature: every ``-1`` dimension is dynamic. The first
dimension is the batch; other dynamic dimensions (a sequence length, say) take the same size
across all inputs of one set, so inputs that must agree (``input_ids`` and
``attention_mask``) do. Values are drawn from each input's range in the examples (integers
in ``[min, max]``, floats uniformly in ``[min, max]``), or, without examples, from a standard
normal (floats) and ``[0, 10)`` (integers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from kiln.convert.base import ConversionError, to_numpy
from kiln.errors import InvalidArgument
from kiln.tensors import DataType, TensorDict, TensorSpec, format_shape

#: Sizes of the dynamic non-batch dimensions in generated sets (the last is the example's).
_LENGTHS = (3, 7)
#: Size of a dynamic non-batch dimension when no example shows one.
_DEFAULT_LENGTH = 8


@dataclass(frozen=True, slots=True)
class InputSet:
    """One set of inputs for the parity check, with a label for the report."""

    label: str
    tensors: TensorDict


def parse_tensor_spec(text: str) -> TensorSpec:
    """``NAME:DATATYPE:DIMS`` as on the command line, e.g. ``pixels:FP32:-1,784``."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0]:
        raise InvalidArgument(
            f"input '{text}': expected NAME:DATATYPE:DIMS, e.g. pixels:FP32:-1,784"
        )
    name, datatype, dims = parts
    try:
        shape = tuple(int(d) for d in dims.split(",")) if dims else ()
        return TensorSpec(name, DataType.from_any(datatype), shape)
    except ValueError as exc:
        raise InvalidArgument(f"input '{text}': {exc}") from None


def name_examples(examples: object, names: Callable[[int], list[str]]) -> TensorDict | None:
    """Examples as a TensorDict; positional ones (an array, a list) get the model's names."""

    if examples is None:
        return None
    if isinstance(examples, Mapping):
        return {str(k): to_numpy(v) for k, v in examples.items()}
    items = list(examples) if isinstance(examples, list | tuple) else [examples]
    return dict(zip(names(len(items)), (to_numpy(v) for v in items), strict=True))


def specs_from_examples(examples: TensorDict, *, batch: bool = True) -> tuple[TensorSpec, ...]:
    """A signature read off example arrays; with ``batch`` the first dimension is dynamic."""
    specs = []
    for name, value in examples.items():
        shape = tuple(int(d) for d in value.shape)
        if batch and shape:
            shape = (-1, *shape[1:])
        specs.append(TensorSpec(name, DataType.from_numpy(value.dtype), shape))
    return tuple(specs)


def choose_specs(declared: Sequence[TensorSpec] | None, examples: TensorDict | None, *,
                 model_specs: Sequence[TensorSpec] = (), missing: str) -> tuple[TensorSpec, ...]:
    """Declared inputs first, then the model's own, then the examples'; else fail: ``missing``."""

    if declared:
        return tuple(declared)
    if model_specs:
        return tuple(model_specs)
    if examples is not None:
        return specs_from_examples(examples)
    raise ConversionError(missing)


def check_examples(specs: Sequence[TensorSpec], examples: TensorDict) -> None:
    """Examples must match the signature: every input, its datatype and its shape."""
    for spec in specs:
        value = examples.get(spec.name)
        if value is None:
            raise InvalidArgument(f"no example given for input '{spec.name}'")
        if DataType.from_numpy(value.dtype) is not spec.datatype:
            raise InvalidArgument(
                f"example for input '{spec.name}' is {DataType.from_numpy(value.dtype).v2}, "
                f"the model takes {spec.datatype.v2}"
            )
        if not spec.accepts_shape(value.shape):
            raise InvalidArgument(
                f"example for input '{spec.name}' has shape {format_shape(value.shape)}, "
                f"the model takes {spec.describe_shape()}"
            )


def export_sample(specs: Sequence[TensorSpec], examples: TensorDict | None,
                  rng: np.random.Generator) -> TensorDict:
    """Arrays to export with: the examples (batch of 1 doubled), or generated ones."""
    if examples is None:
        return generate(specs, None, batch=2, length=_DEFAULT_LENGTH, rng=rng)
    sample = {}
    for spec in specs:
        value = examples[spec.name]
        if spec.shape and spec.shape[0] == -1 and value.shape[0] < 2:
            value = np.concatenate([value] * 2) if value.shape[0] else value
        sample[spec.name] = value
    return sample


def parity_sets(specs: Sequence[TensorSpec], examples: TensorDict | None,
                batch_sizes: Sequence[int], rng: np.random.Generator) -> list[InputSet]:
    """The examples, then one generated set per batch size (with varied dynamic lengths)."""
    sets = [InputSet("examples", examples)] if examples is not None else []
    base = _example_length(specs, examples)
    lengths = (*_LENGTHS, base)
    batched = any(s.shape and s.shape[0] == -1 for s in specs)
    for i, size in enumerate(batch_sizes if batched else batch_sizes[:1]):
        length = lengths[min(i, len(lengths) - 1)]
        tensors = generate(specs, examples, batch=size, length=length, rng=rng)
        label = f"generated batch {size}" if batched else "generated"
        sets.append(InputSet(label, tensors))
    return sets


def generate(specs: Sequence[TensorSpec], examples: TensorDict | None, *, batch: int,
             length: int, rng: np.random.Generator) -> TensorDict:
    """Random inputs for ``specs``: dynamic dim 0 = ``batch``, other dynamic dims = ``length``."""
    result = {}
    for spec in specs:
        shape = tuple(
            d if d != -1 else (batch if axis == 0 else length) for axis, d in enumerate(spec.shape)
        )
        like = examples.get(spec.name) if examples is not None else None
        result[spec.name] = _values(spec.datatype, shape, like, rng)
    return result


def _values(datatype: DataType, shape: tuple[int, ...], like: np.ndarray | None,
            rng: np.random.Generator) -> np.ndarray:
    dtype = datatype.numpy
    if datatype is DataType.BYTES:
        pool = like.reshape(-1) if like is not None and like.size else np.array([b"kiln"], object)
        return rng.choice(pool, size=shape).astype(object)
    if datatype is DataType.BOOL:
        return rng.random(shape) < 0.5
    if like is not None and like.size:
        low, high = like.min(), like.max()
        if np.issubdtype(dtype, np.integer):
            return rng.integers(int(low), int(high), size=shape, endpoint=True).astype(dtype)
        return rng.uniform(float(low), float(high), size=shape).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 10, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _example_length(specs: Sequence[TensorSpec], examples: TensorDict | None) -> int:
    """The size of the first dynamic non-batch dimension in the examples."""
    if examples is None:
        return _DEFAULT_LENGTH
    for spec in specs:
        for axis, dim in enumerate(spec.shape[1:], start=1):
            if dim == -1:
                return int(examples[spec.name].shape[axis])
    return _DEFAULT_LENGTH
