"""The dynamic batcher on a real event loop and thread pool, with the echo test double."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from kiln.errors import InternalError, Overloaded, Unavailable
from kiln.runtime.testing import EchoSession
from kiln.serve.core.batching import BatchingPolicy, DynamicBatcher, RunTimes
from kiln.tensors import DataType, TensorSpec

SPEC = [TensorSpec("x", DataType.FP32, (-1, -1))]


def _batcher(session: EchoSession,
             **policy: object) -> tuple[DynamicBatcher, ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(int(policy.get("instances", 1)))  # type: ignore[call-overload]
    values = {"max_batch_size": 8, **policy}
    return DynamicBatcher("m", session.run, executor,
                          BatchingPolicy(**values)), executor  # type: ignore[arg-type]


def _rows(start: int, n: int, width: int = 2) -> np.ndarray:
    return np.arange(start, start + n * width, dtype=np.float32).reshape(n, width)


async def _gather(batcher: DynamicBatcher, arrays: list[np.ndarray]) -> list[np.ndarray]:
    results = await asyncio.gather(*(batcher.submit({"x": a}, rows=len(a)) for a in arrays))
    return [r["x_out"] for r in results]


def test_requests_merge_and_each_gets_its_own_rows() -> None:
    session = EchoSession(SPEC)
    batcher, _ = _batcher(session, max_queue_delay_us=50_000)
    arrays = [_rows(100 * i, 1 + i % 3) for i in range(12)]
    outputs = asyncio.run(_gather(batcher, arrays))
    for sent, got in zip(arrays, outputs, strict=True):
        assert np.array_equal(sent, got)
    assert max(session.batch_sizes) > 1 and all(b <= 8 for b in session.batch_sizes)
    assert sum(session.batch_sizes) == sum(len(a) for a in arrays)
    assert batcher.stats.execution_count == len(session.batch_sizes) < len(arrays)
    assert batcher.stats.inference_count == sum(len(a) for a in arrays)


def test_different_shapes_never_share_a_batch() -> None:
    session = EchoSession(SPEC)
    batcher, _ = _batcher(session, max_queue_delay_us=20_000)
    arrays = [_rows(10 * i, 1, width=2 + i % 2) for i in range(10)]
    outputs = asyncio.run(_gather(batcher, arrays))
    for sent, got in zip(arrays, outputs, strict=True):
        assert np.array_equal(sent, got)
    assert sorted(session.batch_sizes) == [5, 5]


def test_preferred_size_sends_without_waiting() -> None:
    session = EchoSession(SPEC)
    batcher, _ = _batcher(session, max_queue_delay_us=5_000_000, preferred_batch_sizes=(4,))

    async def run() -> list[np.ndarray]:
        return await asyncio.wait_for(_gather(batcher, [_rows(i, 1) for i in range(4)]), 2)

    asyncio.run(run())
    assert session.batch_sizes == [4]


def test_full_queue_refuses_at_once() -> None:
    session = EchoSession(SPEC)
    batcher, _ = _batcher(session, max_queue_delay_us=5_000_000, max_queue_size=2)

    async def run() -> None:
        waiting = [asyncio.ensure_future(batcher.submit({"x": _rows(i, 1)}, rows=1))
                   for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="full") as info:
            await asyncio.wait_for(batcher.submit({"x": _rows(9, 1)}, rows=1), 0.5)
        assert info.value.retry_after_s is not None
        batcher.close()
        for task in waiting:
            with pytest.raises(Unavailable):
                await task

    asyncio.run(run())
    assert batcher.stats.rejected_full == 1


def test_a_queue_that_would_take_too_long_refuses_at_once() -> None:
    """1 ms per execution + 1 ms per row, 10 ms allowed: with k two-row requests waiting
    (never a full batch of 100), the next one would wait 1 + 2k ms."""
    session = EchoSession(SPEC)
    batcher, _ = _batcher(session, max_batch_size=100, max_queue_delay_us=5_000_000,
                          max_queue_wait_us=10_000, run_times=RunTimes(1e6, 1e6))

    async def run() -> None:
        waiting = []
        for i in range(5):  # 0, 3, 5, 7, 9 ms ahead of each: let in
            waiting.append(asyncio.ensure_future(batcher.submit({"x": _rows(i, 2)}, rows=2)))
            await asyncio.sleep(0)
        assert batcher.expected_wait_ns() == 11e6
        with pytest.raises(Overloaded, match=r"10 rows waiting would take about 11 ms.*"
                                             r"10 ms \(max_queue_wait_us\)") as info:
            await batcher.submit({"x": _rows(9, 2)}, rows=2)
        assert info.value.retry_after_s is not None
        batcher.close()
        await asyncio.gather(*waiting, return_exceptions=True)

    asyncio.run(run())
    assert batcher.stats.rejected_full == 1 and session.batch_sizes == []


def test_a_model_running_slower_than_at_warm_up_lets_fewer_requests_wait() -> None:
    """Warm-up said 1 ms per row; the model takes 30 ms: after one execution the same queue
    is expected to take several times longer, and the bound refuses sooner."""
    session = EchoSession(SPEC, delay_s=0.03)
    batcher, _ = _batcher(session, max_batch_size=1, max_queue_wait_us=20_000,
                          run_times=RunTimes(0.0, 1e6))

    async def run() -> None:
        first = asyncio.ensure_future(batcher.submit({"x": _rows(0, 1)}, rows=1))
        await asyncio.sleep(0.005)  # running now
        queued = [asyncio.ensure_future(batcher.submit({"x": _rows(i, 1)}, rows=1))
                  for i in (1, 2, 3)]
        await asyncio.sleep(0)
        before = batcher.expected_wait_ns()
        assert before == 3e6  # nothing measured yet: warm-up speed
        await first  # 30 ms against 1 ms expected: the model is slower now
        assert batcher.expected_wait_ns() > 5 * before * 2 / 3  # 2 rows wait now, not 3
        with pytest.raises(Overloaded, match="max_queue_wait_us"):
            for i in range(4, 8):
                queued.append(asyncio.ensure_future(
                    batcher.submit({"x": _rows(i, 1)}, rows=1)))
                await asyncio.sleep(0)
                if queued[-1].done():
                    queued[-1].result()
        batcher.close()
        await asyncio.gather(*queued, return_exceptions=True)

    asyncio.run(run())
    assert batcher.stats.rejected_full == 1


def test_timeout_frees_the_slot() -> None:
    session = EchoSession(SPEC)
    batcher, _ = _batcher(session, max_queue_delay_us=5_000_000, max_queue_size=1)

    async def run() -> None:
        with pytest.raises(Unavailable, match="timeout of 1000 us"):
            await batcher.submit({"x": _rows(0, 1)}, rows=1, timeout_us=1000)
        assert batcher.queue_depth == 0
        later = asyncio.ensure_future(batcher.submit({"x": _rows(1, 1)}, rows=1))
        await asyncio.sleep(0.01)
        assert batcher.queue_depth == 1
        batcher.close()
        with pytest.raises(Unavailable):
            await later

    asyncio.run(run())
    assert batcher.stats.timed_out == 1


def test_a_failing_batch_fails_only_its_requests() -> None:
    session = EchoSession(SPEC, fail_on_negative=True, delay_s=0.05)
    batcher, _ = _batcher(session)

    async def run() -> list[object]:
        first = asyncio.ensure_future(batcher.submit({"x": _rows(0, 1)}, rows=1))
        await asyncio.sleep(0.01)  # the first runs alone; the next three queue behind it
        bad = [batcher.submit({"x": -_rows(1, 1)}, rows=1),
               batcher.submit({"x": _rows(5, 1)}, rows=1)]
        failed = await asyncio.gather(*bad, return_exceptions=True)
        after = await batcher.submit({"x": _rows(7, 1)}, rows=1)
        return [await first, *failed, after]

    first, bad, neighbour, after = asyncio.run(run())
    assert isinstance(bad, InternalError) and "negative input" in bad.message
    assert isinstance(neighbour, InternalError)  # same batch as the bad one
    assert np.array_equal(first["x_out"], _rows(0, 1))  # type: ignore[index]
    assert np.array_equal(after["x_out"], _rows(7, 1))  # type: ignore[index]


def test_wrong_row_count_names_both_numbers() -> None:
    batcher, _ = _batcher(EchoSession(SPEC, drop_row=True))
    with pytest.raises(InternalError, match="returned 2 rows of output 'x_out' for a batch of 3"):
        asyncio.run(batcher.submit({"x": _rows(0, 3)}, rows=3))


def test_higher_priority_runs_first() -> None:
    session = EchoSession(SPEC, delay_s=0.05)
    batcher, _ = _batcher(session, max_batch_size=1, priority_levels=2)
    order: list[str] = []

    async def tagged(tag: str, priority: int) -> None:
        await batcher.submit({"x": _rows(0, 1)}, rows=1, priority=priority)
        order.append(tag)

    async def run() -> None:
        blocker = asyncio.ensure_future(tagged("blocker", 1))
        await asyncio.sleep(0.01)
        await asyncio.gather(tagged("low", 2), tagged("high", 1))
        await blocker

    asyncio.run(run())
    assert order == ["blocker", "high", "low"]


def test_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="preferred"):
        BatchingPolicy(max_batch_size=4, preferred_batch_sizes=(8,))
    with pytest.raises(ValueError, match="max_queue_size"):
        BatchingPolicy(max_batch_size=4, max_queue_size=0)
