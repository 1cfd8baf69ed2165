"""``kiln.optimize.ort_quant``: an ONNX model in, a quantized model with its evidence out.

    from kiln.optimize import QuantizeOptions, Recipe, quantize
    result = quantize(Path("model.onnx"), recipe=Recipe(method="static"),
                      calibration=CalibrationData.load("calib.npz", signature))
    result.save(Path("model.int8.onnx"))                  # + manifest and report beside it
    result.save_to_repository(Path("repo"), name="digits", version=2)

Without a recipe, the candidates are tried fastest first: OpenVINO/NNCF int8 (when
installed and data is given), static int8 (when data is given), dynamic int8. With
``max_drop`` each candidate is checked on held-back data and nodes fall back to FP32 until
the budget holds (``kiln.optimize.search``); without it the first candidate is taken.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.data import inputs
from kiln.optimize import graph
from kiln.optimize.calibration import CalibrationData
from kiln.optimize.evaluate import Evaluator, open_session
from kiln.optimize.ort_quant import TRANSFORMER_ALPHA
from kiln.optimize.recipe import Recipe
from kiln.optimize.report import OptimizeReport, SweepPoint, cpu_features
from kiln.optimize.result import QuantizationResult
from kiln.optimize.search import Builder, SearchResult, Trial, search
from kiln.optimize.speed import measure
from kiln.optimize.sweep import sweep
from kiln.tensors import Signature, TensorDict

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True, slots=True, kw_only=True)
class QuantizeOptions:
    """How to check and measure; each field is a ``kiln optimize quantize`` option."""

    #: ``accuracy`` (needs labels), ``cosine`` or ``mae``; default: accuracy with labels,
    #: else cosine.
    metric: str | None = None
    #: The largest allowed drop (see ``kiln.optimize.evaluate``); ``None``: no search.
    max_drop: float | None = None
    #: Builds the accuracy-aware search may try in all.
    max_trials: int = 8
    #: Weight-only runs: also sweep these bit widths per-tensor and per-channel.
    sweep_bits: tuple[int, ...] = (8, 6, 4, 3, 2)
    #: Rows of the throughput batch, and timing rounds (0 skips the speed measurement).
    batch_size: int = 32
    speed_rounds: int = 10
    #: Intra-op threads for every measurement (both models alike).
    threads: int = 1


def quantize(model: Path, *, recipe: Recipe | None = None,
             calibration: CalibrationData | None = None,
             evaluation: inputs.Dataset | None = None,
             options: QuantizeOptions | None = None,
             progress: Callable[[str], None] = lambda _: None) -> QuantizationResult:
    """Quantize ``model`` (see the module docstring); ``evaluation`` is held-back data."""
    options = options or QuantizeOptions()
    with tempfile.TemporaryDirectory(prefix="kiln-optimize-") as folder:
        workdir = Path(folder)
        reference = graph.name_nodes(graph.load(Path(model)))
        if recipe is not None:
            graph.check_nodes_exist(reference, recipe.exclude_nodes)
        fp32 = workdir / "fp32.onnx"
        fp32.write_bytes(reference.SerializeToString())
        signature = model_signature(fp32)
        calibrated = recipe is None or recipe.method in ("static", "openvino")
        calibration, evaluation = _data(signature, calibration, evaluation, split=calibrated)
        metric = options.metric or ("accuracy" if evaluation.labels is not None else "cosine")
        evaluator = Evaluator(fp32, evaluation.requests, metric=metric,
                              labels=evaluation.labels, threads=options.threads)
        candidates = [resolve(c, reference)
                      for c in ([recipe] if recipe is not None else auto_candidates(calibration))]
        build = _builder(fp32, calibration)
        progress(f"quantizing: {', '.join(c.describe() for c in candidates)}")
        found = _choose(candidates, build, evaluator, reference, options, workdir, progress)
        chosen = found.best
        report = OptimizeReport(
            **_facts(Path(model), found, options, evaluator, evaluation, calibration),
            speed=_speed(fp32, chosen, evaluation, options, progress),
            sweep=_sweep(chosen.recipe, build, evaluator, options, workdir, progress))
        return QuantizationResult(chosen.path.read_bytes(), chosen.recipe, chosen.recipe.backend,
                                  signature, report)


def _facts(model: Path, found: SearchResult, options: QuantizeOptions, evaluator: Evaluator,
           evaluation: inputs.Dataset, calibration: CalibrationData | None) -> dict[str, Any]:
    """The report's fields about what was chosen and how it was checked."""
    chosen = found.best
    return {
        "source": str(model), "recipe": chosen.recipe.as_dict(),
        "recipe_label": chosen.recipe.describe(), "backend": chosen.recipe.backend,
        "size_before": model.stat().st_size, "size_after": chosen.path.stat().st_size,
        "metric": evaluator.metric, "max_drop": options.max_drop,
        "met": found.met if options.max_drop is not None else None, "message": found.message,
        "eval_samples": sum(len(next(iter(r.values()))) for r in evaluation.requests),
        "eval_source": evaluation.source,
        "calibration_source": calibration.source if calibration else None,
        "fp32": evaluator.baseline.as_dict(), "quantized": chosen.quality.as_dict(),
        "fp32_nodes": list(chosen.recipe.exclude_nodes),
        "trials": [t.as_dict() for t in found.trials], "ranking": found.ranking[:20],
        "cpu": cpu_features()}


