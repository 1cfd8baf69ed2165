"""The accuracy-aware loop: a budget it meets by falling back the damaging node, one it meets at
once, and one it cannot meet (it gives up, says so and returns the best it found)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from kiln.data import inputs
from kiln.optimize import CalibrationData, QuantizeOptions, Recipe, quantize
from kiln.optimize.api import model_signature
from tests.models import mlp_model


def _outlier_mlp(path: Path) -> Path:
    """An MLP whose second layer holds one huge weight on an input that ReLU always zeroes:
    harmless in FP32, but it stretches a per-tensor int8 scale until that layer's other
    weights round to zero."""
    model = mlp_model((32, 64, 64, 64, 8), seed=3)
    weights = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}
    weights["w0"][:, 5], weights["b0"][5] = 0.0, -1.0  # unit 5 of layer 0 is always 0
    weights["w1"][5, 7] = 500.0
    for tensor in model.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(weights[tensor.name], tensor.name))
    for node in model.graph.node:  # dynamic int8 handles MatMul; make the Gemms MatMul + Add
        if node.op_type == "Gemm":
            node.op_type = "MatMul"
            del node.input[2:]
    onnx.save(model, str(path))
    return path


def _data(model: Path, seed: int = 0) -> inputs.Dataset:
    x = np.random.default_rng(seed).standard_normal((256, 32)).astype(np.float32)
    return inputs.Dataset(inputs.split_rows({"input": x}, model_signature(model), 32), None,
                          "random")


def test_fallback_of_the_worst_node_meets_the_budget(tmp_path: Path) -> None:
    model = _outlier_mlp(tmp_path / "mlp.onnx")
    recipe = Recipe(method="dynamic", per_channel=False)
    result = quantize(model, recipe=recipe, evaluation=_data(model),
                      options=QuantizeOptions(metric="cosine", max_drop=0.01, speed_rounds=0))
    report = result.report
    assert report.met is True
    first, last = report.trials[0], report.trials[-1]
    assert first["drop"] > 0.01 and not first["met"]  # all int8: over the budget
    assert report.ranking[0][0] == "MatMul_2"  # the outlier layer adds the most error
    assert report.fp32_nodes == ["MatMul_2"] and last["met"] and len(report.trials) == 2
    assert "1 node(s) kept in FP32" in report.message
    kept = next(n for n in onnx.load_from_string(result.model_bytes).graph.node
                if n.name == "MatMul_2")
    assert kept.op_type == "MatMul"


def test_a_budget_met_at_once_needs_one_trial(cnn: Path,
                                              digits_files: tuple[Path, Path]) -> None:
    signature = model_signature(cnn)
    result = quantize(cnn, recipe=Recipe(method="static"),
                      calibration=CalibrationData.load(str(digits_files[0]), signature),
                      evaluation=inputs.load(str(digits_files[1]), signature, batch_size=64),
                      options=QuantizeOptions(max_drop=0.5, speed_rounds=0))
    assert result.report.met is True and len(result.report.trials) == 1
    assert result.report.fp32_nodes == []


def test_an_impossible_budget_gives_up_with_the_best_model(tmp_path: Path) -> None:
    model = _outlier_mlp(tmp_path / "mlp.onnx")
    result = quantize(model, recipe=Recipe(method="weight-only", bits=2, granularity="tensor"),
                      evaluation=_data(model),
                      options=QuantizeOptions(metric="mae", max_drop=0.0, max_trials=3,
                                              speed_rounds=0, sweep_bits=()))
    report = result.report
    assert report.met is False and len(report.trials) == 3
    assert report.message.startswith("no recipe met the budget (drop <= 0) in 3 trial(s)")
    best = min(t["drop"] for t in report.trials)
    assert report.quantized["drop"] == best > 0
    assert len(report.fp32_nodes) <= 2  # never more than half of the 4 layers
