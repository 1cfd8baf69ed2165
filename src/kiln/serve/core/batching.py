"""Per-model dynamic batching on decoded tensors.

Requests wait in bounded priority queues; whenever a model instance is free, the batcher
takes the oldest request of the best priority and adds the requests behind it that have
the same non-batch shapes (and ask for the same outputs), up to ``max_batch_size`` samples.
It sends a batch at once when it reaches ``max_batch_size`` or a preferred size, and
otherwise when the first request has waited ``max_queue_delay_us``. Outputs are split back
by rows; a model that returns a different number of rows fails that batch only.

The queue is bounded twice: by a number of requests (``max_queue_size``) and by time
(``max_queue_wait_us``): a request is refused at once when the rows already waiting would
take longer than that to run, by the model's warm-up run times scaled by how much slower (or
faster) its recent batches ran. When the model slows down, say because refusing an overload
takes CPU, fewer requests are let in, so that the admitted ones do not wait longer.

Everything runs on the event loop thread except the model itself, which runs on a thread
pool of ``instances`` threads. Dispatch is event-driven (on arrival, on completion, on a
delay timer), so an idle batcher costs nothing and a lone request is not delayed.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from kiln.errors import InternalError, InvalidArgument, KilnError, Overloaded, Unavailable
from kiln.serve.core.statistics import ModelStats, Timing
from kiln.tensors import TensorDict

RunFn = Callable[[TensorDict, Sequence[str] | None], TensorDict]


@dataclass(frozen=True, slots=True)
class RunTimes:
    """How long one execution of ``rows`` rows takes: ``fixed_ns + rows * row_ns``."""

    fixed_ns: float
    row_ns: float

    def batch_ns(self, rows: int) -> float:
        return self.fixed_ns + rows * self.row_ns


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchingPolicy:
    """How one model's requests are queued and merged. Validated on construction."""

    #: Samples per execution; 0 or 1 = each request runs alone.
    max_batch_size: int
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    #: Requests that may wait at once (beyond it: refused at once with 503).
    max_queue_size: int = 1024
    #: Refuse a request when the rows waiting would take longer than this to run (0 = no
    #: bound; needs ``run_times``).
    max_queue_wait_us: int = 0
    #: The model's run times measured at warm-up (None: unknown).
    run_times: RunTimes | None = None
    #: Queue time after which a request is refused; 0 = no limit.
    default_timeout_us: int = 0
    #: Priority levels (1 = served first); 0 or 1 = a single queue.
    priority_levels: int = 0
    default_priority_level: int = 0
    #: Concurrent executions of the model.
    instances: int = 1
    #: Run the model on the event loop thread instead of the pool: for models so fast that
    #: a thread hop costs more than they do.
    inline: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 0 or self.max_queue_delay_us < 0 or self.instances < 1:
            raise ValueError("max_batch_size and max_queue_delay_us must be >= 0, instances >= 1")
        if self.max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        bad = [p for p in self.preferred_batch_sizes if not 1 <= p <= max(self.max_batch_size, 1)]
        if bad:
            raise ValueError(f"preferred batch sizes {bad} are outside 1..{self.max_batch_size}")


@dataclass(slots=True, eq=False)
class _Pending:
    inputs: TensorDict
    rows: int
    key: tuple[object, ...]
    outputs: tuple[str, ...] | None
    future: asyncio.Future[TensorDict]
    enqueued_ns: int
    timer: asyncio.TimerHandle | None = None
    timing: Timing | None = None


