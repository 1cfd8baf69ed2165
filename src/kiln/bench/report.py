"""The report in the terminal (rich tables, a progress bar while it runs) and on disk
(``write_report``: ``report.json`` plus a self-contained ``report.html``).

The table rows are built once as plain text (``load_rows``, ``accuracy_rows``,
``agreement_rows``); the terminal shows a narrower selection of the load columns than the page.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kiln.bench.results import BenchReport, LoadPoint

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


def size_text(size_bytes: int | None) -> str:
    if size_bytes is None:
        return "—"
    return f"{size_bytes / 1e6:.2f} MB" if size_bytes >= 1e5 else f"{size_bytes / 1e3:.1f} kB"


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


def _table(title: str, columns: tuple[str, ...], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for index, header in enumerate(columns):
        table.add_column(header, justify="left" if index < 2 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def print_report(report: BenchReport, console: Console) -> None:
    """The tables, then a warning for every point whose generator ran out of CPU."""
    keep = [LOAD_COLUMNS.index(c) for c in TERMINAL_LOAD_COLUMNS]
    rows = []
    for point, cells in load_rows(report):
        if point.errors:
            cells[ERRORS] = f"[red]{cells[ERRORS]}[/]"
        if point.client.saturated:
            cells[CLIENT_CORES] = f"[bold red]{cells[CLIENT_CORES]}!![/]"
        rows.append([cells[i] for i in keep])
    console.print(_table("Latency and throughput", TERMINAL_LOAD_COLUMNS, rows))
    if accuracy := accuracy_rows(report):
        console.print(_table("Accuracy", ACCURACY_COLUMNS, accuracy))
    if agreement := agreement_rows(report):
        console.print(_table(f"Agreement with {report.reference}", AGREEMENT_COLUMNS,
                             agreement))
    for target in report.targets:
        for point in target.points:
            where = f"{target.label} {point_name(point)}"
            if point.client.saturated:
                console.print(f"[bold red]warning:[/] {where}: the load generator used "
                              f"{point.client.loop_cores:.2f} of a core; these numbers are "
                              "its limit, not the target's", highlight=False)
            if point.first_error:
                console.print(f"[red]{where}: first error: {point.first_error}[/]",
                              highlight=False)


class RichProgress:
    """A ``kiln.bench.load.Progress`` that draws one bar per load point (in a terminal)."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                                  console=console, disable=not console.is_terminal)
        self._task: int | None = None

    def begin(self, label: str) -> None:
        if self._task is None:
            self._progress.start()
        self._task = self._progress.add_task(label, total=100)

    def update(self, fraction: float) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=100 * fraction)

    def end(self) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=100)

    def close(self) -> None:
        self._progress.stop()


def write_report(report: BenchReport, folder: Path) -> tuple[Path, Path]:
    """``folder/report.json`` and ``folder/report.html``; returns both paths."""
    from kiln.bench.html import render_html

    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / "report.json", folder / "report.html"
    report.save_json(json_path)
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path
