"""The report of a quantization run: what was done, what it cost, what it bought.

Written next to the model as ``report.json`` (everything), ``report.md`` (the table) and, for
weight-only runs, ``bbit_sweep.svg`` (bits vs size vs quality, drawn with the matplotlib
helpers of ``kiln bench``'s report); printed as a rich table by the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kiln.plots import figure, size_text, svg


class SweepPoint(BaseModel):
    """One weight-only setting of the b-bit sweep."""

    model_config = ConfigDict(frozen=True)

    bits: int
    granularity: str
    size_bytes: int
    value: float
    drop: float


class OptimizeReport(BaseModel):
    """Everything one ``kiln optimize quantize`` run measured."""

    model_config = ConfigDict(frozen=True)

    source: str
    recipe: dict[str, Any]
    recipe_label: str
    backend: str
    size_before: int
    size_after: int
    metric: str
    #: Drop allowed by ``--max-drop`` (``None``: no accuracy-aware search).
    max_drop: float | None
    met: bool | None
    message: str
    eval_samples: int
    eval_source: str
    calibration_source: str | None
    fp32: dict[str, Any]
    quantized: dict[str, Any]
    fp32_nodes: list[str] = Field(default_factory=list)
    trials: list[dict[str, Any]] = Field(default_factory=list)
    ranking: list[tuple[str, float]] = Field(default_factory=list)
    #: ``{"fp32": Speed, "quantized": Speed, "threads": n}``; empty when not measured.
    speed: dict[str, Any] = Field(default_factory=dict)
    sweep: list[SweepPoint] = Field(default_factory=list)
    #: CPU features that int8 speed and even correctness depend on (VNNI, BF16, AMX).
    cpu: dict[str, Any] = Field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(what, FP32, quantized, ratio) rows of the summary table."""
        rows = [("size", size_text(self.size_before), size_text(self.size_after),
                 f"{self.size_before / max(self.size_after, 1):.2f}x smaller")]
        fp32, quant = self.speed.get("fp32"), self.speed.get("quantized")
        if fp32 and quant:
            rows.append(("batch-1 latency (median)", f"{fp32['batch1_ms']:.3f} ms",
                         f"{quant['batch1_ms']:.3f} ms",
                         f"{fp32['batch1_ms'] / quant['batch1_ms']:.2f}x faster"))
            if fp32.get("rows_per_s") and quant.get("rows_per_s"):
                rows.append((f"throughput, batch {fp32['batch_size']} (median)",
                             f"{fp32['rows_per_s']:,.1f} rows/s",
                             f"{quant['rows_per_s']:,.1f} rows/s",
                             f"{quant['rows_per_s'] / fp32['rows_per_s']:.2f}x"))
        rows.append((self._metric_name(), _value(self.fp32), _value(self.quantized),
                     f"drop {self.quantized['drop']:.4g}"))
        if self.quantized.get("cosine_min") is not None and self.metric != "accuracy":
            rows.append(("min cosine", "1", f"{self.quantized['cosine_min']:.5f}", ""))
        return rows

    def _metric_name(self) -> str:
        return {"accuracy": "accuracy (top-1)", "cosine": "mean cosine to FP32",
                "mae": "mean abs error to FP32"}[self.metric]

    def markdown(self) -> str:
        """The summary as a Markdown table, with the recipe and the search's outcome."""
        lines = [f"# Quantization report: {Path(self.source).name}", "",
                 f"Recipe: **{self.recipe_label}**, run by `{self.backend}`. {self.message}", "",
                 "| | FP32 | quantized | ratio |", "|---|---:|---:|---:|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows()]
        if self.fp32_nodes:
            lines += ["", f"Nodes kept in FP32: {', '.join(self.fp32_nodes)}"]
        if self.sweep:
            lines += ["", "| bits | granularity | size | value | drop |",
                      "|---:|---|---:|---:|---:|"]
            lines += [f"| {p.bits} | {p.granularity} | {size_text(p.size_bytes)} | "
                      f"{p.value:.5g} | {p.drop:.4g} |" for p in self.sweep]
        return "\n".join(lines) + "\n"

    def files(self, *, prefix: str = "") -> dict[str, bytes]:
        """``report.json``, ``report.md`` and, after a sweep, ``bbit_sweep.svg``, by name."""
        files = {f"{prefix}report.json": (self.model_dump_json(indent=2) + "\n").encode(),
                 f"{prefix}report.md": self.markdown().encode()}
        if self.sweep:
            files[f"{prefix}bbit_sweep.svg"] = sweep_plot(self).encode()
        return files


def _value(quality: dict[str, Any]) -> str:
    value = quality["value"]
    return f"{value * 100:.2f} %" if quality["metric"] == "accuracy" else f"{value:.5f}"


def sweep_plot(report: OptimizeReport) -> str:
    """Quality against bits, one line per granularity, with the model size on a second axis."""
    drawing = figure(8.0, 4.5)
    axes = drawing.add_subplot()
    sizes = axes.twinx()
    for index, granularity in enumerate(sorted({p.granularity for p in report.sweep})):
        points = sorted((p for p in report.sweep if p.granularity == granularity),
                        key=lambda p: p.bits)
        bits = [p.bits for p in points]
        axes.plot(bits, [p.value for p in points], marker="o", color=f"C{index}",
                  label=f"{report.metric}, per-{granularity}")
        sizes.plot(bits, [p.size_bytes / 1e6 for p in points], linestyle=":", marker="s",
                   color=f"C{index}", alpha=0.6, label=f"size, per-{granularity}")
    axes.axhline(report.fp32["value"], color="grey", linestyle="--", label="FP32")
    axes.set(xlabel="bits per weight", ylabel=report._metric_name(),
             title="Weight-only b-bit sweep: quality and size")
    sizes.set_ylabel("model size (MB)")
    axes.grid(True, alpha=0.3)
    handles = axes.get_legend_handles_labels()
    extra = sizes.get_legend_handles_labels()
    axes.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize="small", loc="lower right")
    return svg(drawing)


def cpu_features() -> dict[str, Any]:
    """The CPU model and the int8/bf16 instruction sets it has (Linux ``/proc/cpuinfo``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
        elif key.strip() == "model name" and not model:
            model = value.strip()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    return {"model": model, "features": [f for f in wanted if f in flags]}
