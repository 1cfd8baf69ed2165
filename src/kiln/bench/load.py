"""Load generation: closed loop (N callers, each sending as soon as its last answer came back)
and open loop (requests sent on a schedule, answered or not).

Each point warms up for ``warmup_s``, then measures for ``duration_s`` or ``requests``
requests. Only requests *sent* inside the measurement window count, and every one of them is
waited for, so ``sent == ok + errors``; throughput is ``ok`` over the time from the window's
start to the last answer. Open-loop latency is timed from when a request was *due*, so a late
generator or a queueing server shows up in the latency instead of hiding (no coordinated
omission).

Remote targets run on one asyncio event loop (one keep-alive connection per caller); in-process
targets are called from one thread per caller, since ONNX Runtime releases the GIL.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kiln.bench.results import LoadPoint
from kiln.bench.stats import CpuMeter, CpuUse, Recorder, latency_histogram, latency_stats
from kiln.bench.targets import BlockingTarget, Target


class Progress(Protocol):
    """Told how far a point has got; ``kiln.bench.report.RichProgress`` draws a bar."""

    def begin(self, label: str) -> None: ...
    def update(self, fraction: float) -> None: ...
    def end(self) -> None: ...


class NoProgress:
    def begin(self, label: str) -> None:
        pass

    def update(self, fraction: float) -> None:
        pass

    def end(self) -> None:
        pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """How long each point runs and what it may use."""

    duration_s: float = 5.0
    #: Measure this many requests instead of ``duration_s`` seconds.
    requests: int | None = None
    warmup_s: float = 1.0
    batch_size: int = 1
    #: Open loop: most requests waiting for an answer; later ones are dropped (and counted).
    max_outstanding: int = 1024
    #: Open loop: "constant" intervals or "poisson" arrivals.
    distribution: str = "constant"
    seed: int = 0
    #: A server process on this machine whose CPU use is reported next to the client's.
    server_pid: int | None = None


class _Window:
    """Decides, request by request, whether it is warm-up, measured, or past the end."""

    WARMUP, MEASURE, STOP = 0, 1, 2

    def __init__(self, plan: Plan, requests: Sequence[Any]) -> None:
        self.plan, self._requests = plan, requests
        self._tickets = itertools.count()
        self.start = time.perf_counter() + plan.warmup_s
        self.end = self.start + (plan.duration_s if plan.requests is None else float("inf"))
        self.admitted = 0
        self._lock = threading.Lock()

    def admit(self, now: float) -> int:
        if now < self.start:
            return self.WARMUP
        with self._lock:
            if now >= self.end or (self.plan.requests is not None
                                   and self.admitted >= self.plan.requests):
                return self.STOP
            self.admitted += 1
            return self.MEASURE

    def next(self) -> tuple[Any, float, int]:
        """The next request in turn, when it starts, and whether it is measured."""
        request = self._requests[next(self._tickets) % len(self._requests)]
        started = time.perf_counter()
        return request, started, self.admit(started)

    def fraction(self, now: float) -> float:
        if self.plan.requests is not None:
            return self.admitted / self.plan.requests
        total = self.end - self.start + self.plan.warmup_s
        return min(1.0, (now - self.start + self.plan.warmup_s) / total)


async def closed_loop(target: Target, requests: Sequence[Any], concurrency: int, plan: Plan,
                      progress: Progress | None = None) -> LoadPoint:
    """``concurrency`` callers, each sending its next request when the last one is answered."""
    if isinstance(target, BlockingTarget):
        return await asyncio.to_thread(_threaded_closed_loop, target, requests, concurrency,
                                       plan, progress or NoProgress())
    window, rec, meter = _Window(plan, requests), Recorder(), CpuMeter(plan.server_pid)
    call = target.call

    async def caller() -> None:
        while True:
            request, started, state = window.next()
            if state == _Window.STOP:
                return
            failure: Exception | None = None
            try:
                await call(request)
            except Exception as exc:
                failure = exc
            if state == _Window.MEASURE:
                rec.record(started, time.perf_counter(), failure)

    callers = [asyncio.create_task(caller()) for _ in range(concurrency)]
    await _watch(window, meter, progress or NoProgress(), asyncio.gather(*callers))
    use = meter.stop(requests=window.admitted, loop_thread=True)
    return _point("closed", concurrency, None, plan, window, rec, use)


def _threaded_closed_loop(target: BlockingTarget, requests: Sequence[Any], concurrency: int,
                          plan: Plan, progress: Progress) -> LoadPoint:
    window, rec, meter = _Window(plan, requests), Recorder(), CpuMeter(plan.server_pid)
    call = target.call_blocking

    def caller() -> None:
        while True:
            request, started, state = window.next()
            if state == _Window.STOP:
                return
            failure: Exception | None = None
            try:
                call(request)
            except Exception as exc:
                failure = exc
            if state == _Window.MEASURE:
                rec.record(started, time.perf_counter(), failure)

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    _watch_threads(window, meter, progress, threads)
    use = meter.stop(requests=window.admitted, loop_thread=False)
    return _point("closed", concurrency, None, plan, window, rec, use)


async def open_loop(target: Target, requests: Sequence[Any], rate: float, plan: Plan,
                    progress: Progress | None = None) -> LoadPoint:
    """Requests sent at ``rate`` per second whatever the answers do; latency counts from the
    moment each request was due."""
    window, rec, meter = _Window(plan, requests), Recorder(), CpuMeter(plan.server_pid)
    sender = _OpenLoopSender(target, requests, rec, plan.max_outstanding)
    await _watch(window, meter, progress or NoProgress(), sender.run(window, _gaps(rate, plan)))
    use = meter.stop(requests=window.admitted, loop_thread=True)
    lag = float(np.percentile(sender.lags, 99) * 1e3) if sender.lags else None
    return _point("open", sender.most, rate, plan, window, rec, use, dropped=sender.dropped,
                  send_lag_p99_ms=lag)


class _OpenLoopSender:
    """Sends each request when it is due, as its own task, unless too many are waiting."""

    def __init__(self, target: Target, requests: Sequence[Any], rec: Recorder,
                 max_outstanding: int) -> None:
        self.target, self.requests, self.rec = target, requests, rec
        self.max_outstanding = max_outstanding
        self.pending: set[asyncio.Task[None]] = set()
        self.lags: list[float] = []
        self.dropped = self.most = 0

    async def run(self, window: _Window, gaps: Iterator[float]) -> None:
        due = time.perf_counter()
        for ticket in itertools.count():
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            state = window.admit(due)
            if state == _Window.STOP:
                break
            self._send(self.requests[ticket % len(self.requests)], due,
                       state == _Window.MEASURE)
            due += next(gaps)
        await asyncio.gather(*self.pending)

    def _send(self, request: Any, due: float, measured: bool) -> None:
        if len(self.pending) >= self.max_outstanding:
            self.dropped += measured
            return
        now = time.perf_counter()
        # NOTE: timers may fire a little early; a request is timed from when it was due, or
        # from when it left if that was earlier, so latency stays positive.
        task = asyncio.create_task(self._one(request, min(due, now), measured))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        self.most = max(self.most, len(self.pending))
        if measured:
            self.lags.append(max(0.0, now - due))

    async def _one(self, request: Any, start: float, measured: bool) -> None:
        failure: Exception | None = None
        try:
            await self.target.call(request)
        except Exception as exc:
            failure = exc
        if measured:
            self.rec.record(start, time.perf_counter(), failure)


def _gaps(rate: float, plan: Plan) -> Iterator[float]:
    if plan.distribution == "poisson":
        rng = np.random.default_rng(plan.seed)
        return iter(lambda: float(rng.exponential(1.0 / rate)), None)
    return itertools.repeat(1.0 / rate)


async def _watch(window: _Window, meter: CpuMeter, progress: Progress, work: Any) -> None:
    """Runs ``work`` while starting the CPU meter at the window's start and drawing progress."""
    task = asyncio.ensure_future(work)
    started = False
    while not task.done():
        now = time.perf_counter()
        if not started and now >= window.start:
            meter.start()
            started = True
        progress.update(window.fraction(now))
        timeout = 0.1 if started else min(0.1, max(window.start - now, 0.001))
        await asyncio.wait([task], timeout=timeout)
    if not started:
        meter.start()
    progress.update(1.0)
    await task


