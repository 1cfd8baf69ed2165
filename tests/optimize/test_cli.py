"""``kiln optimize quantize`` as a user runs it: repository output, exit codes, messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml


def _kiln(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiln.cli.main", "optimize", "quantize", *args],
                          capture_output=True, text=True, timeout=300, check=False)


def test_static_into_a_repository_with_the_recipe_in_the_manifest(
        cnn: Path, digits_files: tuple[Path, Path], tmp_path: Path) -> None:
    calibration, evaluation = digits_files
    done = _kiln(str(cnn), "--repository", str(tmp_path / "repo"), "--name", "digits_int8",
                 "--version", "3", "--method", "static", "--calibration", str(calibration),
                 "--eval", str(evaluation), "--max-drop", "0.5", "--speed-rounds", "2", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["met"] is True and report["recipe"]["method"] == "static"
    folder = tmp_path / "repo" / "digits_int8"
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["backend"] == "onnxruntime" and config["max_batch_size"] == 64
    manifest = json.loads((folder / "3" / "manifest.json").read_text())
    assert manifest["optimization"]["recipe"]["per_channel"] is True
    assert manifest["optimization"]["recipe"]["calibration"] == "minmax"
    assert manifest["optimization"]["fp32_nodes"] == []
    assert manifest["files"]["model.onnx"]["bytes"] == (folder / "3" / "model.onnx").stat().st_size
    assert manifest["source"]["quantized_from"] == str(cnn)
    assert "| size |" in (folder / "3" / "report.md").read_text()


def test_a_missed_budget_exits_3_and_still_writes_the_best(
        cnn: Path, digits_files: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "cnn.2bit.onnx"
    done = _kiln(str(cnn), "-o", str(out), "--method", "weight-only", "--bits", "2",
                 "--granularity", "tensor", "--eval", str(digits_files[1]), "--metric", "mae",
                 "--max-drop", "0", "--max-trials", "2", "--no-sweep", "--speed-rounds", "0")
    assert done.returncode == 3, done.stderr
    assert "no recipe met the budget" in done.stdout
    assert out.is_file() and out.with_name(out.name + ".manifest.json").is_file()
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert report["met"] is False and len(report["trials"]) == 2


def test_bad_options_exit_2_and_unknown_nodes_are_named(cnn: Path, tmp_path: Path) -> None:
    done = _kiln(str(cnn), "--repository", str(tmp_path))
    assert done.returncode == 2 and "--repository needs --name" in done.stderr
    done = _kiln(str(cnn), "-o", str(tmp_path / "x.onnx"), "--method", "dynamic",
                 "--exclude-node", "no_such_node")
    assert done.returncode == 1
    assert "no_such_node" in done.stderr and "nothing written" in done.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_auto_with_only_eval_data_calibrates_on_its_first_rows(
        cnn: Path, digits_files: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "cnn.auto.onnx"
    done = _kiln(str(cnn), "-o", str(out), "--eval", str(digits_files[1]), "--max-drop", "1",
                 "--speed-rounds", "1", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # progress bars stay on stderr
    assert report["recipe"]["method"] == "openvino" and report["backend"] == "openvino"
    assert report["calibration_source"].endswith("(first 128 rows)")
    assert report["eval_source"].endswith("(rows 129-360)")
    assert report["met"] is True and abs(report["quantized"]["drop"]) <= 1
