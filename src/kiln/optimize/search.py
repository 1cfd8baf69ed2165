"""The accuracy-aware loop: quantize, measure against FP32, fall back the worst nodes, repeat.

For each candidate recipe (fastest first), the loop builds the model and measures it on the
held-back data. Within the budget: done. Over it: the quantized nodes are ranked by the
error each one *adds* (the relative error of its output minus that of its input, FP32 model
vs candidate, on a few samples, as Intel Neural Compressor's MSE strategy ranks ops), and the
worst 1, 2, 4, ... more are kept in FP32 until the budget holds. A candidate is abandoned
when half its nodes are FP32; the loop ends after ``max_trials`` builds. It always returns
the best model it measured, with ``met`` saying whether that one is within the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.optimize.evaluate import Evaluator, Quality
from kiln.optimize.probe import collect
from kiln.optimize.recipe import Recipe
from kiln.tensors import TensorDict

if TYPE_CHECKING:
    import onnx

#: Builds ``recipe``'s model at a path; returns the names of the nodes it quantized.
Builder = Callable[[Recipe, Path], list[str]]
#: Samples the per-node ranking runs on (it keeps every quantized node's output).
RANKING_SAMPLES = 8


@dataclass(frozen=True, slots=True)
class Trial:
    """One build-and-measure step of the search."""

    recipe: Recipe
    path: Path
    quality: Quality
    met: bool
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe.describe(), "method": self.recipe.method,
                "fp32_nodes": list(self.recipe.exclude_nodes), "value": self.quality.value,
                "drop": self.quality.drop, "met": self.met, "seconds": round(self.seconds, 2)}


@dataclass
class SearchResult:
    """The chosen trial, every trial, and what the loop concluded."""

    best: Trial
    met: bool
    trials: list[Trial] = field(default_factory=list)
    #: The per-node errors of the last ranking: (node, added relative error), worst first.
    ranking: list[tuple[str, float]] = field(default_factory=list)
    message: str = ""


def search(candidates: Sequence[Recipe], build: Builder, evaluator: Evaluator, *,
           reference: onnx.ModelProto, max_drop: float, max_trials: int, workdir: Path,
           progress: Callable[[str], None] = lambda _: None) -> SearchResult:
    """Run the loop over ``candidates`` (see the module docstring)."""
    trials: list[Trial] = []
    ranking: list[tuple[str, float]] = []

    def attempt(recipe: Recipe) -> tuple[Trial, list[str]]:
        started = time.perf_counter()
        path = workdir / f"trial{len(trials) + 1}.onnx"
        progress(f"trial {len(trials) + 1}: {recipe.describe()}")
        quantized = build(recipe, path)
        quality = evaluator.measure(path, recipe.backend)
        trial = Trial(recipe, path, quality, quality.drop <= max_drop,
                      time.perf_counter() - started)
        trials.append(trial)
        return trial, quantized

    for candidate in candidates:
        if len(trials) >= max_trials:
            break
        trial, quantized = attempt(candidate)
        if trial.met:
            return _done(trial, trials, ranking)
        progress(f"ranking {len(quantized)} nodes by the error they add")
        ranking = rank_nodes(reference, trial.path, quantized,
                             evaluator.requests[:RANKING_SAMPLES])
        order, step = [name for name, _ in ranking], 1
        fallen: list[str] = []
        limit = min(len(quantized) // 2, len(order))
        while len(trials) < max_trials and len(fallen) < limit:
            fallen += order[len(fallen):min(len(fallen) + step, limit)]
            trial, _ = attempt(candidate.excluding(fallen))
            if trial.met:
                return _done(trial, trials, ranking)
            step *= 2
    best = min(trials, key=lambda t: t.quality.drop)
    return SearchResult(best, False, trials, ranking, (
        f"no recipe met the budget (drop <= {max_drop:g}) in {len(trials)} trial(s); the best, "
        f"{best.recipe.describe()}, drops {best.quality.drop:.4g}: raise --max-drop, give "
        "calibration data closer to real inputs, or exclude nodes by hand"))


def _done(trial: Trial, trials: list[Trial], ranking: list[tuple[str, float]]) -> SearchResult:
    kept = len(trial.recipe.exclude_nodes)
    return SearchResult(trial, True, trials, ranking,
                        f"{trial.recipe.describe()} met the budget after {len(trials)} trial(s)"
                        + (f" with {kept} node(s) kept in FP32" if kept else ""))


def rank_nodes(reference: onnx.ModelProto, quantized_path: Path, names: list[str],
               samples: list[TensorDict]) -> list[tuple[str, float]]:
    """Quantized nodes by the relative error they add (output error minus input error)."""
    import onnx

    quantized = onnx.load(str(quantized_path))
    present = {t for n in quantized.graph.node for t in (*n.input, *n.output)}
    nodes = [n for n in reference.graph.node if n.name in set(names)]
    pairs = {n.name: (_activation(n), n.output[0]) for n in nodes}
    tensors = sorted({t for pair in pairs.values() for t in pair if t and t in present})
    expected = collect(reference, tensors, samples)
    actual = collect(quantized, tensors, samples)
    error = {t: _relative_error(actual[t], expected[t]) for t in tensors}
    ranked = [(name, error.get(out, 0.0) - error.get(inp, 0.0))
              for name, (inp, out) in pairs.items() if out in error]
    return sorted(ranked, key=lambda item: -item[1])


def _activation(node: onnx.NodeProto) -> str:
    """The activation input: indices for a Gather (no error of their own), else input 0."""
    return "" if node.op_type == "Gather" else node.input[0]


def _relative_error(actual: list[np.ndarray], expected: list[np.ndarray]) -> float:
    if expected[0].dtype.kind != "f":
        return 0.0
    num = sum(float(np.sum((a.astype(np.float64) - e) ** 2))
              for a, e in zip(actual, expected, strict=True))
    den = sum(float(np.sum(e.astype(np.float64) ** 2)) for e in expected)
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))
