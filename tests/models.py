"""Real ONNX models the tests build in code (no downloads)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kiln.tensors import DataType

OPSET = 17

#: Every V2 datatype that ONNX Runtime can pass through Identity on the CPU.
IDENTITY_TYPES = [d for d in DataType if d is not DataType.BF16]


def _onnx_type(datatype: DataType) -> int:
    return helper.np_dtype_to_tensor_dtype(datatype.numpy) if datatype is not DataType.BYTES \
        else TensorProto.STRING


def save(model: onnx.ModelProto, repo: Path, name: str, version: int = 1,
         config: str | None = None, config_name: str = "config.yaml") -> Path:
    """Write ``model`` into ``repo/name/version/model.onnx`` (and a config when given)."""
    onnx.checker.check_model(model)
    folder = repo / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    if config is not None:
        (repo / name / config_name).write_text(config)
    return folder / "model.onnx"


def identity_model(datatypes: list[DataType] | None = None, *, batch: bool = True,
                   dynamic_width: bool = False) -> onnx.ModelProto:
    """One Identity per datatype: input ``in_<TYPE>`` -> output ``out_<TYPE>``, shape [B, 4]
    (``dynamic_width``: [B, W])."""
    datatypes = datatypes or IDENTITY_TYPES
    dims: list[int | str] = ["batch", "width" if dynamic_width else 4] if batch else [2, 4]
    inputs, outputs, nodes = [], [], []
    for d in datatypes:
        t = _onnx_type(d)
        inputs.append(helper.make_tensor_value_info(f"in_{d.v2}", t, dims))
        outputs.append(helper.make_tensor_value_info(f"out_{d.v2}", t, dims))
        nodes.append(helper.make_node("Identity", [f"in_{d.v2}"], [f"out_{d.v2}"]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def mlp_model(sizes: tuple[int, ...] = (64, 256, 256, 10), seed: int = 0) -> onnx.ModelProto:
    """A float MLP ``input [B, sizes[0]] -> output [B, sizes[-1]]`` with ReLU between layers."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "input"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(sizes) - 2
        out = "output" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"],
                                      [out if last else f"g{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        current = out
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", sizes[-1]])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def add_sub_model() -> onnx.ModelProto:
    """Triton's classic example: INPUT0, INPUT1 [B, 16] FP32 -> OUTPUT0 = a+b, OUTPUT1 = a-b."""
    dims: list[int | str] = ["batch", 16]
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
         helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])],
        "add_sub",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, dims),
         helper.make_tensor_value_info("INPUT1", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, dims),
         helper.make_tensor_value_info("OUTPUT1", TensorProto.FLOAT, dims)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def dense_softmax_model(features: int = 784, classes: int = 10, *, seed: int = 0,
                        input_name: str = "pixels",
                        output_name: str = "probabilities") -> onnx.ModelProto:
    """A dense classifier ``[B, features] -> softmax [B, classes]`` (the shape of a Keras MNIST
    model served with a ``serving_default`` signature); weights from ``dense_softmax_weights``."""
    w, b = dense_softmax_weights(features, classes, seed=seed)
    graph = helper.make_graph(
        [helper.make_node("Gemm", [input_name, "w", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], [output_name], axis=-1)],
        "dense_softmax",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def dense_softmax_weights(features: int, classes: int, *,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((features, classes)) / np.sqrt(features)).astype(np.float32)
    return w, (rng.standard_normal(classes) * 0.1).astype(np.float32)


def offset_model(offset: float) -> onnx.ModelProto:
    """``y = x + offset`` on ``x [B, 4]`` FP32: versions that answer differently."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "offset"], ["y"])], "offset",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.array([offset], np.float32), "offset")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
