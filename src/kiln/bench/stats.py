"""Turning raw timings into report numbers: latency percentiles, histograms, CPU meters."""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from kiln.bench.results import ClientCpu, Histogram, LatencyStats
from kiln.errors import KilnError

#: Share of a core above which the event-loop thread cannot go faster: its numbers show the
#: generator's limit, not the target's.
SATURATED_LOOP_CORES = 0.9
_HISTOGRAM_BINS = 40


def latency_stats(latencies_s: np.ndarray) -> LatencyStats | None:
    """Percentiles in ms (numpy's linear interpolation); ``None`` when nothing succeeded."""
    if latencies_s.size == 0:
        return None
    ms = latencies_s * 1e3
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return LatencyStats(p50=float(p50), p90=float(p90), p95=float(p95), p99=float(p99),
                        max=float(ms.max()), min=float(ms.min()), mean=float(ms.mean()))


def latency_histogram(latencies_s: np.ndarray) -> Histogram | None:
    """Counts in log-spaced bins spanning the fastest to the slowest request."""
    if latencies_s.size == 0:
        return None
    ms = latencies_s * 1e3
    low, high = float(ms.min()), float(ms.max())
    if high <= low * 1.01:
        low, high = low * 0.99, low * 1.01 + 1e-6
    edges = np.geomspace(max(low, 1e-6), high, _HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(np.clip(ms, edges[0], edges[-1]), bins=edges)
    return Histogram(edges_ms=[float(e) for e in edges], counts=[int(c) for c in counts])


@dataclass
class Recorder:
    """Collects what happened to the requests of one measurement window (thread-safe)."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    last_end: float = 0.0
    first_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, started: float, ended: float, failure: BaseException | None) -> None:
        """One measured request: its latency when it succeeded, its error kind when not."""
        with self._lock:
            self.last_end = max(self.last_end, ended)
            if failure is None:
                self.latencies.append(ended - started)
                return
            kind = error_kind(failure)
            self.errors[kind] += 1
            if self.first_error is None:
                self.first_error = f"{kind}: {failure}"


def error_kind(exc: BaseException) -> str:
    """What the report counts a failure as: the ``ErrorKind`` value, or ``timeout``."""
    if isinstance(exc, KilnError):
        return exc.kind.value
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "internal"


@dataclass(frozen=True, slots=True)
class CpuUse:
    """What ``CpuMeter`` saw over one load point."""

    client: ClientCpu
    #: Cores the server process used (``None`` without its pid).
    server_cores: float | None
    #: Cores busy on the whole machine, every process included (``None`` off Linux).
    machine_cores: float | None


class CpuMeter:
    """CPU used between ``start`` and ``stop``: this process, the calling thread (the event
    loop, when called from it), a server process on this machine (given its pid), and the
    whole machine, so that a neighbour eating the cores shows in the report."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self._start = (0.0, 0.0, 0.0, 0.0, 0.0)

    def _read(self) -> tuple[float, float, float, float, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return (time.perf_counter(), usage.ru_utime + usage.ru_stime, time.thread_time(),
                process_cpu_s(self.server_pid) if self.server_pid else 0.0, machine_busy_s())

    def start(self) -> None:
        self._start = self._read()

    def stop(self, *, requests: int, loop_thread: bool) -> CpuUse:
        """What was used since ``start``; ``loop_thread``: the caller is the event loop."""
        end = self._read()
        wall = max(end[0] - self._start[0], 1e-9)
        cpu, thread = end[1] - self._start[1], end[2] - self._start[2]
        cores, loop_cores = cpu / wall, (thread / wall if loop_thread else 0.0)
        saturated = loop_thread and (loop_cores >= SATURATED_LOOP_CORES
                                     or cores >= SATURATED_LOOP_CORES * (os.cpu_count() or 1))
        client = ClientCpu(cpu_s=cpu, cores=cores, loop_cores=loop_cores,
                           us_per_request=cpu / max(requests, 1) * 1e6, saturated=saturated)
        server = (end[3] - self._start[3]) / wall if self.server_pid else None
        machine = (end[4] - self._start[4]) / wall if end[4] else None
        return CpuUse(client, server, machine)


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU-seconds of a process and its waited-for children (Linux ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / _clock_ticks()


def machine_busy_s() -> float:
    """CPU-seconds every core of the machine spent busy since boot (0 without ``/proc``)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user..steal; guest time is already inside user
    return busy / _clock_ticks()
