"""The requests a benchmark sends: generated from the model's signature, or read from data.

Data comes from a ``.npz`` file (arrays named after the model's inputs, plus an optional
``labels`` array), a folder of ``.npz`` files (one request each), or the name of a
scikit-learn dataset (``digits``, ``iris``, ``wine``, ``breast_cancer``: its held-out split).
A data set's rows are cut into requests of ``batch_size`` rows along the first dimension.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiln.errors import InvalidArgument
from kiln.tensors import DataType, Signature, TensorDict, TensorSpec, format_shape

#: Array names taken as labels in a data file, in order of preference.
LABEL_KEYS = ("labels", "label", "y")
#: scikit-learn datasets known by name (the digits one is the bundled example's split).
DATASETS = ("digits", "iris", "wine", "breast_cancer")


@dataclass(frozen=True, slots=True)
class Dataset:
    """Requests to send, and the labels of their rows in order (when known)."""

    requests: list[TensorDict]
    labels: np.ndarray | None
    source: str


def resolve_shapes(signature: Signature, *, batch_size: int,
                   shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Concrete shapes: ``shapes`` first, else a leading -1 becomes ``batch_size``."""
    resolved = {}
    for spec in signature.inputs:
        if spec.name in shapes:
            shape = tuple(shapes[spec.name])
            if not spec.accepts_shape(shape):
                raise InvalidArgument(f"--shape {spec.name}:{','.join(map(str, shape))} does "
                                      f"not fit the input's shape {spec.describe_shape()}")
        else:
            shape = tuple(batch_size if i == 0 and d == -1 else d
                          for i, d in enumerate(spec.shape))
        if any(d < 0 for d in shape):
            raise InvalidArgument(
                f"input '{spec.name}' has shape {spec.describe_shape()}: give its size with "
                f"--shape {spec.name}:{','.join('N' if d < 0 else str(d) for d in shape)}")
        resolved[spec.name] = shape
    return resolved


def generate(signature: Signature, *, batch_size: int = 1,
             shapes: Mapping[str, Sequence[int]] | None = None, count: int = 16,
             seed: int = 0) -> Dataset:
    """``count`` distinct requests of random values that fit the signature."""
    concrete = resolve_shapes(signature, batch_size=batch_size, shapes=shapes or {})
    rng = np.random.default_rng(seed)
    requests = [{spec.name: _random(spec, concrete[spec.name], rng)
                 for spec in signature.inputs} for _ in range(count)]
    return Dataset(requests, None, "generated")


def _random(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    datatype = spec.datatype
    if datatype is DataType.BYTES:
        words = rng.integers(0, 1000, size=shape)
        out = np.empty(shape, dtype=object)
        out.reshape(-1)[:] = [f"w{w}".encode() for w in words.reshape(-1)]
        return out
    if datatype is DataType.BOOL:
        return rng.integers(0, 2, size=shape).astype(bool)
    if datatype.numpy.kind in "iu":
        return rng.integers(0, 100, size=shape).astype(datatype.numpy)
    return rng.random(shape, dtype=np.float64).astype(datatype.numpy)


def load(source: str, signature: Signature, *, batch_size: int = 1) -> Dataset:
    """Requests from a data file, a folder of data files, or a scikit-learn dataset name."""
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise InvalidArgument(f"data folder '{source}' holds no .npz files")
        parts = [_from_arrays(dict(np.load(f, allow_pickle=False)), signature, f.name)
                 for f in files]
        found = [p[1] for p in parts if p[1] is not None]
        return Dataset([p[0] for p in parts],
                       np.concatenate(found) if len(found) == len(parts) else None, source)
    if path.is_file():
        inputs, labels = _from_arrays(dict(np.load(path, allow_pickle=False)), signature,
                                      path.name)
    elif source in DATASETS:
        inputs, labels = _sklearn(source, signature)
    else:
        raise InvalidArgument(f"data '{source}' is not a .npz file, a folder of them, or one "
                              f"of the scikit-learn datasets {', '.join(DATASETS)}")
    return Dataset(split_rows(inputs, signature, batch_size), labels, source)


def _from_arrays(arrays: dict[str, np.ndarray], signature: Signature,
                 what: str) -> tuple[TensorDict, np.ndarray | None]:
    label_key = next((k for k in LABEL_KEYS if k in arrays), None)
    labels = arrays.pop(label_key) if label_key else None
    names = [spec.name for spec in signature.inputs]
    if len(names) == 1 and names[0] not in arrays and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InvalidArgument(
            f"data file '{what}' has no array for input(s) {', '.join(missing)} (it holds "
            f"{', '.join(arrays) or 'nothing'}): name the arrays after the model's inputs")
    inputs = {spec.name: _cast(arrays[spec.name], spec) for spec in signature.inputs}
    return inputs, labels


def _cast(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.datatype is DataType.BYTES:
        return np.array([x.encode() if isinstance(x, str) else bytes(x)
                         for x in array.reshape(-1)], dtype=object).reshape(array.shape)
    return np.ascontiguousarray(array, dtype=spec.datatype.numpy)


def _sklearn(name: str, signature: Signature) -> tuple[TensorDict, np.ndarray]:
    if len(signature.inputs) != 1:
        raise InvalidArgument(f"dataset '{name}' feeds a model with one input; this one has "
                              f"{len(signature.inputs)}")
    spec = signature.inputs[0]
    try:
        from sklearn import datasets
        from sklearn.model_selection import train_test_split

        from kiln.examples.digits import load_split
    except ImportError:
        raise InvalidArgument("scikit-learn datasets need scikit-learn: "
                              "pip install 'kiln-ml[sklearn]'") from None
    if name == "digits":
        _, x, _, y = load_split()
    else:
        features, target = getattr(datasets, f"load_{name}")(return_X_y=True)
        _, x, _, y = train_test_split(features, target, test_size=0.2, random_state=0,
                                      stratify=target)
    return {spec.name: _cast(x, spec)}, np.asarray(y)


def split_rows(inputs: TensorDict, signature: Signature, batch_size: int) -> list[TensorDict]:
    """Cut arrays into requests along the first dimension: ``batch_size`` rows each when the
    model takes any batch, else as many rows as its fixed first dimension."""
    rows = {len(a) for a in inputs.values()}
    if len(rows) != 1:
        raise InvalidArgument(f"the data's arrays have different numbers of rows: {rows}")
    total = rows.pop()
    first = {spec.shape[0] if spec.shape else 1 for spec in signature.inputs}
    step = batch_size if -1 in first else max(first)
    if -1 not in first and total % step:
        shape = format_shape(signature.inputs[0].shape)
        raise InvalidArgument(f"the model takes exactly {step} rows per request ({shape}) but "
                              f"the data has {total} rows, which is not a multiple of {step}")
    return [{name: array[i:i + step] for name, array in inputs.items()}
            for i in range(0, total, step)]
