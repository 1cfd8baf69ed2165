"""Warm-up runs made before a model version reports ready, so no real request pays for them."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np

from kiln.errors import InternalError
from kiln.repository.config import WarmupConfig
from kiln.runtime import Session
from kiln.serve.core.batching import RunTimes
from kiln.tensors import DataType, Signature, TensorDict

log = logging.getLogger("kiln.serve.core.warmup")


def warm_up(name: str, session: Session, signature: Signature,
            declared: list[WarmupConfig]) -> RunTimes | None:
    """Run the declared warm-up requests (failing the load if one fails), or generated
    requests of zeros at batch 1 and at the largest batch (only logged if the model refuses
    them).

    Returns the model's run times fitted to the generated requests' medians; ``None`` when
    warm-up was declared or failed, or when an input has a dynamic dimension besides the
    batch: its generated size (1) says nothing of how long real requests take.
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
    largest = max(signature.max_batch_size, 1)
    try:
        session.run(warmup_inputs(signature, batch=1, fill={}))
        one = _median_ns(session, warmup_inputs(signature, batch=1, fill={}), 3)
        most = _median_ns(session, warmup_inputs(signature, batch=largest, fill={}), 5) \
            if largest > 1 else one
    except Exception as exc:  # generated zeros may not suit every model
        log.warning("model %s: generated warm-up request failed (%s); declare one in its "
                    "config's 'warmup' to warm it up", name, exc)
        return None
    if _made_up_sizes(signature):
        return None
    row_ns = max(most - one, 0.0) / (largest - 1) if largest > 1 else one
    return RunTimes(fixed_ns=max(one - row_ns, 0.0) if largest > 1 else 0.0, row_ns=row_ns)


def _made_up_sizes(signature: Signature) -> bool:
    skip = 1 if signature.max_batch_size > 0 else 0
    return any(d == -1 for spec in signature.inputs for d in spec.shape[skip:])


def _median_ns(session: Session, inputs: TensorDict, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        session.run(inputs)
        times.append(time.perf_counter_ns() - started)
    return float(sorted(times)[runs // 2])


def warmup_inputs(signature: Signature, *, batch: int,
                  fill: Mapping[str, str]) -> TensorDict:
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
