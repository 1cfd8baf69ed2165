"""The shared parts of kiln.convert on tiny ONNX models built in code: parity, inputs,
graph edits, config and manifest writing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from kiln.convert import ConversionError, ConversionResult, SourceInfo, Tolerance
from kiln.convert.graph import rename_values
from kiln.convert.inputs import InputSet, export_sample, generate, parity_sets, parse_tensor_spec
from kiln.convert.parity import check_parity
from kiln.errors import ConfigError, InvalidArgument
from kiln.repository.autocomplete import config_for
from kiln.repository.config import dump_yaml, load_yaml_config
from kiln.runtime.base import ModelArtifact, SessionOptions
from kiln.runtime.onnx import OnnxRuntimeBackend, OnnxSession
from kiln.tensors import DataType, Signature, TensorSpec
from tests.models import OPSET, add_sub_model

A = np.arange(32, dtype=np.float32).reshape(2, 16)
B = np.ones((2, 16), np.float32)


def _session(model: onnx.ModelProto) -> OnnxSession:
    artifact = ModelArtifact(path=Path("m.onnx"), content=model.SerializeToString())
    return OnnxRuntimeBackend().load(artifact, SessionOptions())


def test_parity_passes_within_tolerance_and_reports_the_worst_set() -> None:
    session = _session(add_sub_model())
    sets = [InputSet("small", {"INPUT0": A, "INPUT1": B}),
            InputSet("large", {"INPUT0": A * 100, "INPUT1": B})]
    report = check_parity(session, lambda t: [(t["INPUT0"] + t["INPUT1"]).astype(float) + 5e-5,
                                              t["INPUT0"] - t["INPUT1"]], sets)
    assert report.passed and report.input_sets == ("small", "large")
    first = report.outputs[0]
    assert first.name == "OUTPUT0" and first.datatype == "FP32"
    assert first.max_abs_error == pytest.approx(5e-5) and first.worst == "large"
    assert report.outputs[1].max_abs_error == 0.0


def test_parity_failure_names_output_figures_and_set() -> None:
    session = _session(add_sub_model())
    sets = [InputSet("examples", {"INPUT0": A, "INPUT1": B})]
    report = check_parity(session, lambda t: [t["INPUT0"] + t["INPUT1"],
                                              t["INPUT0"] - t["INPUT1"] + 0.5], sets,
                          {DataType.FP32: Tolerance(0.1, 0.0)})
    assert [o.name for o in report.failures()] == ["OUTPUT1"]
    assert report.outputs[1].max_abs_error == pytest.approx(0.5)
    assert report.describe_failures() == (
        "output 'OUTPUT1' (FP32): max abs error 0.5, max rel error 1 exceed atol 0.1 / "
        "rtol 0 (first failing set: examples)")


def test_parity_shape_mismatch_and_runtime_refusal_fail() -> None:
    session = _session(add_sub_model())
    sets = [InputSet("ok", {"INPUT0": A, "INPUT1": B}),
            InputSet("bad", {"INPUT0": A, "INPUT1": np.ones((3, 16), np.float32)})]
    report = check_parity(session, lambda t: [(t["INPUT0"] + t["INPUT1"]).ravel(),
                                              t["INPUT0"] - t["INPUT1"]], sets)
    assert report.outputs[0].worst == "ok: shape [2, 16], the original gives [32]"
    assert report.outputs[1].worst.startswith("bad: ONNX Runtime refused it")
    assert not report.passed


def test_parity_integers_must_be_equal_and_output_count_must_agree() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "id",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["b"])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["b"])])
    session = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]))
    sets = [InputSet("s", {"x": np.array([1, 2], np.int64)})]
    assert not check_parity(session, lambda t: [t["x"] + 1], sets).passed
    assert check_parity(session, lambda t: [t["x"]], sets).passed
    with pytest.raises(ConversionError, match="returned 2 output"):
        check_parity(session, lambda t: [t["x"], t["x"]], sets)


def test_parse_tensor_spec() -> None:
    assert parse_tensor_spec("pixels:FP32:-1,784") == TensorSpec("pixels", DataType.FP32,
                                                                 (-1, 784))
    assert parse_tensor_spec("ids:TYPE_INT64:-1,-1").datatype is DataType.INT64
    for bad in ("pixels", "pixels:FP32:a,b", ":FP32:1"):
        with pytest.raises(InvalidArgument, match=f"input '{bad}'"):
            parse_tensor_spec(bad)


def test_generated_inputs_share_dynamic_lengths_and_keep_example_ranges() -> None:
    specs = [TensorSpec("ids", DataType.INT64, (-1, -1)),
             TensorSpec("mask", DataType.INT64, (-1, -1)),
             TensorSpec("x", DataType.FP32, (-1, 3))]
    examples = {"ids": np.array([[101, 2000, 102]], np.int64),
                "mask": np.ones((1, 3), np.int64), "x": np.full((1, 3), 0.5, np.float32)}
    rng = np.random.default_rng(0)
    sets = parity_sets(specs, examples, (1, 2, 16), rng)
    assert [s.label for s in sets] == ["examples", "generated batch 1", "generated batch 2",
                                       "generated batch 16"]
    shapes = [(s.tensors["ids"].shape, s.tensors["mask"].shape) for s in sets[1:]]
    assert shapes == [((1, 3), (1, 3)), ((2, 7), (2, 7)), ((16, 3), (16, 3))]
    big = sets[-1].tensors
    assert big["ids"].min() >= 101 and big["ids"].max() <= 2000
    assert np.all(big["mask"] == 1) and np.all(big["x"] == 0.5)
    sample = export_sample(specs, examples, rng)
    assert sample["ids"].shape == (2, 3)
    generated = generate(specs[2:], None, batch=4, length=8, rng=rng)
    assert generated["x"].shape == (4, 3) and generated["x"].dtype == np.float32


def test_rename_moves_a_clashing_inner_value_aside() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["embedding"]),
         helper.make_node("Neg", ["embedding"], ["out"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    rename_values(model, {"out": "embedding"})
    onnx.checker.check_model(model)
    assert [n.output[0] for n in model.graph.node] == ["embedding_0", "embedding"]
    assert model.graph.node[1].input[0] == "embedding_0"
    (result,) = _session(model).run({"x": np.array([-1, 2], np.float32)}).values()
    assert result.tolist() == [0, -2]


def _result() -> ConversionResult:
    from kiln.convert.parity import ParityReport

    session = _session(add_sub_model())
    return ConversionResult(
        model=add_sub_model(), signature=session.signature, parity=ParityReport((), ("x",)),
        source=SourceInfo("onnx", "1", "none", "1", "tests.models.add_sub_model"), opset=OPSET)


def test_repository_version_config_and_manifest(tmp_path: Path) -> None:
    result = _result()
    folder = result.save_to_repository(tmp_path, name="add_sub", version=1)
    config = load_yaml_config(tmp_path / "add_sub" / "config.yaml")
    assert config.max_batch_size == 64 and config.backend == "onnxruntime"
    assert [(t.name, t.datatype, t.dims) for t in config.inputs or []] == [
        ("INPUT0", DataType.FP32, [16]), ("INPUT1", DataType.FP32, [16])]
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / "model.onnx").read_bytes()
    assert manifest["files"] == {"model.onnx": {"sha256": hashlib.sha256(data).hexdigest(),
                                                "bytes": len(data)}}
    assert manifest["format"] == "kiln-manifest/1"
    assert sorted(p.name for p in (tmp_path / "add_sub").iterdir()) == ["1", "config.yaml"]
    with pytest.raises(ConfigError, match="already exists"):
        result.save_to_repository(tmp_path, name="add_sub", version=1)
    (tmp_path / "add_sub" / "config.yaml").write_text("max_batch_size: 0\n")
    result.save_to_repository(tmp_path, name="add_sub", version=2)
    assert (tmp_path / "add_sub" / "config.yaml").read_text() == "max_batch_size: 0\n"
    (tmp_path / "add_sub" / "config.yaml").write_text(
        "inputs: [{name: INPUT0, datatype: INT32, dims: [16]}]\n")
    with pytest.raises(ConfigError, match="datatype INT32 but the model has FP32"):
        result.save_to_repository(tmp_path, name="add_sub", version=3)
    assert not (tmp_path / "add_sub" / "3").exists()


def test_model_file_and_config_without_batch(tmp_path: Path) -> None:
    path = _result().save(tmp_path / "out" / "add_sub.onnx")
    manifest = json.loads((tmp_path / "out" / "add_sub.onnx.manifest.json").read_text())
    assert list(manifest["files"]) == ["add_sub.onnx"] and "model" not in manifest
    onnx.checker.check_model(onnx.load(path))
    fixed = Signature(inputs=(TensorSpec("x", DataType.FP32, (2, 4)),), outputs=())
    config = config_for(fixed, name="m", max_batch_size=None)
    assert config.max_batch_size == 0 and config.dynamic_batching is None
    assert b"dims:\n  - 2\n  - 4" in dump_yaml(config)
    with pytest.raises(ConfigError, match="x have a fixed one"):
        config_for(fixed, name="m", max_batch_size=8)
