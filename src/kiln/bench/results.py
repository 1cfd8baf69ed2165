"""The numbers ``kiln bench`` produces, as plain dataclasses that round-trip through JSON.

    BenchReport
     └── targets: TargetResult            one per model file / endpoint
          ├── points: LoadPoint           one per concurrency level or request rate
          │    ├── latency_ms: LatencyStats, histogram: Histogram
          │    └── client: ClientCpu      what the load generator itself used
          ├── accuracy: Accuracy          against labels, when the data has them
          └── agreement: [Agreement]      against the reference model, per output
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kiln.data.metrics import Accuracy, Agreement


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LatencyStats(_Result):
    """Latency percentiles of the successful requests, in milliseconds."""

    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    min: float
    mean: float


class Histogram(_Result):
    """Latency counts in log-spaced bins: ``counts[i]`` requests took ``edges_ms[i]`` to
    ``edges_ms[i + 1]`` ms."""

    edges_ms: list[float]
    counts: list[int]


class ClientCpu(_Result):
    """CPU the load generator used during a point (the model's own, for in-process targets)."""

    #: CPU-seconds of the whole generator process (user + system, all threads).
    cpu_s: float
    #: Cores busy on average: ``cpu_s`` / wall seconds.
    cores: float
    #: Cores busy on average in the event-loop thread (0 for in-process targets).
    loop_cores: float
    #: Client CPU per request, in microseconds.
    us_per_request: float
    #: True when the generator ran out of CPU, so the numbers show its limit, not the target's.
    saturated: bool


class LoadPoint(_Result):
    """One measured load level. ``sent == ok + sum(errors.values())``."""

    mode: str  # "closed" (fixed concurrency) or "open" (fixed request rate)
    concurrency: int
    #: The request rate asked for in open-loop mode (requests/s); ``None`` in closed loop.
    rate: float | None
    #: Rows per request (the batch size).
    batch_size: int
    #: Seconds from the start of the measurement to the last answer.
    duration_s: float
    sent: int
    ok: int
    #: Failed requests by kind (``invalid_argument``, ``unavailable``, ``timeout``, ...).
    errors: dict[str, int]
    #: Open loop: requests not sent because ``max_outstanding`` were already waiting.
    dropped: int
    requests_per_s: float
    inferences_per_s: float
    latency_ms: LatencyStats | None
    histogram: Histogram | None
    client: ClientCpu
    #: Cores the server process used, when its pid was given (``None`` otherwise).
    server_cores: float | None = None
    #: Cores busy on the whole machine (everything on it, not only client and server).
    machine_cores: float | None = None
    #: Open loop: how late the generator sent requests, 99th percentile, in ms.
    send_lag_p99_ms: float | None = None
    #: The first error message seen, to say what went wrong.
    first_error: str | None = None


class TensorInfo(_Result):
    name: str
    datatype: str
    shape: list[int]


class TargetResult(_Result):
    """Everything measured for one target."""

    label: str
    protocol: str
    address: str
    size_bytes: int | None
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    points: list[LoadPoint] = Field(default_factory=list)
    accuracy: Accuracy | None = None
    agreement: list[Agreement] = Field(default_factory=list)


class BenchReport(_Result):
    """A whole ``kiln bench`` run: what was asked, where it ran, what each target did."""

    kiln_version: str
    created: str
    machine: dict[str, Any]
    options: dict[str, Any]
    #: Where the inputs came from ("generated", a file, a scikit-learn dataset).
    data_source: str
    #: The reference model's label, when outputs were compared with one.
    reference: str | None
    targets: list[TargetResult]

    def save_json(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load_json(cls, path: Path) -> BenchReport:
        return cls.model_validate_json(path.read_text())
