"""Calibration data: the inputs static quantization runs the model on to find activation ranges.

``CalibrationData`` is ONNX Runtime's ``CalibrationDataReader`` (an iterator of input dicts,
``get_next`` returning ``None`` at the end) and also feeds NNCF. It comes from ``.npz`` files,
from arrays already in memory, or, for a smoke test only, from random inputs generated from
the model's signature (real data gives real ranges; random data does not)::

    data = CalibrationData.load("calibration.npz", signature)       # or a folder of .npz
    data = CalibrationData.generated(signature, count=16)
    quantize(model, out, recipe=Recipe(method="static"), calibration=data)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from kiln.data import inputs
from kiln.errors import InvalidArgument
from kiln.tensors import Signature, TensorDict

#: Samples calibration uses at most (128 min-max samples match NNCF's fidelity on MiniLM).
DEFAULT_SAMPLES = 128


class CalibrationData:
    """A rewindable sequence of model inputs, one dict per sample (batch of one row)."""

    def __init__(self, samples: Sequence[TensorDict], *, source: str) -> None:
        if not samples:
            raise InvalidArgument(f"calibration data from {source} holds no samples")
        self.samples = list(samples)
        self.source = source
        self._position = 0

    @classmethod
    def load(cls, path: str, signature: Signature, *,
             limit: int = DEFAULT_SAMPLES) -> CalibrationData:
        """Samples from a ``.npz`` file (arrays named after the inputs), a folder of them, or
        a scikit-learn dataset name, one row per sample."""
        dataset = inputs.load(path, signature, batch_size=1)
        return cls(dataset.requests[:limit], source=path)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], signature: Signature, *,
                    limit: int = DEFAULT_SAMPLES, source: str = "arrays") -> CalibrationData:
        """Samples from arrays in memory (rows along the first dimension)."""
        requests = inputs.split_rows(dict(arrays), signature, 1)
        return cls(requests[:limit], source=source)

    @classmethod
    def generated(cls, signature: Signature, *, count: int = 16,
                  shapes: Mapping[str, Sequence[int]] | None = None,
                  seed: int = 0) -> CalibrationData:
        """Random inputs that fit the signature: for smoke tests, not for real ranges."""
        dataset = inputs.generate(signature, batch_size=1, shapes=shapes, count=count, seed=seed)
        return cls(dataset.requests, source="generated")

    def get_next(self) -> TensorDict | None:
        """The next sample, or ``None`` after the last (ONNX Runtime's reader protocol)."""
        if self._position >= len(self.samples):
            return None
        self._position += 1
        return self.samples[self._position - 1]

    def rewind(self) -> None:
        self._position = 0

    def __iter__(self) -> Iterator[TensorDict]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)