def _watch_threads(window: _Window, meter: CpuMeter, progress: Progress,
                   threads: list[threading.Thread]) -> None:
    time.sleep(max(0.0, window.start - time.perf_counter()))
    meter.start()
    for thread in threads:
        while thread.is_alive():
            progress.update(window.fraction(time.perf_counter()))
            thread.join(timeout=0.1)
    progress.update(1.0)


def _point(mode: str, concurrency: int, rate: float | None, plan: Plan, window: _Window,
           rec: Recorder, use: CpuUse, *, dropped: int = 0,
           send_lag_p99_ms: float | None = None) -> LoadPoint:
    latencies = np.asarray(rec.latencies)
    duration = max(rec.last_end - window.start, 1e-9)
    ok = len(rec.latencies)
    return LoadPoint(
        mode=mode, concurrency=concurrency, rate=rate, batch_size=plan.batch_size,
        duration_s=duration, sent=window.admitted - dropped, ok=ok, errors=dict(rec.errors),
        dropped=dropped, requests_per_s=ok / duration,
        inferences_per_s=ok * plan.batch_size / duration,
        latency_ms=latency_stats(latencies), histogram=latency_histogram(latencies),
        client=use.client, server_cores=use.server_cores, machine_cores=use.machine_cores,
        send_lag_p99_ms=send_lag_p99_ms,
        first_error=rec.first_error,
    )

