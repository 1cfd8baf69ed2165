"""The HTML report: one self-contained page (inline CSS and SVG plots, no scripts, nothing
fetched), so it opens offline and can be mailed or archived as one file."""

from __future__ import annotations

from html import escape

from kiln.bench.plots import PLOTS
from kiln.bench.results import BenchReport
from kiln.bench.tables import (
    ACCURACY_COLUMNS,
    AGREEMENT_COLUMNS,
    CLIENT_CORES,
    ERRORS,
    LOAD_COLUMNS,
    accuracy_rows,
    agreement_rows,
    load_rows,
)

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1d1d1f; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; }
.meta { color: #555; } table { border-collapse: collapse; margin: .6rem 0; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
th { background: #f4f4f6; } .bad { color: #b00020; font-weight: 600; }
figure { margin: 1.4rem 0; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9rem; } .note { background: #f7f7f9;
  border-left: 4px solid #888; padding: .5rem .9rem; }
"""

_HOW_TO_READ = """
<div class="note"><p><b>How to read this.</b> Each row is one load point: in closed loop
(<code>c=N</code>) N callers each send their next request as soon as the last is answered; in
open loop (<code>R req/s</code>) requests leave on a schedule and latency counts from when each
was due, so queueing shows. Throughput is answered requests over the measured time (warm-up
excluded); inferences/s multiplies by the rows per request. Percentiles are over successful
requests. <b>Client cores</b> is the CPU the load generator used: when it nears one core the
generator, not the target, is the limit, and the row is flagged. For an in-process target it is
the model's own CPU. <b>Machine cores</b> counts every process on the machine: when it is well
above client plus server, something else was competing for the CPU. Accuracy and agreement
are computed on the same data for every target; agreement compares each output with the
reference model's, row by row.</p></div>
"""


def render_html(report: BenchReport) -> str:
    """The whole page as a string."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>kiln bench report</title>", f"<style>{_STYLE}</style></head><body>",
        "<h1>kiln bench report</h1>", _meta(report), _HOW_TO_READ,
        "<h2>Latency and throughput</h2>", _load_table(report),
    ]
    parts += _quality(report)
    parts.append("<h2>Plots</h2>")
    for title, draw in PLOTS:
        svg = draw(report)
        if svg is not None:
            parts.append(f"<figure>{svg}<figcaption>{escape(title)}</figcaption></figure>")
    parts.append("<p class='meta'>The numbers behind this page are in "
                 "<code>report.json</code> next to it.</p></body></html>")
    return "\n".join(parts)


def _meta(report: BenchReport) -> str:
    machine = ", ".join(f"{k} {v}" for k, v in report.machine.items())
    options = report.options
    load = (f"duration {options.get('duration_s')} s" if options.get("requests") is None
            else f"{options.get('requests')} requests")
    return (f"<p class='meta'>kiln {escape(report.kiln_version)} · {escape(report.created)}"
            f"<br>machine: {escape(machine)}<br>data: {escape(report.data_source)} · batch "
            f"size {options.get('batch_size')} · {escape(load)} per point after "
            f"{options.get('warmup_s')} s warm-up</p>")


def _row(cells: list[str], header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _table(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    return "<table>" + _row(list(columns), header=True) + "".join(_row(r) for r in rows) + \
        "</table>"


def _load_table(report: BenchReport) -> str:
    rows = []
    for point, cells in load_rows(report):
        cells = [escape(c) for c in cells]
        if point.errors:
            title = escape(point.first_error or "")
            cells[ERRORS] = f"<span class='bad' title='{title}'>{cells[ERRORS]}</span>"
        if point.client.saturated:
            cells[CLIENT_CORES] = f"<span class='bad'>{cells[CLIENT_CORES]} saturated</span>"
        rows.append(cells)
    return _table(LOAD_COLUMNS, rows)


def _quality(report: BenchReport) -> list[str]:
    parts = []
    if accuracy := accuracy_rows(report):
        parts += ["<h2>Accuracy</h2>",
                  _table(ACCURACY_COLUMNS, [[escape(c) for c in r] for r in accuracy])]
    if agreement := agreement_rows(report):
        parts += [f"<h2>Agreement with <code>{escape(report.reference or '')}</code></h2>",
                  _table(AGREEMENT_COLUMNS, [[escape(c) for c in r] for r in agreement])]
    return parts
