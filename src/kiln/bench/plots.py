"""The report's plots, drawn with matplotlib and returned as inline SVG (text as paths, so the
page needs no font or network). Figures are built directly, never through pyplot's global
state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kiln.bench.results import BenchReport, LoadPoint, TargetResult
from kiln.bench.tables import point_name
from kiln.plots import figure, size_text, svg

_PERCENTILES = (("p50", "-"), ("p90", "--"), ("p99", ":"))


def _closed(target: TargetResult) -> list[LoadPoint]:
    return [p for p in target.points if p.mode == "closed" and p.latency_ms is not None]


def _open(target: TargetResult) -> list[LoadPoint]:
    return [p for p in target.points if p.mode == "open" and p.latency_ms is not None]


def latency_vs_concurrency(report: BenchReport) -> str | None:
    """p50 / p90 / p99 latency against concurrency, one colour per target."""
    return _per_load(report, _closed, "concurrency (requests in flight)",
                     "latency (ms)", _latency_lines, "Latency percentiles vs concurrency")


def throughput_vs_concurrency(report: BenchReport) -> str | None:
    """Inferences per second against concurrency, one line per target."""
    return _per_load(report, _closed, "concurrency (requests in flight)", "inferences / s",
                     _throughput_line, "Throughput vs concurrency", yscale="linear")


def latency_vs_rate(report: BenchReport) -> str | None:
    """Open loop: latency percentiles against the offered request rate."""
    return _per_load(report, _open, "offered rate (requests / s)", "latency (ms)",
                     _latency_lines, "Latency percentiles vs request rate")


def _per_load(report: BenchReport, pick: Callable[[TargetResult], list[LoadPoint]],
              xlabel: str, ylabel: str, draw: Callable[..., None], title: str, *,
              yscale: str = "log") -> str | None:
    series = [(t, pick(t)) for t in report.targets]
    series = [(t, points) for t, points in series if points]
    if not series:
        return None
    drawing = figure()
    axes = drawing.add_subplot()
    levels: set[float] = set()
    for index, (target, points) in enumerate(series):
        x = [float(p.concurrency if p.mode == "closed" else p.rate or 0) for p in points]
        levels.update(x)
        draw(axes, target.label, f"C{index}", x, points)
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title, yscale=yscale)
    if yscale == "linear":
        axes.margins(y=0.1)
        axes.set_ylim(bottom=0)
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted(levels), [f"{v:g}" for v in sorted(levels)], minor=False)
    axes.set_xticks([], minor=True)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    return svg(drawing)


def _latency_lines(axes: Any, label: str, colour: str, x: list[float],
                   points: list[LoadPoint]) -> None:
    for name, style in _PERCENTILES:
        y = [getattr(p.latency_ms, name) for p in points]
        axes.plot(x, y, linestyle=style, marker="o", color=colour, label=f"{label} {name}")


def _throughput_line(axes: Any, label: str, colour: str, x: list[float],
                     points: list[LoadPoint]) -> None:
    axes.plot(x, [p.inferences_per_s for p in points], marker="o", color=colour, label=label)


def latency_histograms(report: BenchReport) -> str | None:
    """Each target's latency distribution (share of its requests per log-spaced bin), one
    step line per load point."""
    targets = [t for t in report.targets if any(p.histogram for p in t.points)]
    if not targets:
        return None
    drawing = figure(9.0, 2.8 * len(targets))
    for row, target in enumerate(targets):
        axes = drawing.add_subplot(len(targets), 1, row + 1)
        for point in target.points:
            if point.histogram is None:
                continue
            counts = point.histogram.counts
            shares = [100 * c / max(sum(counts), 1) for c in counts]
            axes.stairs(shares, point.histogram.edges_ms, label=point_name(point))
        axes.set(xscale="log", title=target.label, ylabel="% of requests")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    drawing.axes[-1].set_xlabel("latency (ms)")
    return svg(drawing)


def tradeoff(report: BenchReport) -> str | None:
    """Comparisons: quality (accuracy, else cosine to the reference) against the best
    throughput, with the marker's area proportional to the model's size."""
    rows = []
    for target in report.targets:
        quality = _quality(target)
        speed = max((p.inferences_per_s for p in target.points), default=None)
        if quality is not None and speed is not None:
            rows.append((target, quality, speed))
    if len(rows) < 2:
        return None
    drawing = figure(9.0, 5.0)
    axes = drawing.add_subplot()
    largest = max((t.size_bytes or 0 for t, _, _ in rows), default=0) or 1
    for index, (target, (score, _metric), speed) in enumerate(rows):
        area = 60 + 900 * (target.size_bytes or 0) / largest
        axes.scatter([speed], [score], s=area, color=f"C{index}", alpha=0.6)
        axes.annotate(f"{target.label}\n{size_text(target.size_bytes)}", (speed, score),
                      textcoords="offset points", xytext=(8, 8), fontsize="small")
    metric = rows[0][1][1]
    axes.set(xlabel="best throughput (inferences / s)", ylabel=metric, xscale="log",
             title="Accuracy vs size vs speed (marker area = model size)")
    axes.margins(0.25)
    axes.grid(True, alpha=0.3)
    return svg(drawing)


def _quality(target: TargetResult) -> tuple[float, str] | None:
    if target.accuracy is not None:
        return target.accuracy.top1, "accuracy (top-1)"
    for agree in target.agreement:
        if agree.cosine_mean is not None:
            return agree.cosine_mean, f"cosine to reference ({agree.output})"
    return None


#: The plots of a report, in page order: (title, function).
PLOTS: list[tuple[str, Callable[[BenchReport], str | None]]] = [
    ("Latency percentiles vs concurrency", latency_vs_concurrency),
    ("Throughput vs concurrency", throughput_vs_concurrency),
    ("Latency vs request rate (open loop)", latency_vs_rate),
    ("Latency histograms", latency_histograms),
    ("Accuracy vs size vs speed", tradeoff),
]
