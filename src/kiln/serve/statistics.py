"""Per model-version statistics, in the shape of Triton's statistics extension.

Counters only: updated on the event loop thread by the batcher and the data plane, read
by the statistics endpoints (and the metrics exporter).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any


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


@dataclass(slots=True)
class BatchSizeStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ModelStats:
    """Triton's per-version statistics: requests (success/fail/queue) and executions."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
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
    #: Requests refused because the queue was full / timed out in the queue.
    rejected_full: int = 0
    timed_out: int = 0

    def record_execution(self, *, rows: int, requests: int, input_ns: int, infer_ns: int,
                         output_ns: int) -> None:
        self.execution_count += 1
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)
        per_size = self.batches[rows]
        for total, part, ns in ((self.compute_input, per_size.compute_input, input_ns),
                                (self.compute_infer, per_size.compute_infer, infer_ns),
                                (self.compute_output, per_size.compute_output, output_ns)):
            total.add(ns, requests)
            part.add(ns)

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
            "batch_stats": [
                {"batch_size": size, "compute_input": b.compute_input.as_dict(),
                 "compute_infer": b.compute_infer.as_dict(),
                 "compute_output": b.compute_output.as_dict()}
                for size, b in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
