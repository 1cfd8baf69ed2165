"""A target's outputs on a whole dataset, gathered for the accuracy and agreement figures of
``kiln.data.metrics``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from kiln.bench.targets import Target, infer
from kiln.tensors import TensorDict


async def collect(target: Target, requests: Sequence[TensorDict], *,
                  concurrency: int = 4) -> TensorDict:
    """Every request through ``target``; each output's rows concatenated in request order."""
    replies: list[TensorDict] = []
    for start in range(0, len(requests), concurrency):
        chunk = requests[start:start + concurrency]
        replies += await asyncio.gather(*(infer(target, r) for r in chunk))
    if not replies:
        return {}
    return {name: np.concatenate([_rows(r[name]) for r in replies])
            for name in replies[0]}


def _rows(array: np.ndarray) -> np.ndarray:
    return array.reshape(1) if array.ndim == 0 else array
