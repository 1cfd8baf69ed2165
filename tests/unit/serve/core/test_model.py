"""Where a loaded model runs: inline on the event loop only when its largest batch is cheap;
and the settings derived from its warm-up (spinning, the queue's time bound)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kiln.repository import ModelRepository
from kiln.repository.config import ModelConfig
from kiln.runtime.onnx import OnnxRuntimeBackend
from kiln.serve.core.model import ModelVersion, batching_policy, session_options
from kiln.tensors import DataType
from tests.models import identity_model, mlp_model, save


@pytest.mark.parametrize(("config", "inline"), [
    ("max_batch_size: 4\n", True),
    ("max_batch_size: 4\noptimization: {inline_max_us: 0}\n", False),
    # A 2048-wide MLP at batch 64 takes milliseconds: never on the event loop.
    (None, False),
])
def test_inline_only_below_the_threshold(repo: Path, config: str | None, inline: bool) -> None:
    model = mlp_model((8, 16, 4)) if config else mlp_model((512, 2048, 2048, 10))
    save(model, repo, "m", config=config or "optimization: {intra_op_threads: 1}\n")
    version = ModelVersion.load(ModelRepository([repo]).find("m"), 1,
                                 backend=OnnxRuntimeBackend())
    try:
        assert version.batcher.policy.inline is inline
    finally:
        asyncio.run(version.close())


@pytest.mark.parametrize(("sizes", "spinning"), [
    ((8, 16, 4), False),  # runs on the event loop: no intra-op threads spinning beside it
    ((512, 2048, 2048, 10), True),  # runs on instance threads: ONNX Runtime's default
])
def test_intra_op_threads_spin_unless_the_model_runs_inline(repo: Path, sizes: tuple[int, ...],
                                                             spinning: bool) -> None:
    save(mlp_model(sizes), repo, "m", config="optimization: {intra_op_threads: 2}\n")
    version = ModelVersion.load(ModelRepository([repo]).find("m"), 1,
                                 backend=OnnxRuntimeBackend())
    try:
        assert version.options is not None and version.options.allow_spinning is spinning
        assert version.batcher.policy.inline is not spinning
    finally:
        asyncio.run(version.close())


def test_the_default_queue_time_bound_matches_the_count_bound_at_warm_up_speed(
        repo: Path) -> None:
    save(mlp_model((512, 2048, 2048, 10)), repo, "m",
         config="optimization: {intra_op_threads: 1}\nmax_batch_size: 8\n")
    version = ModelVersion.load(ModelRepository([repo]).find("m"), 1,
                                 backend=OnnxRuntimeBackend())
    try:
        policy = version.batcher.policy
        assert policy.run_times is not None and policy.max_queue_size == 64
        at_warm_up_speed = (8 * policy.run_times.fixed_ns + 64 * policy.run_times.row_ns) / 1e3
        assert policy.max_queue_wait_us == max(round(at_warm_up_speed), 50_000)
    finally:
        asyncio.run(version.close())
    save(mlp_model((8, 16, 4)), repo, "n",
         config="max_batch_size: 8\ndynamic_batching: {max_queue_wait_us: 0}\n")
    version = ModelVersion.load(ModelRepository([repo]).find("n"), 1,
                                 backend=OnnxRuntimeBackend())
    try:
        assert version.batcher.policy.max_queue_wait_us == 0  # explicitly off
    finally:
        asyncio.run(version.close())


def test_no_timing_decisions_from_made_up_sizes(repo: Path) -> None:
    """An input with a dynamic non-batch dimension is warmed up at size 1, which says nothing
    of real requests: the model neither runs inline nor gets a default time bound."""
    save(identity_model([DataType.FP32], dynamic_width=True), repo, "m",
         config="max_batch_size: 8\n")
    version = ModelVersion.load(ModelRepository([repo]).find("m"), 1,
                                 backend=OnnxRuntimeBackend())
    try:
        policy = version.batcher.policy
        assert policy.run_times is None and not policy.inline
        assert policy.max_queue_wait_us == 0 and policy.max_queue_size == 64
    finally:
        asyncio.run(version.close())


def test_a_model_computed_on_a_gpu_never_runs_inline(repo: Path) -> None:
    """A GPU run mostly waits for the device: the event loop should go on meanwhile."""
    save(mlp_model((8, 16, 4)), repo, "m", config="max_batch_size: 4\n")
    version = ModelVersion.load(ModelRepository([repo]).find("m"), 1,
                                 backend=OnnxRuntimeBackend())
    try:
        times = version.batcher.policy.run_times
        assert version.batcher.policy.inline  # on the CPU: inline
        assert not batching_policy(version.config, version.signature, times,
                                   on_cpu=False).inline
    finally:
        asyncio.run(version.close())


@pytest.mark.parametrize(("config", "spinning"), [
    ({}, True),
    ({"instances": {"kind": "gpu"}}, False),
    ({"optimization": {"execution_providers": ["CUDAExecutionProvider"]}}, False),
    ({"instances": {"kind": "gpu"}, "optimization": {"allow_spinning": True}}, True),
])
def test_threads_of_gpu_models_do_not_spin(config: dict[str, object], spinning: bool) -> None:
    assert session_options(ModelConfig.model_validate(config)).allow_spinning is spinning
