"""The b-bit sweep: weight-only quantization at several bit widths, per-tensor and per-channel,
each measured on the evaluation data; the report plots bits against size and quality."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from kiln.optimize.evaluate import Evaluator
from kiln.optimize.recipe import Recipe
from kiln.optimize.report import SweepPoint


def sweep(recipe: Recipe, build: Callable[[Recipe, Path], list[str]], evaluator: Evaluator, *,
          bits: Sequence[int], workdir: Path,
          granularities: Sequence[str] = ("tensor", "channel")) -> list[SweepPoint]:
    """One point per (bits, granularity), from ``recipe`` with those two fields changed."""
    points = []
    for granularity in granularities:
        for width in bits:
            variant = replace(recipe, bits=width, granularity=granularity)
            path = workdir / f"sweep_{granularity}_{width}.onnx"
            build(variant, path)
            quality = evaluator.measure(path, variant.backend)
            points.append(SweepPoint(bits=width, granularity=granularity,
                                     size_bytes=path.stat().st_size, value=quality.value,
                                     drop=quality.drop))
            path.unlink()
    return points
