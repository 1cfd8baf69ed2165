"""Small edits and checks on an exported ONNX graph, shared by the framework converters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kiln.convert.base import ConversionError

if TYPE_CHECKING:
    import onnx


def rename_values(model: onnx.ModelProto, renames: dict[str, str]) -> None:
    """Rename graph inputs/outputs (``old -> new``) everywhere they are used, in place.

    NOTE: an exporter may already use a wanted name for an inner value (torch's exporter
    calls the word-embedding lookup ``embedding``); such a value is renamed out of the way
    first, so the graph never holds two definitions of one name.
    """
    renames = {old: new for old, new in renames.items() if old != new}
    if not renames:
        return
    graph = model.graph
    taken = _value_names(model)
    clashes = {new: _free_name(new, taken) for new in renames.values()
               if new in taken and new not in renames}
    mapping = {**clashes, **renames}
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for info in [*graph.input, *graph.output, *graph.value_info]:
        info.name = mapping.get(info.name, info.name)
    for tensor in graph.initializer:
        tensor.name = mapping.get(tensor.name, tensor.name)


def name_outputs(model: onnx.ModelProto, names: Sequence[str] | None) -> None:
    """Give the graph outputs ``names`` in order (nothing to do for ``None``)."""
    if names is None:
        return
    current = [o.name for o in model.graph.output]
    if len(names) != len(current):
        raise ConversionError(
            f"{len(names)} output name(s) given ({', '.join(names)}) but the model has "
            f"{len(current)} output(s) ({', '.join(current)})"
        )
    rename_values(model, dict(zip(current, names, strict=True)))


def unknown_ops(model: onnx.ModelProto) -> list[str]:
    """Nodes (``Op (node name)``) whose type neither ONNX nor ONNX Runtime's contrib defines.

    tf2onnx leaves an operation it cannot convert in the graph under its TensorFlow name.
    """
    import onnx

    known_domains = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
    found = []
    for node in model.graph.node:
        domain = node.domain or ""
        if domain not in known_domains or (
                domain != "com.microsoft" and not onnx.defs.has(node.op_type, domain)):
            found.append(f"{node.op_type} (node '{node.name}')")
    return found


def _value_names(model: onnx.ModelProto) -> set[str]:
    graph = model.graph
    names = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.output)
    return names


def _free_name(base: str, taken: set[str]) -> str:
    index = 0
    while f"{base}_{index}" in taken:
        index += 1
    name = f"{base}_{index}"
    taken.add(name)
    return name
