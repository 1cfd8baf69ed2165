"""PyTorch -> ONNX through ``torch.onnx.export`` (the ``torch.export``-based exporter).

Takes an ``nn.Module``, an ``ExportedProgram`` (or a ``.pt2`` file written by
``torch.export.save``) or a TorchScript file (``torch.jit.save``). Every ``-1`` dimension of
the inputs becomes dynamic (``Dim.DYNAMIC``), so the batch and, say, a sequence length stay
free, and dimensions that the model forces equal (``input_ids`` / ``attention_mask``) are
found by ``torch.export`` itself. The module is put in eval mode first. TorchScript, which
``torch.export`` cannot read, goes through torch.onnx's older TorchScript exporter with the
same dynamic dimensions.

NOTE: whole pickled modules (``torch.save(model)``) are refused: ``torch.load`` on them runs
code from the file. Save with ``torch.export.save`` or ``torch.jit.save`` instead.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kiln.convert.base import (
    ConversionError,
    ExportRequest,
    Reference,
    SourceInfo,
    require,
    version_of,
)
from kiln.convert.graph import name_outputs
from kiln.convert.inputs import choose_specs
from kiln.tensors import TensorDict, TensorSpec

_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class TorchConverter:
    """``kiln.convert`` for PyTorch models."""

    name = "torch"

    def handles(self, model: object) -> bool:
        if isinstance(model, str | Path):
            return Path(model).suffix in (".pt2", *_TORCHSCRIPT_SUFFIXES)
        return type(model).__module__.startswith("torch") or _is_module(model)

    def load(self, path: Path, *, allow_pickle: bool) -> object:
        torch = _torch()
        if path.suffix == ".pt2":
            return torch.export.load(str(path))
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except RuntimeError:
            raise ConversionError(
                f"'{path}' is not a TorchScript archive; kiln does not unpickle whole modules "
                "(torch.load runs code from the file). Save the model with torch.export.save "
                "(.pt2) or torch.jit.save, or pass the nn.Module to kiln.convert.convert"
            ) from None

    def default_input_names(self, model: object, count: int) -> list[str]:
        names = _parameter_names(model)
        if len(names) >= count:
            return names[:count]
        return [f"input_{i}" for i in range(count)]

    def input_specs(self, model: object, examples: TensorDict | None,
                    declared: Sequence[TensorSpec] | None) -> tuple[TensorSpec, ...]:
        return choose_specs(declared, examples, missing=(
            "a PyTorch model needs example inputs or declared inputs "
            "(name, datatype, shape with -1 for dynamic dimensions) to be exported"))

    def export(self, model: object, request: ExportRequest) -> Any:
        torch = _torch()
        _inference_mode(model)
        args = tuple(torch.from_numpy(np.ascontiguousarray(request.sample[s.name]))
                     for s in request.inputs)
        try:
            if isinstance(model, torch.jit.ScriptModule):
                proto = _export_torchscript(torch, model, args, request)
            else:
                dynamic = tuple({axis: torch.export.Dim.DYNAMIC for axis, d in
                                 enumerate(s.shape) if d == -1} for s in request.inputs)
                proto = torch.onnx.export(
                    model, args, input_names=[s.name for s in request.inputs],
                    dynamic_shapes=None if _is_exported(model) else dynamic,
                    opset_version=request.opset, dynamo=True, verbose=False).model_proto
        except Exception as exc:
            raise _explain(exc, request.opset) from exc
        default = [f"output_{i}" for i in range(len(proto.graph.output))]
        name_outputs(proto, request.output_names or default)
        return proto

    def reference(self, model: Any, inputs: Sequence[TensorSpec]) -> Reference:
        torch = _torch()
        _inference_mode(model)
        # An ExportedProgram runs through its .module(); a plain nn.Module runs as it is.
        module = model.module() if _is_exported(model) else model

        def run(tensors: TensorDict) -> list[np.ndarray]:
            args = [torch.from_numpy(np.ascontiguousarray(tensors[s.name])) for s in inputs]
            with torch.inference_mode():
                result = module(*args)
            return [t.numpy() for t in _flatten(result)]

        return run

    def source(self, model: object) -> SourceInfo:
        torch = _torch()
        kind = type(model)
        return SourceInfo(framework="torch", framework_version=torch.__version__,
                          converter="torch.onnx.export (dynamo) + onnxscript",
                          converter_version=version_of("onnxscript"),
                          model_type=f"{kind.__module__}.{kind.__qualname__}")


def _torch() -> Any:
    return require("torch", "torch")


def _export_torchscript(torch: Any, model: Any, args: tuple[Any, ...],
                        request: ExportRequest) -> Any:
    """TorchScript goes through torch.onnx's TorchScript exporter (torch.export cannot read it).

    The batch (dim 0 of every input marked -1) stays dynamic in the outputs as well.
    """
    import io

    import onnx

    axes = {s.name: {axis: f"{s.name}_{axis}" if axis else "batch"
                     for axis, d in enumerate(s.shape) if d == -1} for s in request.inputs}
    with torch.inference_mode():
        outputs = _flatten(model(*args))
    names = [f"output_{i}" for i in range(len(outputs))]
    if any(0 in a for a in axes.values()):
        axes.update({name: {0: "batch"} for name in names})
    buffer = io.BytesIO()
    torch.onnx.export(model, args, buffer, input_names=[s.name for s in request.inputs],
                      output_names=names, dynamic_axes=axes, opset_version=request.opset,
                      dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def _inference_mode(model: Any) -> None:
    """Serving runs the model for inference: dropout off, batch norm on its running stats."""
    if getattr(model, "training", False):
        model.eval()


def _is_module(model: object) -> bool:
    return any(c.__module__.startswith("torch.nn") for c in type(model).__mro__)


def _is_exported(model: object) -> bool:
    return type(model).__name__ == "ExportedProgram"


def _parameter_names(model: Any) -> list[str]:
    """The user-facing input names of a module, script module or exported program."""
    if _is_exported(model):
        kinds = model.graph_signature.input_specs
        return [s.arg.name for s in kinds if s.kind.name == "USER_INPUT"]
    schema = getattr(getattr(model, "forward", None), "schema", None)
    if schema is not None:  # TorchScript: the first argument is self
        return [a.name for a in schema.arguments[1:]]
    try:
        params = inspect.signature(model.forward).parameters
    except (AttributeError, TypeError, ValueError):
        return []
    return [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _flatten(result: object) -> list[Any]:
    """Tensors of a forward result in order: a tensor, nested tuples/lists, dicts."""
    if isinstance(result, list | tuple):
        return [t for item in result for t in _flatten(item)]
    if isinstance(result, dict):
        return [t for item in result.values() for t in _flatten(item)]
    return [result]


def _explain(exc: Exception, opset: int) -> ConversionError:
    """The exporter's long report cut down to the operation that failed and what to do."""
    text = _ANSI.sub("", str(exc))
    target = re.search(r"target=torch\.ops\.([\w.]+?)(?:\.default)?\]", text)
    reasons = re.findall(r"^<class '[\w.]+'>: (.+)$", text, flags=re.MULTILINE)
    reason = reasons[0] if reasons else text.strip().splitlines()[0]
    if target:
        return ConversionError(
            f"PyTorch operation '{target.group(1)}' cannot be exported to ONNX (opset {opset}): "
            f"{reason}. Rewrite that part of the model with supported operations, or raise "
            "the opset if a newer one has it"
        )
    return ConversionError(
        f"torch.onnx could not export the model: {reason}. If torch.export cannot trace it "
        "(data-dependent control flow), make the control flow static or use torch.cond"
    )
