"""Warm-up runs made before a model version reports ready, so no real request pays for them."""

from __future__ import annotations

import logging
import time

import numpy as np

from kiln.errors import InternalError
from kiln.runtime import Session
from kiln.serve.repository.config import WarmupConfig
from kiln.tensors import DataType, Signature, TensorDict

log = logging.getLogger("kiln.serve.warmup")


def warm_up(name: str, session: Session, signature: Signature,
            declared: list[WarmupConfig]) -> float | None:
    """Run the declared warm-up requests (failing the load if one fails), or generated
    requests of zeros at batch 1 and at the largest batch (only logged if the model refuses
    them).

    Returns the median run time of a largest-batch generated request in microseconds
    (``None`` when warm-up was declared or failed): the longest one execution takes.
    """
    for warm in declared:
        inputs = warmup_inputs(signature, batch=warm.batch_size, fill=warm.inputs)
        for _ in range(warm.count):
            try:
                session.run(inputs)
            except Exception as exc:
                raise InternalError(f"model '{name}': warm-up '{warm.name}' failed: {exc}") from exc
    if declared:
        return None
    times = []
    try:
        session.run(warmup_inputs(signature, batch=1, fill={}))
        largest = warmup_inputs(signature, batch=max(signature.max_batch_size, 1), fill={})
        for _ in range(5):
            started = time.perf_counter()
            session.run(largest)
            times.append((time.perf_counter() - started) * 1e6)
    except Exception as exc:  # generated zeros may not suit every model
        log.warning("model %s: generated warm-up request failed (%s); declare one in its "
                    "config's 'warmup' to warm it up", name, exc)
        return None
    return sorted(times)[len(times) // 2]


def warmup_inputs(signature: Signature, *, batch: int, fill: dict[str, str]) -> TensorDict:
    """Inputs of the signature's shapes: dynamic dims become 1 (the batch dim ``batch``)."""
    rng = np.random.default_rng(0)
    inputs: TensorDict = {}
    for spec in signature.inputs:
        shape = [1 if d == -1 else d for d in spec.shape]
        if signature.max_batch_size > 0:
            shape[0] = batch
        if spec.datatype is DataType.BYTES:
            inputs[spec.name] = np.full(shape, b"", dtype=object)
        elif fill.get(spec.name) == "random":
            inputs[spec.name] = (rng.random(shape) * 2).astype(spec.datatype.numpy)
        else:
            inputs[spec.name] = np.zeros(shape, dtype=spec.datatype.numpy)
    return inputs
