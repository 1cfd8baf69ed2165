"""The seam between ``kiln.convert`` and one framework, and the errors conversion raises.

A framework module (``kiln.convert.torch``, ``.keras``, ``.sklearn``) provides a
``FrameworkConverter``: it names a model's inputs, exports the model to ONNX and runs the
original model for the parity check. Everything else (example inputs, parity, manifests,
the model repository) is shared and knows no framework.

    class MyConverter:
        name = "myframework"
        def handles(self, model): return isinstance(model, MyModel)
        def load(self, path, *, allow_pickle): return MyModel.load(path)
        def input_specs(self, model, examples, declared): ...
        def export(self, model, request): ...        # -> onnx.ModelProto
        def reference(self, model, inputs): ...      # -> Callable[[TensorDict], list[ndarray]]
        def source(self, model): ...                 # -> SourceInfo
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kiln.errors import InvalidArgument, KilnError, Unimplemented
from kiln.runtime.registry import import_entry
from kiln.tensors import TensorDict, TensorSpec

if TYPE_CHECKING:
    import onnx

#: Runs the original model: inputs by name -> outputs in the ONNX model's output order.
Reference = Callable[[TensorDict], list[np.ndarray]]


class ConversionError(KilnError):
    """A model could not be converted; the message names the part and what to do."""

    kind = Unimplemented.kind


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Provenance of a converted model: what it was and what converted it."""

    framework: str
    framework_version: str
    converter: str
    converter_version: str
    model_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportRequest:
    """What a framework converter gets: named inputs and arrays to trace the model with."""

    inputs: tuple[TensorSpec, ...]
    #: Arrays to export with; dynamic dims hold sizes of at least 2 (1 and 0 get specialized).
    sample: TensorDict
    opset: int
    output_names: tuple[str, ...] | None = None


class FrameworkConverter(Protocol):
    """One framework's part of a conversion (see the module docstring)."""

    name: str

    def handles(self, model: object) -> bool: ...

    def load(self, path: Path, *, allow_pickle: bool) -> object: ...

    def input_specs(self, model: object, examples: TensorDict | None,
                    declared: Sequence[TensorSpec] | None) -> tuple[TensorSpec, ...]: ...

    def default_input_names(self, model: object, count: int) -> list[str]: ...

    def export(self, model: object, request: ExportRequest) -> onnx.ModelProto: ...

    def reference(self, model: object, inputs: Sequence[TensorSpec]) -> Reference: ...

    def source(self, model: object) -> SourceInfo: ...


#: Framework name -> "module:class"; imported only when a model needs it.
CONVERTERS: dict[str, str] = {
    "torch": "kiln.convert.torch:TorchConverter",
    "keras": "kiln.convert.keras:KerasConverter",
    "sklearn": "kiln.convert.sklearn:SklearnConverter",
}

#: The extra that installs each framework's converter.
EXTRAS = {"torch": "torch", "keras": "tensorflow", "sklearn": "sklearn", "minilm": "minilm"}


def get_converter(framework: str) -> FrameworkConverter:
    """The converter registered under ``framework``."""
    try:
        target = CONVERTERS[framework]
    except KeyError:
        raise InvalidArgument(
            f"unknown framework '{framework}'; kiln converts {', '.join(CONVERTERS)}"
        ) from None
    converter: FrameworkConverter = import_entry(target)()
    return converter


def require(module: str, framework: str) -> Any:
    """Import a framework lazily; a missing one names the exact install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConversionError(
            f"converting {framework} models needs '{module}': "
            f"pip install 'kiln-ml[{EXTRAS[framework]}]'"
        ) from None


def to_numpy(value: object) -> np.ndarray:
    """A numpy array from a numpy, torch or TensorFlow tensor (or anything array-like)."""
    detach = getattr(value, "detach", None)
    if callable(detach):
        return np.asarray(detach().cpu().numpy())
    as_numpy = getattr(value, "numpy", None)
    if callable(as_numpy):
        return np.asarray(as_numpy())
    return np.asarray(value)


def version_of(distribution: str) -> str:
    """The installed version of a distribution, or ``unknown``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"
