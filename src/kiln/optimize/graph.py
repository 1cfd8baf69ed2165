"""What the quantizers need to know about an ONNX graph: its weighted nodes and its kind.

A *weighted node* multiplies by a constant: ``MatMul``/``Gemm`` with an initializer as the
second input, ``Conv``/``ConvTranspose`` with an initializer as the weight, ``Gather`` on an
initializer table (an embedding). These are what quantization shrinks and speeds up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.errors import InvalidArgument

if TYPE_CHECKING:
    import onnx

    from kiln.optimize.recipe import Recipe

#: Op type -> the input index that holds the weight.
WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Conv": 1, "ConvTranspose": 1, "Gather": 0}
#: Op types each method quantizes by default (embeddings are opted in by ``Recipe.embeddings``
#: for the methods that can store them). Dynamic int8 leaves convolutions alone: ORT's
#: ConvInteger is slower than its FP32 convolution (0.1x on the digits CNN).
METHOD_OPS = {"dynamic": ("MatMul",), "static": ("MatMul", "Gemm", "Conv", "ConvTranspose"),
              "openvino": ("MatMul", "Gemm", "Conv", "ConvTranspose"),
              "weight-only": ("MatMul", "Gemm", "Conv", "ConvTranspose")}
_EMBEDDINGS = ("dynamic", "weight-only")


@dataclass(frozen=True, slots=True)
class WeightedNode:
    """A node that multiplies by (or looks up in) a constant weight."""

    name: str
    op_type: str
    weight: str
    #: The weight's output-channel axis (one scale per channel along it).
    channel_axis: int


def load(path: Path) -> onnx.ModelProto:
    """An ONNX model from disk, with a clear error when the file is not one."""
    import onnx

    try:
        return onnx.load(str(path))
    except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise InvalidArgument(f"'{path}' is not a readable ONNX model: {exc}") from None


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every unnamed node a unique name, so nodes can be excluded and ranked by name."""
    taken = {n.name for n in model.graph.node if n.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    return model


def weighted_nodes(model: onnx.ModelProto, op_types: tuple[str, ...]) -> list[WeightedNode]:
    """The nodes of ``op_types`` whose weight input is an initializer, in graph order."""
    initializers = {t.name: t for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        index = WEIGHT_INPUT.get(node.op_type)
        if node.op_type not in op_types or index is None or len(node.input) <= index:
            continue
        weight = initializers.get(node.input[index])
        if weight is None or len(weight.dims) < 2:
            continue
        found.append(WeightedNode(node.name, node.op_type, weight.name,
                                  _channel_axis(node, len(weight.dims))))
    return found


def _channel_axis(node: onnx.NodeProto, rank: int) -> int:
    if node.op_type in ("Conv", "Gather"):
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return rank - 1  # MatMul: [..., K, N], one column per output feature


def is_transformer(model: onnx.ModelProto) -> bool:
    """Attention-like graphs: a Softmax and layer normalisation (fused or as ReduceMean)."""
    ops = {n.op_type for n in model.graph.node}
    norm = bool(ops & {"LayerNormalization", "SkipLayerNormalization", "ReduceMean"})
    return ("Softmax" in ops or "Attention" in ops) and norm and "MatMul" in ops


def op_types(model: onnx.ModelProto, recipe: Recipe) -> tuple[str, ...]:
    """The op types ``recipe`` quantizes in ``model``: its own list, else the method's
    defaults present in the model (Gather when the method stores embeddings)."""
    if recipe.op_types:
        return recipe.op_types
    present = {n.op_type for n in model.graph.node}
    ops = [op for op in METHOD_OPS[recipe.method] if op in present]
    if recipe.embeddings and recipe.method in _EMBEDDINGS and "Gather" in present:
        ops.append("Gather")
    return tuple(ops)


def check_nodes_exist(model: onnx.ModelProto, names: tuple[str, ...]) -> None:
    """Every excluded node must exist, so a typo is not silently quantized."""
    known = {n.name for n in model.graph.node}
    missing = [n for n in names if n not in known]
    if missing:
        raise InvalidArgument(f"node(s) {', '.join(missing[:5])} are not in the model; "
                              "exclude nodes by their ONNX node names")