def auto_candidates(calibration: CalibrationData | None) -> list[Recipe]:
    """The automatic search order, fastest first (int8 static needs real calibration data)."""
    from kiln.optimize.nncf_ptq import available

    calibrated = calibration is not None and calibration.source != "generated"
    candidates = []
    if calibrated and available():
        candidates.append(Recipe(method="openvino"))
    if calibrated:
        candidates.append(Recipe(method="static"))
    candidates.append(Recipe(method="dynamic"))
    return candidates


def resolve(recipe: Recipe, model: onnx.ModelProto) -> Recipe:
    """``recipe`` with its automatic choices made for ``model`` (SmoothQuant on transformers),
    so that the manifest records what was actually done."""
    if recipe.method == "static" and recipe.smoothquant_alpha is None:
        alpha = TRANSFORMER_ALPHA if graph.is_transformer(model) else 0.0
        return replace(recipe, smoothquant_alpha=alpha)
    return recipe


def model_signature(path: Path) -> Signature:
    """The inputs and outputs of the ONNX model at ``path``, as ONNX Runtime reads them."""
    session = open_session(path, "onnxruntime")
    try:
        return session.signature
    finally:
        session.close()


def _data(signature: Signature, calibration: CalibrationData | None,
          evaluation: inputs.Dataset | None, *,
          split: bool) -> tuple[CalibrationData | None, inputs.Dataset]:
    """Calibration and held-back evaluation data: when only evaluation data is given and
    ``split`` (the recipe calibrates), its first requests (about 128 rows, at most half)
    calibrate and the rest evaluate."""
    if evaluation is None:
        source = calibration or CalibrationData.generated(signature, count=16)
        return calibration, inputs.Dataset(list(source.samples), None, source.source)
    if calibration is not None or not split or len(evaluation.requests) < 2:
        return calibration, evaluation
    sizes = [len(next(iter(r.values()))) for r in evaluation.requests]
    wanted = min(128, sum(sizes) // 2)
    head: list[TensorDict] = []
    while sum(sizes[:len(head)]) < wanted and len(head) < len(sizes) - 1:
        head.append(evaluation.requests[len(head)])
    cut = sum(sizes[:len(head)])
    samples = [{n: a[i:i + 1] for n, a in r.items()}
               for r, size in zip(head, sizes, strict=False) for i in range(size)]
    calibration = CalibrationData(samples, source=f"{evaluation.source} (first {cut} rows)")
    labels = evaluation.labels[cut:] if evaluation.labels is not None else None
    return calibration, inputs.Dataset(evaluation.requests[len(head):], labels,
                                       f"{evaluation.source} (rows {cut + 1}-{sum(sizes)})")


def _builder(fp32: Path, calibration: CalibrationData | None) -> Builder:
    from kiln.optimize.build import build_model

    return lambda recipe, path: build_model(fp32, recipe, path, calibration)


def _choose(candidates: list[Recipe], build: Builder,
            evaluator: Evaluator, reference: onnx.ModelProto, options: QuantizeOptions,
            workdir: Path,
            progress: Callable[[str], None]) -> SearchResult:
    if options.max_drop is not None:
        return search(candidates, build, evaluator, reference=reference,
                      max_drop=options.max_drop, max_trials=options.max_trials,
                      workdir=workdir, progress=progress)
    recipe, path = candidates[0], workdir / "quantized.onnx"
    progress(f"building {recipe.describe()}")
    build(recipe, path)
    quality = evaluator.measure(path, recipe.backend)
    trial = Trial(recipe, path, quality, True, 0.0)
    return SearchResult(trial, True, [trial], [], f"{recipe.describe()} (no budget given)")


def _speed(fp32: Path, chosen: Trial, evaluation: inputs.Dataset, options: QuantizeOptions,
           progress: Callable[[str], None]) -> dict[str, object]:
    if options.speed_rounds < 1:
        return {}
    progress("timing FP32 and quantized side by side")
    fp32_speed, quantized = measure([(fp32, "onnxruntime"), (chosen.path, chosen.recipe.backend)],
                                    evaluation.requests[0], batch_size=options.batch_size,
                                    rounds=options.speed_rounds, threads=options.threads)
    return {"fp32": fp32_speed.as_dict(), "quantized": quantized.as_dict(),
            "threads": options.threads}


def _sweep(recipe: Recipe, build: Builder, evaluator: Evaluator,
           options: QuantizeOptions, workdir: Path,
           progress: Callable[[str], None]) -> list[SweepPoint]:
    if recipe.method != "weight-only" or not options.sweep_bits:
        return []
    progress(f"b-bit sweep over {', '.join(map(str, options.sweep_bits))} bits")
    return sweep(recipe, build, evaluator, bits=options.sweep_bits, workdir=workdir)
