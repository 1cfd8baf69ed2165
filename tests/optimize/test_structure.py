"""The quantized graphs hold the expected quantized ops, and excluded nodes stay float."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from kiln.errors import InvalidArgument
from kiln.optimize import CalibrationData, Recipe
from kiln.optimize.api import model_signature
from kiln.optimize.build import build_model
from kiln.optimize.graph import name_nodes, weighted_nodes
from tests.models import mlp_model


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _float_initializers(model: onnx.ModelProto) -> set[str]:
    return {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}


def test_static_cnn_quantizes_every_conv_and_gemm_but_the_excluded(
        cnn: Path, digits_files: tuple[Path, Path], tmp_path: Path) -> None:
    model = name_nodes(onnx.load(str(cnn)))
    named = tmp_path / "named.onnx"
    onnx.save(model, str(named))
    nodes = weighted_nodes(model, ("Conv", "Gemm", "MatMul"))
    assert [n.op_type for n in nodes].count("Conv") == 3
    excluded = nodes[1].name
    calibration = CalibrationData.load(str(digits_files[0]), model_signature(cnn), limit=64)
    out = tmp_path / "static.onnx"
    quantized = build_model(named, Recipe(method="static", exclude_nodes=(excluded,)), out,
                            calibration)
    assert excluded not in quantized and len(quantized) == len(nodes) - 1
    result = onnx.load(str(out))
    ops = Counter(n.op_type for n in result.graph.node)
    assert ops["QuantizeLinear"] >= 4 and ops["DequantizeLinear"] >= 8
    producers, floats = _producers(result), _float_initializers(result)
    for node in result.graph.node:
        if node.name in quantized:  # activation and weight both arrive dequantized from int8
            assert producers[node.input[0]].op_type == "DequantizeLinear", node.name
            assert producers[node.input[1]].op_type == "DequantizeLinear", node.name
        if node.name == excluded:
            assert node.input[1] in floats  # the FP32 weight, untouched
            assert producers[node.input[0]].op_type != "DequantizeLinear"
    weights = [t for t in result.graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    assert len(weights) == len(nodes) - 1  # int8 weights
    scales = {n.input[1] for n in result.graph.node if n.op_type == "DequantizeLinear"
              and n.input[0] in {w.name for w in weights}}
    assert all(len(next(t for t in result.graph.initializer if t.name == s).dims) == 1
               for s in scales)  # one scale per output channel


def test_dynamic_minilm_uses_integer_matmuls_and_keeps_excluded_float(
        minilm: Path, tmp_path: Path) -> None:
    model = name_nodes(onnx.load(str(minilm)))
    named = tmp_path / "named.onnx"
    onnx.save(model, str(named))
    linear = weighted_nodes(model, ("MatMul",))
    assert len(linear) == 36  # 6 layers x (Q, K, V, attention out, FFN in, FFN out)
    excluded = linear[-1].name
    out = tmp_path / "dynamic.onnx"
    quantized = build_model(named, Recipe(method="dynamic", exclude_nodes=(excluded,)), out, None)
    result = onnx.load(str(out))
    ops = Counter(n.op_type for n in result.graph.node)
    assert ops["MatMulInteger"] == 35 and ops["DynamicQuantizeLinear"] >= 1
    assert ops["MatMul"] >= 1 + 12  # the excluded one and the attention (activation) MatMuls
    kept = next(n for n in result.graph.node if n.name == excluded)
    assert kept.op_type == "MatMul" and kept.input[1] in _float_initializers(result)
    assert len(quantized) == 35 + 3  # + the three embedding tables (Gather)
    assert out.stat().st_size < minilm.stat().st_size / 3.5


def test_static_minilm_smooths_and_leaves_matmul_outputs_float(minilm: Path,
                                                               tmp_path: Path) -> None:
    from kiln.convert.minilm import tokenize
    from tests.sentences import sentences

    model = name_nodes(onnx.load(str(minilm)))
    named = tmp_path / "named.onnx"
    onnx.save(model, str(named))
    calibration = CalibrationData([tokenize([t]) for t in sentences(16, 1200)], source="docs")
    out = tmp_path / "static.onnx"
    build_model(named, Recipe(method="static", smoothquant_alpha=0.95), out, calibration)
    result = onnx.load(str(out))
    smooth = [n for n in result.graph.node if n.name.endswith("_smooth")]
    # per layer: one shared by Q, K and V, one each for attention-out, FFN-in and FFN-out
    assert len(smooth) == 6 * 4
    producers = _producers(result)
    linear = {n.name for n in weighted_nodes(model, ("MatMul",))}
    consumers = Counter(i for n in result.graph.node if n.op_type == "QuantizeLinear"
                        for i in n.input[:1])
    for node in result.graph.node:
        if node.op_type == "MatMul" and node.name in linear:
            assert producers[node.input[0]].op_type == "DequantizeLinear"
            assert consumers[node.output[0]] == 0  # its output stays FP32
        elif node.op_type == "MatMul":  # attention scores: two activations, not quantized
            assert all(producers[i].op_type != "DequantizeLinear" for i in node.input)


def test_a_model_without_the_method_s_ops_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    onnx.save(name_nodes(mlp_model()), str(path))
    with pytest.raises(InvalidArgument, match="no weighted MatMul node"):
        build_model(path, Recipe(method="dynamic"), tmp_path / "out.onnx", None)


def test_generated_calibration_fits_the_signature(cnn: Path) -> None:
    data = CalibrationData.generated(model_signature(cnn), count=3)
    assert len(data) == 3 and data.source == "generated"
    first = data.get_next()
    assert first is not None and first["image"].shape == (1, 1, 8, 8)
    assert data.get_next() is not None and data.get_next() is not None
    assert data.get_next() is None
    data.rewind()
    assert np.array_equal(data.get_next()["image"], first["image"])  # type: ignore[index]
