"""In-process speed of the FP32 model and its quantized version, measured side by side.

Batch-1 latency and larger-batch throughput, with the two models' runs interleaved round by
round so that a neighbour loading the machine slows both alike; the report gives medians and
their ratios, which stay meaningful on a shared machine where absolute times do not.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiln.optimize.evaluate import open_session
from kiln.runtime import Session
from kiln.tensors import Signature, TensorDict


@dataclass(frozen=True, slots=True)
class Speed:
    """Median timings of one model."""

    backend: str
    batch1_ms: float
    #: Rows of the throughput batch (``None`` when the model's batch size is fixed).
    batch_size: int | None
    batch_ms: float | None
    rows_per_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def batch_of(sample: TensorDict, rows: int) -> TensorDict:
    """``sample``'s rows repeated (or cut) to ``rows`` rows."""
    return {name: np.resize(value, (rows, *value.shape[1:])).astype(value.dtype)
            for name, value in sample.items()}


def batchable(signature: Signature) -> bool:
    return all(s.shape and s.shape[0] == -1 for s in signature.inputs)


def measure(models: list[tuple[Path, str]], sample: TensorDict, *, batch_size: int = 32,
            rounds: int = 10, threads: int = 1) -> list[Speed]:
    """Time each ``(path, backend)`` on one row and on ``batch_size`` rows of ``sample``,
    interleaved; ``rounds`` batch runs and ``4 * rounds`` single-row runs per model."""
    sessions = [open_session(path, backend, threads=threads) for path, backend in models]
    try:
        single = batch_of(sample, 1)
        large = batch_of(sample, batch_size) if batchable(sessions[0].signature) else None
        ones = _interleaved(sessions, single, 4 * rounds)
        many = _interleaved(sessions, large, rounds) if large is not None else None
    finally:
        for session in sessions:
            session.close()
    speeds = []
    for index, (_, backend) in enumerate(models):
        batch_ms = float(np.median(many[index])) * 1e3 if many is not None else None
        speeds.append(Speed(
            backend=backend, batch1_ms=float(np.median(ones[index])) * 1e3,
            batch_size=batch_size if many is not None else None, batch_ms=batch_ms,
            rows_per_s=batch_size / batch_ms * 1e3 if batch_ms else None))
    return speeds


def _interleaved(sessions: list[Session], inputs: TensorDict, rounds: int) -> list[list[float]]:
    for session in sessions:  # warm-up: first runs allocate and pick kernels
        session.run(inputs)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for index, session in enumerate(sessions):
            started = time.perf_counter()
            session.run(inputs)
            times[index].append(time.perf_counter() - started)
    return times
