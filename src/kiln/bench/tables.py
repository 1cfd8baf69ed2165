"""The report's tables as plain text, built once for the terminal (``report``) and the page
(``html``); the terminal shows a narrower selection of the load columns than the page."""

from __future__ import annotations

from kiln.bench.results import BenchReport, LoadPoint
from kiln.plots import size_text

#: Columns of the load table on the HTML page.
LOAD_COLUMNS = ("target", "load", "req/s", "inf/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms",
                "max ms", "sent", "ok", "errors", "client cores", "client µs/req",
                "server cores", "machine cores")
#: The load columns the terminal shows.
TERMINAL_LOAD_COLUMNS = ("target", "load", "inf/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
                         "ok", "errors", "client cores")
ACCURACY_COLUMNS = ("target", "size", "samples", "accuracy", "top-k")
AGREEMENT_COLUMNS = ("target", "output", "max abs err", "mean abs err", "cosine mean",
                     "cosine min", "exact match")
#: Column indexes the terminal and the page decorate.
ERRORS, CLIENT_CORES = LOAD_COLUMNS.index("errors"), LOAD_COLUMNS.index("client cores")


def point_name(point: LoadPoint) -> str:
    """``c=4`` for a closed-loop point, ``500 req/s`` for an open-loop one."""
    return f"c={point.concurrency}" if point.mode == "closed" else f"{point.rate:g} req/s"


def _num(value: float | None, spec: str = ".3g") -> str:
    return "—" if value is None else format(value, spec)


def load_rows(report: BenchReport) -> list[tuple[LoadPoint, list[str]]]:
    """Each load point with the plain text of ``LOAD_COLUMNS``."""
    rows = []
    for target in report.targets:
        for point in target.points:
            lat = point.latency_ms
            latency = ([f"{getattr(lat, k):.3f}" for k in ("p50", "p90", "p95", "p99", "max")]
                       if lat else ["—"] * 5)
            errors = ", ".join(f"{k} {n}" for k, n in sorted(point.errors.items())) or "0"
            rows.append((point, [
                target.label, point_name(point), f"{point.requests_per_s:,.0f}",
                f"{point.inferences_per_s:,.0f}", *latency, str(point.sent), str(point.ok),
                errors, f"{point.client.cores:.2f}", f"{point.client.us_per_request:,.0f}",
                _num(point.server_cores, ".2f"), _num(point.machine_cores, ".2f")]))
    return rows


def accuracy_rows(report: BenchReport) -> list[list[str]]:
    return [[t.label, size_text(t.size_bytes), str(t.accuracy.samples),
             f"{t.accuracy.top1:.4f}",
             ", ".join(f"top-{k} {v:.4f}" for k, v in t.accuracy.topk.items()) or "—"]
            for t in report.targets if t.accuracy is not None]


def agreement_rows(report: BenchReport) -> list[list[str]]:
    return [[t.label, a.output, _num(a.max_abs_error), _num(a.mean_abs_error),
             _num(a.cosine_mean, ".6f"), _num(a.cosine_min, ".6f"), f"{a.exact_match:.4f}"]
            for t in report.targets for a in t.agreement]
