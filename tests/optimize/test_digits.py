"""Numerics on the digits CNN: static int8 keeps accuracy; b-bit widths trade size for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.data import inputs
from kiln.optimize import CalibrationData, QuantizeOptions, Recipe, quantize
from kiln.optimize.api import model_signature


def _data(cnn: Path, files: tuple[Path, Path]) -> tuple[CalibrationData, inputs.Dataset]:
    signature = model_signature(cnn)
    return (CalibrationData.load(str(files[0]), signature),
            inputs.load(str(files[1]), signature, batch_size=64))


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_static_int8_stays_within_half_a_point_of_fp32(cnn: Path, digits_files: tuple[Path, Path],
                                                       method: str) -> None:
    calibration, evaluation = _data(cnn, digits_files)
    result = quantize(cnn, recipe=Recipe(method="static", calibration=method),
                      calibration=calibration,
                      evaluation=evaluation, options=QuantizeOptions(speed_rounds=2))
    report = result.report
    assert report.metric == "accuracy" and report.eval_samples == 360
    assert report.fp32["value"] > 0.9  # a real, trained classifier
    assert abs(report.quantized["drop"]) <= 0.5  # percentage points
    assert report.size_after < report.size_before / 2.5
    assert report.quantized["accuracy"] == report.quantized["value"]
    speed = report.speed
    assert speed["fp32"]["batch_size"] == 32 and speed["quantized"]["rows_per_s"] > 0
    assert f"static int8 per-channel {method}" in report.markdown()


def test_bbit_sweep_reports_every_width_per_tensor_and_per_channel(
        cnn: Path, digits_files: tuple[Path, Path]) -> None:
    _, evaluation = _data(cnn, digits_files)
    result = quantize(cnn, recipe=Recipe(method="weight-only", bits=4), evaluation=evaluation,
                      options=QuantizeOptions(speed_rounds=0))
    sweep = {(p.granularity, p.bits): p for p in result.report.sweep}
    assert set(sweep) == {(g, b) for g in ("tensor", "channel") for b in (8, 6, 4, 3, 2)}
    fp32 = result.report.fp32["value"]
    for granularity in ("tensor", "channel"):
        assert abs(sweep[granularity, 8].value - fp32) <= 0.005  # 8 bits: lossless
        sizes = [sweep[granularity, b].size_bytes for b in (8, 4, 2)]
        assert sizes[0] > sizes[1] > sizes[2]  # fewer bits, smaller file
        assert sweep[granularity, 2].value < sweep[granularity, 8].value
    assert sweep["channel", 3].value >= sweep["tensor", 3].value - 0.01
    assert result.report.size_after < result.report.size_before / 4  # 4-bit codes
    files = result.report.files(prefix="cnn.4bit.onnx.")
    assert set(files) == {"cnn.4bit.onnx.report.json", "cnn.4bit.onnx.report.md",
                          "cnn.4bit.onnx.bbit_sweep.svg"}
    svg = files["cnn.4bit.onnx.bbit_sweep.svg"].decode()
    assert svg.startswith("<svg") and svg.count("<path") > 20  # lines, markers, text as paths
