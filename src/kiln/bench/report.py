"""The report in the terminal (rich tables, a progress bar while it runs) and on disk
(``write_report``: ``report.json`` plus a self-contained ``report.html``)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from kiln.bench.html import render_html
from kiln.bench.results import BenchReport
from kiln.bench.tables import (
    ACCURACY_COLUMNS,
    AGREEMENT_COLUMNS,
    CLIENT_CORES,
    ERRORS,
    LOAD_COLUMNS,
    TERMINAL_LOAD_COLUMNS,
    accuracy_rows,
    agreement_rows,
    load_rows,
    point_name,
)


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
        self._task: TaskID | None = None

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
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / "report.json", folder / "report.html"
    report.save_json(json_path)
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path
