"""Prometheus metrics, on the server's own registry and read from the statistics at scrape time.

Requests pay nothing for Prometheus: the data plane and batcher keep plain counters and
bucket counts (``kiln.serve.core.statistics``), and ``ModelCollector`` turns them into metric
families when ``/metrics`` is scraped. Labels are ``model`` and ``version`` (plus ``reason``,
an ``ErrorKind`` value, and ``state``); requests for models the server does not know share
the model label ``_unknown``, so clients cannot grow the label set::

    registry = build_registry(plane)
    text = prometheus_client.generate_latest(registry)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from kiln.serve.core.dataplane import UNKNOWN, DataPlane, VersionReport
from kiln.serve.core.statistics import Histogram
from kiln.serve.messages import State

_LABELS = ["model", "version"]


def build_registry(plane: DataPlane) -> CollectorRegistry:
    """A registry with kiln's model metrics, the process' RSS/CPU and, if present, GPUs."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ModelCollector(plane))
    ProcessCollector(registry=registry)
    gpus = gpu_collector()
    if gpus is not None:
        registry.register(gpus)
    return registry


class ModelCollector(Collector):
    """Every loaded version's statistics as Prometheus metric families."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def collect(self) -> Iterator[Metric]:
        families = _families()
        for name, status in self.plane.model_states():
            for state in State:
                families["state"].add_metric([name, str(status.version), state.value],
                                             float(status.state is state))
        for report in self.plane.versions():
            _add_version(families, report)
        for (label, reason), count in sorted(self.plane.unresolved_failures.items()):
            families["failure"].add_metric([label, UNKNOWN, reason], count)
        yield from families.values()


def _families() -> dict[str, Any]:
    prefix = "kiln_inference_"
    return {
        "success": CounterMetricFamily(f"{prefix}request_success",
                                       "Successful inference requests.", labels=_LABELS),
        "failure": CounterMetricFamily(f"{prefix}request_failure",
                                       "Failed inference requests, by reason.",
                                       labels=[*_LABELS, "reason"]),
        "count": CounterMetricFamily(f"{prefix}count",
                                     "Samples inferred (a batch of 8 counts 8).", labels=_LABELS),
        "exec": CounterMetricFamily(f"{prefix}exec_count",
                                    "Model executions (requests batched together count once).",
                                    labels=_LABELS),
        "request": HistogramMetricFamily(f"{prefix}request_duration_seconds",
                                         "Time of successful requests in the server, queue and "
                                         "model included.", labels=_LABELS),
        "queue": HistogramMetricFamily(f"{prefix}queue_duration_seconds",
                                       "Time requests waited for the model.", labels=_LABELS),
        "compute": HistogramMetricFamily(f"{prefix}compute_duration_seconds",
                                         "Time of each model execution.", labels=_LABELS),
        "batch": HistogramMetricFamily(f"{prefix}batch_size",
                                       "Samples per model execution.", labels=_LABELS),
        "pending": GaugeMetricFamily(f"{prefix}pending_requests",
                                     "Requests waiting in the model's queue now.", labels=_LABELS),
        "load": GaugeMetricFamily("kiln_model_load_duration_seconds",
                                  "How long loading and warming up the version took.",
                                  labels=_LABELS),
        "state": GaugeMetricFamily("kiln_model_state",
                                   "1 for the state each model version is in, else 0.",
                                   labels=[*_LABELS, "state"]),
    }


def _add_version(families: dict[str, Any], report: VersionReport) -> None:
    stats = report.stats
    labels = [report.name, str(report.version)]
    families["success"].add_metric(labels, stats.success.count)
    for reason, count in sorted(stats.failures.items()):
        families["failure"].add_metric([*labels, reason], count)
    families["count"].add_metric(labels, stats.inference_count)
    families["exec"].add_metric(labels, stats.execution_count)
    families["pending"].add_metric(labels, report.pending)
    families["load"].add_metric(labels, report.load_s)
    if stats.histograms is not None:
        h = stats.histograms
        for key, histogram, unit in (("request", h.request, 1e9), ("queue", h.queue, 1e9),
                                     ("compute", h.compute, 1e9), ("batch", h.batch_size, 1)):
            _add_histogram(families[key], labels, histogram, unit)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram,
                   unit: float) -> None:
    """``unit``: how many of the histogram's units make one of the metric's (1e9 ns = 1 s)."""
    buckets = [(_go_float(bound / unit), count) for bound, count in histogram.cumulative()]
    family.add_metric(labels, buckets, sum_value=histogram.sum / unit)


def _go_float(value: float) -> str:
    """A bucket bound as Prometheus writes it (``+Inf``, ``0.05``)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]  # untyped library
    return text


def gpu_collector() -> Collector | None:
    """GPU memory and utilisation via NVML, or None where there is no NVML or no GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError:
        return None
    return GpuCollector(pynvml, count) if count else None


class GpuCollector(Collector):
    """Per-GPU memory used/total and utilisation, read from NVML at scrape time."""

    def __init__(self, nvml: Any, count: int) -> None:
        self._nvml = nvml
        self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily("kiln_gpu_memory_used_bytes", "GPU memory in use.",
                                 labels=["gpu"])
        total = GaugeMetricFamily("kiln_gpu_memory_total_bytes", "GPU memory in all.",
                                  labels=["gpu"])
        busy = GaugeMetricFamily("kiln_gpu_utilization_ratio",
                                 "Share of the last sample period the GPU was busy (0..1).",
                                 labels=["gpu"])
        for index, handle in enumerate(self._handles):
            memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
            used.add_metric([str(index)], memory.used)
            total.add_metric([str(index)], memory.total)
            busy.add_metric([str(index)], rates.gpu / 100)
        yield from (used, total, busy)
