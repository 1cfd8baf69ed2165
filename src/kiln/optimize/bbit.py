"""Weight-only b-bit quantization (b = 2..8) with the asymmetric min-max formula.

Each range (a whole tensor, one output channel, or a group of ``group_size`` weights of one
channel along the input dimension) is mapped to b-bit codes with::

    Q(x) = round((x - x_min) / (x_max - x_min) * (2^b - 1))

and dequantized as the formula's inverse, ``x_min + Q(x) * step`` with
``step = (x_max - x_min) / (2^b - 1)``: within half a step of ``x``, with no systematic shift.
(An integer zero point, which integer kernels need, would move every weight of a range by up
to half a step in the same direction; weight-only models compute in FP32 and need none.)

Storage: codes packed into bytes (four 2-bit, two 3- or 4-bit, or one 5- to 8-bit code per
byte) plus one FP32 step and minimum per range. A small subgraph of standard ops (BitShift,
Concat, Slice, Cast, Mul, Add, Reshape, Transpose; opset 11+) unpacks each weight under its
original name, and ONNX Runtime folds it into an FP32 constant when the session loads: the
file is small, compute stays FP32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kiln.optimize.graph import WeightedNode, op_types, weighted_nodes
from kiln.optimize.recipe import Recipe

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True, slots=True)
class Codes:
    """A weight quantized in its ``view`` shape ``(ranges, groups, values)``."""

    codes: np.ndarray  # uint8, the view's shape
    step: np.ndarray  # float32, (ranges, groups, 1)
    low: np.ndarray  # float32 x_min, (ranges, groups, 1)
    bits: int

    def dequantize(self) -> np.ndarray:
        values: np.ndarray = self.codes.astype(np.float32) * self.step + self.low
        return values.astype(np.float32)


def view(weight: np.ndarray, *, channel_axis: int, granularity: str,
         group_size: int) -> np.ndarray:
    """``weight`` as ``(ranges, groups, values)``: one min-max range per ``[r, g, :]``.

    Channels move to the front; ``group`` splits each channel's values into groups of
    ``group_size`` (per channel when the count does not divide evenly).
    """
    moved = np.moveaxis(weight, channel_axis, 0)
    channels = moved.shape[0]
    flat = moved.reshape(channels, -1)
    if granularity == "tensor":
        return flat.reshape(1, 1, -1)
    if granularity == "group" and flat.shape[1] % group_size == 0 and flat.shape[1] > group_size:
        return flat.reshape(channels, -1, group_size)
    return flat.reshape(channels, 1, -1)


def quantize_view(values: np.ndarray, bits: int) -> Codes:
    """Codes of a ``(ranges, groups, values)`` array by the min-max formula."""
    levels = 2**bits - 1
    low = values.min(axis=-1, keepdims=True).astype(np.float64)
    high = values.max(axis=-1, keepdims=True).astype(np.float64)
    span = np.where(high > low, high - low, 1.0)
    codes = np.round((values - low) / span * levels)
    return Codes(codes.astype(np.uint8), (span / levels).astype(np.float32),
                 low.astype(np.float32), bits)


def fake_quantize(weight: np.ndarray, *, bits: int, granularity: str = "channel",
                  channel_axis: int = 0, group_size: int = 32) -> np.ndarray:
    """``weight`` quantized to b bits and back, in its own shape (for sweeps and checks)."""
    shaped = view(weight, channel_axis=channel_axis, granularity=granularity,
                  group_size=group_size)
    moved = np.moveaxis(weight, channel_axis, 0)
    restored = quantize_view(shaped, bits).dequantize().reshape(moved.shape)
    return np.moveaxis(restored, 0, channel_axis)


def quantize_weights(model: onnx.ModelProto, recipe: Recipe) -> list[str]:
    """Replace every eligible weight of ``model`` with packed b-bit codes (in place); returns
    the names of the quantized nodes."""
    from onnx import numpy_helper

    ops = op_types(model, recipe)
    nodes = [n for n in weighted_nodes(model, ops) if n.name not in recipe.exclude_nodes]
    kept = {n.weight for n in weighted_nodes(model, ops) if n.name in recipe.exclude_nodes}
    initializers = {t.name: t for t in model.graph.initializer}
    done: dict[str, WeightedNode] = {}
    new_nodes: list[onnx.NodeProto] = []
    for node in nodes:
        if node.weight in done or node.weight in kept:
            continue
        weight = numpy_helper.to_array(initializers[node.weight])
        shaped = view(weight, channel_axis=node.channel_axis, granularity=recipe.granularity,
                      group_size=recipe.group_size)
        codes = quantize_view(shaped.astype(np.float64), recipe.bits)
        model.graph.initializer.remove(initializers[node.weight])
        new_nodes += _unpacking(model, node, weight.shape, codes)
        done[node.weight] = node
    for position, new in enumerate(new_nodes):
        model.graph.node.insert(position, new)
    return [n.name for n in nodes if n.weight in done]


def storage_bits(bits: int) -> int:
    """Bits each code takes in the file: 2, 4 or 8."""
    return 2 if bits == 2 else 4 if bits <= 4 else 8


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Flat codes packed into bytes: chunk ``i`` of the codes sits at bit ``i * width``."""
    width = storage_bits(bits)
    per_byte = 8 // width
    flat = codes.reshape(-1).astype(np.uint8)
    chunk = -(-flat.size // per_byte)
    padded = np.zeros(chunk * per_byte, np.uint8)
    padded[:flat.size] = flat
    parts = padded.reshape(per_byte, chunk)
    packed = np.zeros(chunk, np.uint8)
    for i in range(per_byte):
        packed |= (parts[i] << (width * i)).astype(np.uint8)
    return packed


def unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The inverse of ``pack`` (what the graph's unpacking subgraph computes)."""
    width = storage_bits(bits)
    parts = [(packed << (8 - width * (i + 1))) >> (8 - width) for i in range(8 // width)]
    return np.concatenate(parts).astype(np.uint8)[:count]


def _unpacking(model: onnx.ModelProto, node: WeightedNode, shape: tuple[int, ...],
               codes: Codes) -> list[onnx.NodeProto]:
    """Initializers and nodes that rebuild the FP32 weight under its original name."""
    from onnx import helper, numpy_helper

    name, width = node.weight, storage_bits(codes.bits)
    moved = (shape[node.channel_axis], *np.delete(np.array(shape), node.channel_axis))

    def constant(suffix: str, value: np.ndarray) -> str:
        model.graph.initializer.append(numpy_helper.from_array(value, f"{name}_k_{suffix}"))
        return f"{name}_k_{suffix}"

    packed = constant("packed", pack(codes.codes, codes.bits))
    nodes, parts = _shifts(name, packed, width, constant)
    count = codes.codes.size
    nodes += [
        helper.make_node("Concat", parts, [f"{name}_all"], axis=0),
        helper.make_node("Slice", [f"{name}_all", constant("start", np.array([0])),
                                   constant("end", np.array([count]))], [f"{name}_codes"]),
        helper.make_node("Reshape", [f"{name}_codes", constant("view", np.array(
            codes.codes.shape))], [f"{name}_view"]),
        helper.make_node("Cast", [f"{name}_view"], [f"{name}_float"], to=1),
        helper.make_node("Mul", [f"{name}_float", constant("step", codes.step)],
                         [f"{name}_steps"]),
        helper.make_node("Add", [f"{name}_steps", constant("low", codes.low)],
                         [f"{name}_scaled"]),
    ]
    final = name if node.channel_axis == 0 else f"{name}_moved"
    nodes.append(helper.make_node("Reshape", [f"{name}_scaled", constant(
        "shape", np.array(moved))], [final]))
    if node.channel_axis != 0:
        order = list(range(1, len(shape)))
        order.insert(node.channel_axis, 0)
        nodes.append(helper.make_node("Transpose", [final], [name], perm=order))
    for new in nodes:
        new.name = f"{new.output[0]}_{new.op_type}"
    return nodes


def _shifts(name: str, packed: str, width: int,
            constant: Callable[[str, np.ndarray], str]) -> tuple[list[onnx.NodeProto], list[str]]:
    """BitShift pairs that cut each ``width``-bit chunk out of the packed bytes."""
    from onnx import helper

    nodes, parts = [], []
    for i in range(8 // width):
        left = constant(f"shl{i}", np.array([8 - width * (i + 1)], np.uint8))
        right = constant(f"shr{i}", np.array([8 - width], np.uint8))
        nodes += [helper.make_node("BitShift", [packed, left], [f"{name}_l{i}"], direction="LEFT"),
                  helper.make_node("BitShift", [f"{name}_l{i}", right], [f"{name}_p{i}"],
                                   direction="RIGHT")]
        parts.append(f"{name}_p{i}")
    return nodes, parts