class DynamicBatcher:
    """Queues requests for one model version and runs them, merged, on ``run``.

        batcher = DynamicBatcher("digits", session.run, executor, BatchingPolicy(max_batch_size=32))
        outputs = await batcher.submit({"pixels": x}, rows=len(x))
    """

    def __init__(self, name: str, run: RunFn, executor: Executor, policy: BatchingPolicy, *,
                 stats: ModelStats | None = None) -> None:
        self.name = name
        self.policy = policy
        self.stats = stats if stats is not None else ModelStats()
        self._run = run
        self._executor = executor
        levels = max(policy.priority_levels, 1)
        self._queues: list[collections.deque[_Pending]] = [collections.deque()
                                                           for _ in range(levels)]
        self._queued = 0
        self._queued_rows = 0
        #: Recent executions' time over the warm-up time for their rows (moving average).
        self._slowdown = 1.0
        self._wait_limit_ns = (policy.max_queue_wait_us * 1000
                               if policy.run_times is not None else 0)
        self._free = policy.instances
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False
        self._batching = policy.max_batch_size > 1
        self._preferred = frozenset(policy.preferred_batch_sizes)

    @property
    def queue_depth(self) -> int:
        return self._queued

    @property
    def busy(self) -> int:
        return self.policy.instances - self._free

    async def submit(self, inputs: TensorDict, *, rows: int,
                     outputs: Sequence[str] | None = None, priority: int = 0,
                     timeout_us: int | None = None, timing: Timing | None = None) -> TensorDict:
        """Queue one request of ``rows`` samples; returns its own rows of the outputs.
        ``timing``, when given, receives when the request was queued, started and finished."""
        self.check_room()
        loop = asyncio.get_running_loop()
        pending = _Pending(inputs, rows, _key(inputs, outputs) if self._batching else (),
                           tuple(outputs) if outputs is not None else None,
                           loop.create_future(), time.monotonic_ns(), timing=timing)
        timeout = timeout_us if timeout_us else self.policy.default_timeout_us
        if timeout:
            pending.timer = loop.call_later(timeout / 1e6, self._expire, pending, timeout)
        self._queues[self._level(priority)].append(pending)
        self._queued += 1
        self._queued_rows += rows
        if not self._soon:
            # Dispatch after the requests that arrived in this loop iteration have queued too,
            # so that a burst forms one batch.
            self._soon = True
            loop.call_soon(self._dispatch_soon)
        return await pending.future

    def check_room(self) -> None:
        """Raises ``Overloaded`` when the queue is full, by count or by expected wait."""
        if self._queued >= self.policy.max_queue_size:
            self.stats.rejected_full += 1
            raise Overloaded(
                f"the queue of model '{self.name}' is full ({self.policy.max_queue_size} "
                "requests waiting); retry later", retry_after_s=1)
        if self._wait_limit_ns and self._queued_rows and \
                (wait_ns := self.expected_wait_ns()) > self._wait_limit_ns:
            self.stats.rejected_full += 1
            raise Overloaded(
                f"the queue of model '{self.name}' is full: the {self._queued_rows} rows waiting "
                f"would take about {wait_ns / 1e6:.0f} ms to run, past its "
                f"{self.policy.max_queue_wait_us / 1e3:g} ms (max_queue_wait_us); retry later",
                retry_after_s=1)

    def expected_wait_ns(self) -> float:
        """How long the rows waiting now would take to run, in full batches, at the model's
        recent speed (0 when its run times are unknown)."""
        times = self.policy.run_times
        if times is None:
            return 0.0
        batch = max(self.policy.max_batch_size, 1)
        batches = -(-self._queued_rows // batch)
        return (self._slowdown * (batches * times.fixed_ns + self._queued_rows * times.row_ns)
                / self.policy.instances)

    def _level(self, priority: int) -> int:
        levels = len(self._queues)
        if levels == 1:
            return 0
        if priority == 0:
            priority = self.policy.default_priority_level or (levels + 1) // 2
        if not 1 <= priority <= levels:
            raise InvalidArgument(
                f"priority {priority} is outside model '{self.name}''s levels 1..{levels}"
            )
        return priority - 1

    def _expire(self, pending: _Pending, timeout_us: int) -> None:
        if pending.future.done():
            return
        for queue in self._queues:
            try:
                queue.remove(pending)
            except ValueError:
                continue
            self._queued -= 1
            self._queued_rows -= pending.rows
            self.stats.timed_out += 1
            pending.future.set_exception(Unavailable(
                f"request waited longer than its timeout of {timeout_us} us in the queue of "
                f"model '{self.name}'"))
            return

    def _dispatch_soon(self) -> None:
        self._soon = False
        self._dispatch()

    def _dispatch(self) -> None:
        """Start as many batches as there are free instances and ready requests."""
        while self._free and self._queued:
            batch = self._form_batch()
            if batch is None:
                return
            self._start(batch)

    def _form_batch(self) -> list[_Pending] | None:
        queue = next(q for q in self._queues if q)
        first = queue[0]
        if not self._batching:
            queue.popleft()
            self._queued -= 1
            self._queued_rows -= first.rows
            return [first]
        chosen, total = self._candidates(first)
        full = total >= self.policy.max_batch_size
        preferred = [i for i, n in enumerate(itertools.accumulate(p.rows for p in chosen))
                     if n in self._preferred]
        waited_us = (time.monotonic_ns() - first.enqueued_ns) / 1e3
        if not full and not preferred and waited_us < self.policy.max_queue_delay_us:
            self._arm_timer(self.policy.max_queue_delay_us - waited_us)
            return None
        if preferred and not full:
            chosen = chosen[:preferred[-1] + 1]
        for pending in chosen:
            for q in self._queues:
                if q and q[0] is pending:
                    q.popleft()
                    break
            else:
                _remove(self._queues, pending)
        self._queued -= len(chosen)
        self._queued_rows -= sum(p.rows for p in chosen)
        return chosen

    def _candidates(self, first: _Pending) -> tuple[list[_Pending], int]:
        chosen: list[_Pending] = []
        total = 0
        for queue in self._queues:
            for pending in queue:
                if pending.key != first.key:
                    continue
                if total + pending.rows > self.policy.max_batch_size and chosen:
                    return chosen, total
                chosen.append(pending)
                total += pending.rows
        return chosen, total

    def _arm_timer(self, delay_us: float) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(delay_us, 0) / 1e6, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _start(self, batch: list[_Pending]) -> None:
        self._free -= 1
        for pending in batch:
            if pending.timer is not None:
                pending.timer.cancel()
        live = [p for p in batch if not p.future.done()]
        if not live:
            self._finish()
            return
        started = time.monotonic_ns()
        for pending in live:
            self.stats.record_queue(started - pending.enqueued_ns)
            if pending.timing is not None:
                pending.timing.enqueued, pending.timing.started = pending.enqueued_ns, started
        inputs = live[0].inputs if len(live) == 1 else _concat([p.inputs for p in live])
        input_ns = time.monotonic_ns() - started
        loop = asyncio.get_running_loop()
        if self.policy.inline:
            job: asyncio.Future[tuple[TensorDict, int]] = loop.create_future()
            try:
                job.set_result(_timed(self._run, inputs, live[0].outputs))
            except Exception as exc:
                job.set_exception(exc)
            self._complete(live, job, input_ns, redispatch=False)
            return
        job = loop.run_in_executor(self._executor, _timed, self._run, inputs, live[0].outputs)
        job.add_done_callback(lambda done: self._complete(live, done, input_ns))

    def _complete(self, batch: list[_Pending], done: asyncio.Future[tuple[TensorDict, int]],
                  input_ns: int, *, redispatch: bool = True) -> None:
        rows = sum(p.rows for p in batch)
        try:
            outputs, infer_ns = done.result()
            split_start = time.monotonic_ns()
            parts = _split(self.name, outputs, [p.rows for p in batch], self._batching)
        except Exception as exc:
            error = exc if isinstance(exc, KilnError) else InternalError(
                f"model '{self.name}' failed: {type(exc).__name__}: {exc}")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
        else:
            finished = time.monotonic_ns()
            self._observe_speed(rows, infer_ns)
            self.stats.record_execution(rows=rows, requests=len(batch), input_ns=input_ns,
                                        infer_ns=infer_ns, output_ns=finished - split_start)
            for pending, part in zip(batch, parts, strict=True):
                if pending.timing is not None:
                    pending.timing.finished = finished
                if not pending.future.done():
                    pending.future.set_result(part)
        self._finish(redispatch)

    def _observe_speed(self, rows: int, infer_ns: int) -> None:
        if self.policy.run_times is not None:
            ratio = infer_ns / max(self.policy.run_times.batch_ns(rows), 1.0)
            self._slowdown = min(max(self._slowdown + 0.2 * (ratio - self._slowdown), 0.1), 100.0)

    def _finish(self, redispatch: bool = True) -> None:
        self._free += 1
        if redispatch:
            self._dispatch()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for queue in self._queues:
            while queue:
                pending = queue.popleft()
                if not pending.future.done():
                    pending.future.set_exception(
                        Unavailable(f"model '{self.name}' is being unloaded"))
        self._queued = self._queued_rows = 0


def _timed(run: RunFn, inputs: TensorDict,
           outputs: Sequence[str] | None) -> tuple[TensorDict, int]:
    started = time.monotonic_ns()
    result = run(inputs, outputs)
    return result, time.monotonic_ns() - started


def _key(inputs: TensorDict, outputs: Sequence[str] | None) -> tuple[object, ...]:
    """Requests with equal keys can share a batch: same names, dtypes, non-batch shapes."""
    return (tuple((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items()),
            tuple(outputs) if outputs is not None else None)


def _concat(parts: list[TensorDict]) -> TensorDict:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _split(name: str, outputs: TensorDict, rows: list[int],
           batched: bool) -> list[TensorDict]:
    """Each request's own rows of every output; checks the model returned every row."""
    if not batched:
        return [outputs]
    total = sum(rows)
    for output, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            got = array.shape[0] if array.ndim else "no"
            raise InternalError(
                f"model '{name}' returned {got} rows of output '{output}' for a batch of "
                f"{total} rows"
            )
    if len(rows) == 1:
        return [outputs]
    offsets = list(itertools.accumulate(rows))[:-1]
    result: list[TensorDict] = [{} for _ in rows]
    for output, array in outputs.items():
        for part, piece in zip(result, np.split(array, offsets), strict=True):
            part[output] = piece
    return result


def _remove(queues: list[collections.deque[_Pending]], pending: _Pending) -> None:
    for queue in queues:
        try:
            queue.remove(pending)
        except ValueError:
            continue
        return
