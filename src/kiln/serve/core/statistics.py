"""Per model-version statistics, in the shape of Triton's statistics extension.

Counters only: updated on the event loop thread by the batcher and the data plane, read
by the statistics endpoints and, at scrape time, by the Prometheus exporter
(``kiln.serve.observability.metrics``). Histograms are plain bucket counts (one ``bisect`` per
observation) that exist only when metrics are on, so a server without metrics pays nothing
for them.
"""

from __future__ import annotations

import collections
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

_MS = 1_000_000
#: Upper bounds (``le``) of the duration histograms, in nanoseconds: 50 us .. 10 s.
DURATION_BOUNDS_NS: tuple[int, ...] = (
    _MS // 20, _MS // 10, _MS // 4, _MS // 2, _MS, 5 * _MS // 2, 5 * _MS, 10 * _MS, 25 * _MS,
    50 * _MS, 100 * _MS, 250 * _MS, 500 * _MS, 1000 * _MS, 2500 * _MS, 5000 * _MS, 10000 * _MS,
)
#: Upper bounds of the batch-size histogram, in samples.
BATCH_BOUNDS: tuple[int, ...] = tuple(2 ** i for i in range(13))


@dataclass(slots=True)
class Duration:
    """How many times something happened and how long it took in all, in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


class Histogram:
    """Observations counted into fixed buckets; Prometheus' cumulative form is made on read.

        h = Histogram((1, 2, 4))
        h.observe(3)
        h.cumulative()  # [(1, 0), (2, 0), (4, 1), (inf, 1)]
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[int, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0

    def observe(self, value: int) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` per bucket, ending with ``+inf``."""
        bounds = (*self.bounds, float("inf"))
        total, result = 0, []
        for bound, count in zip(bounds, self.counts, strict=True):
            total += count
            result.append((bound, total))
        return result


@dataclass(slots=True)
class Histograms:
    """Distributions kept for Prometheus (absent when metrics are off)."""

    #: Total time of successful requests, ns.
    request: Histogram = field(default_factory=lambda: Histogram(DURATION_BOUNDS_NS))
    #: Time each request waited in the queue, ns.
    queue: Histogram = field(default_factory=lambda: Histogram(DURATION_BOUNDS_NS))
    #: Time each model execution took, ns.
    compute: Histogram = field(default_factory=lambda: Histogram(DURATION_BOUNDS_NS))
    #: Samples per model execution.
    batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_BOUNDS))


@dataclass(slots=True)
class BatchSizeStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class Timing:
    """When one request was decoded, queued, started and finished executing (monotonic ns);
    filled in by the data plane and the batcher for requests that are logged or traced."""

    decoded: int = 0
    enqueued: int = 0
    started: int = 0
    finished: int = 0


@dataclass(slots=True)
class ModelStats:
    """Triton's per-version statistics: requests (success/fail/queue) and executions."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    #: Per request (Triton): a request merged into a batch adds the whole batch's duration.
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    #: Samples inferred (a batch-8 request adds 8).
    inference_count: int = 0
    #: Model executions (requests merged by the batcher count once).
    execution_count: int = 0
    #: Milliseconds since the epoch of the last completed inference (0 = never).
    last_inference_ms: int = 0
    batches: dict[int, BatchSizeStats] = field(
        default_factory=lambda: collections.defaultdict(BatchSizeStats))
    #: Failed requests by reason (an ``ErrorKind`` value).
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Requests refused because the queue was full / timed out in the queue.
    rejected_full: int = 0
    timed_out: int = 0
    histograms: Histograms | None = None

    @classmethod
    def create(cls, *, histograms: bool) -> ModelStats:
        """Statistics with (for metrics) or without the Prometheus histograms."""
        return cls(histograms=Histograms() if histograms else None)

    # NOTE: record_success and record_queue run once per request; they are written out
    # (no nested calls) because every 100 ns shows on a tiny model's throughput.
    def record_success(self, ns: int) -> None:
        total = self.success
        total.count += 1
        total.ns += ns
        if self.histograms is not None:
            h = self.histograms.request
            h.counts[bisect_left(h.bounds, ns)] += 1
            h.sum += ns

    def record_failure(self, ns: int, reason: str) -> None:
        self.fail.add(ns)
        self.failures[reason] += 1

    def record_queue(self, ns: int) -> None:
        total = self.queue
        total.count += 1
        total.ns += ns
        if self.histograms is not None:
            h = self.histograms.queue
            h.counts[bisect_left(h.bounds, ns)] += 1
            h.sum += ns

    def record_execution(self, *, rows: int, requests: int, input_ns: int, infer_ns: int,
                         output_ns: int) -> None:
        self.execution_count += 1
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)
        per_size = self.batches[rows]
        for total, part, ns in ((self.compute_input, per_size.compute_input, input_ns),
                                (self.compute_infer, per_size.compute_infer, infer_ns),
                                (self.compute_output, per_size.compute_output, output_ns)):
            total.add(ns * requests, requests)
            part.add(ns)
        if self.histograms is not None:
            h = self.histograms.compute
            h.counts[bisect_left(h.bounds, infer_ns)] += 1
            h.sum += infer_ns
            h = self.histograms.batch_size
            h.counts[bisect_left(h.bounds, rows)] += 1
            h.sum += rows

    def as_triton(self, name: str, version: str) -> dict[str, Any]:
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": {"count": 0, "ns": 0},
                "cache_miss": {"count": 0, "ns": 0},
            },
            "response_stats": {},
            "batch_stats": [
                {"batch_size": size, "compute_input": b.compute_input.as_dict(),
                 "compute_infer": b.compute_infer.as_dict(),
                 "compute_output": b.compute_output.as_dict()}
                for size, b in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
