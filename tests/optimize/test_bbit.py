"""Weight-only b-bit quantization: the formula, the packed storage, the graph that unpacks it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from kiln.optimize import Recipe
from kiln.optimize.bbit import fake_quantize, pack, quantize_view, quantize_weights, unpack, view
from kiln.optimize.graph import name_nodes
from tests.models import mlp_model


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_codes_follow_the_formula_and_round_trip_within_one_step(bits: int,
                                                                 granularity: str) -> None:
    weight = np.random.default_rng(bits).standard_normal((48, 64)).astype(np.float32)
    shaped = view(weight, channel_axis=1, granularity=granularity, group_size=16)
    codes = quantize_view(shaped.astype(np.float64), bits)
    low = shaped.min(axis=-1, keepdims=True)
    high = shaped.max(axis=-1, keepdims=True)
    formula = np.round((shaped - low) / (high - low) * (2**bits - 1))
    assert np.array_equal(codes.codes, formula.astype(np.uint8))
    assert codes.codes.max() == 2**bits - 1 and codes.codes.min() == 0
    step = (high - low) / (2**bits - 1)
    error = np.abs(codes.dequantize() - shaped)
    assert np.all(error <= step * 0.5 + 1e-6)  # half a step: well within one
    ranges = {"tensor": (1, 1), "channel": (64, 1), "group": (64, 3)}[granularity]
    assert codes.step.shape[:2] == ranges


def test_per_channel_is_never_worse_than_per_tensor() -> None:
    weight = np.random.default_rng(0).standard_normal((32, 16)) * np.linspace(0.01, 10, 16)
    for bits in (2, 4, 8):
        tensor = np.abs(fake_quantize(weight, bits=bits, granularity="tensor", channel_axis=1)
                        - weight).max(axis=0)
        channel = np.abs(fake_quantize(weight, bits=bits, granularity="channel",
                                       channel_axis=1) - weight).max(axis=0)
        assert np.all(channel <= tensor + 1e-9)


@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_unpack_is_lossless_and_compact(bits: int) -> None:
    codes = np.random.default_rng(bits).integers(0, 2**bits, size=1001).astype(np.uint8)
    packed = pack(codes, bits)
    assert packed.nbytes == -(-1001 * {2: 2, 3: 4, 4: 4}.get(bits, 8) // 8)
    assert np.array_equal(unpack(packed, bits, codes.size), codes)


@pytest.mark.parametrize(("bits", "granularity"), [(8, "tensor"), (4, "channel"),
                                                   (3, "group"), (2, "channel")])
def test_graph_holds_packed_codes_and_runs_the_dequantized_weights(
        tmp_path: Path, bits: int, granularity: str) -> None:
    model = name_nodes(mlp_model((64, 128, 96, 10)))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    names = quantize_weights(model, Recipe(method="weight-only", bits=bits,
                                           granularity=granularity, group_size=32))
    assert names == ["Gemm_0", "Gemm_2", "Gemm_4"]
    initializers = {t.name: t for t in model.graph.initializer}
    assert not {"w0", "w1", "w2"} & set(initializers)  # FP32 weights gone
    packed = numpy_helper.to_array(initializers["w1_k_packed"])
    assert packed.dtype == np.uint8 and packed.size == 128 * 96 * {2: 2, 3: 4}.get(bits, bits) // 8
    onnx.checker.check_model(model)
    # The same MLP with every weight replaced by its formula round trip gives the same outputs.
    expected_model = mlp_model((64, 128, 96, 10))
    for tensor in expected_model.graph.initializer:
        if tensor.name.startswith("w"):
            tensor.CopyFrom(numpy_helper.from_array(fake_quantize(
                weights[tensor.name], bits=bits, granularity=granularity, channel_axis=1,
                group_size=32), tensor.name))
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    want = ort.InferenceSession(expected_model.SerializeToString()).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_excluded_nodes_keep_their_float_weights() -> None:
    model = name_nodes(mlp_model())
    names = quantize_weights(model, Recipe(method="weight-only", bits=4,
                                           exclude_nodes=("Gemm_2",)))
    assert names == ["Gemm_0", "Gemm_4"]
    initializers = {t.name: t for t in model.graph.initializer}
    assert initializers["w1"].data_type == onnx.TensorProto.FLOAT
    assert "w0" not in initializers and "w0_k_packed" in initializers
