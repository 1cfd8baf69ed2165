"""SmoothQuant on an ONNX graph: move activation outliers into the weights before int8.

Transformer activations have a few channels with very large values; one int8 scale per
tensor then flattens every other channel. SmoothQuant (Xiao et al., 2022) divides each input
channel ``k`` of a MatMul's activation by ``s_k`` and multiplies row ``k`` of the weight by
it, which leaves the product unchanged::

    s_k = max|X_k| ** alpha / max|W_k,:| ** (1 - alpha)

MatMuls that read the same activation (Q, K and V) share one ``s``. The division is an
inserted ``Mul`` by ``1 / s`` (kept in FP32); the weights are rescaled in place. On MiniLM
this lifts static int8 from mean cosine 0.990 to 0.998 at alpha 0.95.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from kiln.optimize.calibration import CalibrationData
from kiln.optimize.graph import WeightedNode
from kiln.optimize.probe import fold

if TYPE_CHECKING:
    import onnx

_CLIP = (1e-5, 1e5)


def smooth(model: onnx.ModelProto, nodes: list[WeightedNode], calibration: CalibrationData,
           *, alpha: float) -> onnx.ModelProto:
    """``model`` with every group of 2-D-weight MatMuls smoothed (changed in place)."""
    from onnx import helper, numpy_helper

    groups = _groups(model, nodes)
    if not groups:
        return model
    maxima = fold(model, list(groups), calibration,
                  reduce=lambda v: np.abs(v).reshape(-1, v.shape[-1]).max(axis=0),
                  combine=np.maximum)
    initializers = {t.name: t for t in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    for activation, members in groups.items():
        weights = [numpy_helper.to_array(initializers[m.weight]) for m in members]
        scale = _scales(np.asarray(maxima[activation]), weights, alpha)
        smoothed, factor = f"{activation}_smoothed", f"{activation}_smooth_factor"
        model.graph.initializer.append(
            numpy_helper.from_array((1.0 / scale).astype(np.float32), factor))
        model.graph.node.append(helper.make_node("Mul", [activation, factor], [smoothed],
                                                 name=f"{activation}_smooth"))
        for member, weight in zip(members, weights, strict=True):
            by_name[member.name].input[0] = smoothed
            initializers[member.weight].CopyFrom(numpy_helper.from_array(
                (weight * scale[:, None]).astype(np.float32), member.weight))
    _topological_sort(model)
    return model


def _groups(model: onnx.ModelProto, nodes: list[WeightedNode]) -> dict[str, list[WeightedNode]]:
    """MatMuls with a 2-D weight used by no other node, grouped by their activation input."""
    uses: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        for name in node.input:
            uses[name] += 1
    ranks = {t.name: len(t.dims) for t in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    groups: dict[str, list[WeightedNode]] = defaultdict(list)
    for weighted in nodes:
        if weighted.op_type == "MatMul" and ranks.get(weighted.weight) == 2 \
                and uses[weighted.weight] == 1:
            groups[by_name[weighted.name].input[0]].append(weighted)
    return dict(groups)


def _scales(activation_max: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    weight_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    scale = np.power(np.maximum(activation_max, 1e-8), alpha) / np.power(
        np.maximum(weight_max, 1e-8), 1.0 - alpha)
    scale = np.where((activation_max > 0) & (weight_max > 0), scale, 1.0)
    return np.clip(scale, *_CLIP).astype(np.float64)


def _topological_sort(model: onnx.ModelProto) -> None:
    """Reorder the nodes so each comes after the producers of its inputs."""
    ready = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    ready.add("")
    pending, ordered = list(model.graph.node), []
    while pending:
        remaining = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):  # a cycle or an outer-scope input: keep order
            ordered += remaining
            break
        pending = remaining
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del model.graph.node[:]
    model.graph.node.extend(copies)
