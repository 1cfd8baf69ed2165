"""A quantization recipe: everything that decides how a model is quantized, as plain data.

The manifest of a quantized model records its recipe (``Recipe.as_dict``), so the artifact
says how it was made and the same recipe can be applied again.

    Recipe(method="static", calibration="minmax", smoothquant_alpha=0.95)
    Recipe(method="weight-only", bits=4, granularity="group", group_size=32)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from kiln.errors import InvalidArgument

#: Quantization methods, in the order the automatic search tries them (fastest first).
METHODS = ("openvino", "static", "dynamic", "weight-only")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
GRANULARITIES = ("tensor", "channel", "group")
#: The backend that runs each method's artifact best (all artifacts are ONNX files).
BACKEND_OF = {"openvino": "openvino", "static": "onnxruntime", "dynamic": "onnxruntime",
              "weight-only": "onnxruntime"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    """How to quantize. Fields a method does not use are ignored by it."""

    #: ``dynamic`` (int8 weights, activations at run time), ``static`` (int8 QDQ, calibrated),
    #: ``weight-only`` (b-bit weights, FP32 compute) or ``openvino`` (NNCF PTQ, OpenVINO).
    method: str = "dynamic"
    #: One scale per output channel of each weight (the most important int8 switch).
    per_channel: bool = True
    #: Static: symmetric int8 activations instead of asymmetric uint8.
    symmetric_activations: bool = False
    #: Static: how activation ranges are found: ``minmax``, ``percentile`` or ``entropy``.
    calibration: str = "minmax"
    #: Op types to quantize (``None``: the weighted ops: MatMul, Gemm, Conv, ...).
    op_types: tuple[str, ...] | None = None
    #: Nodes kept in FP32, by name.
    exclude_nodes: tuple[str, ...] = ()
    #: Static: SmoothQuant migration strength (``None``: 0.95 for transformers, else off;
    #: 0 = off).
    smoothquant_alpha: float | None = None
    #: Static: also quantize MatMul/Gemm outputs (off: they carry transformers' outliers).
    quantize_matmul_outputs: bool = False
    #: Weight-only: bits per weight, 2 to 8.
    bits: int = 8
    #: Weight-only: one range per ``tensor``, per output ``channel`` or per ``group``.
    granularity: str = "channel"
    #: Weight-only: weights per range along the input dimension when ``granularity=group``.
    group_size: int = 32
    #: Quantize embedding tables (Gather on a weight) too: 4x smaller, no fidelity cost.
    embeddings: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidArgument(f"method '{self.method}' is not one of {', '.join(METHODS)}")
        if self.calibration not in CALIBRATION_METHODS:
            raise InvalidArgument(f"calibration '{self.calibration}' is not one of "
                                  f"{', '.join(CALIBRATION_METHODS)}")
        if self.granularity not in GRANULARITIES:
            raise InvalidArgument(f"granularity '{self.granularity}' is not one of "
                                  f"{', '.join(GRANULARITIES)}")
        if not 2 <= self.bits <= 8:
            raise InvalidArgument(f"bits {self.bits}: weight-only quantization takes 2 to 8")
        if self.group_size < 2:
            raise InvalidArgument(f"group size {self.group_size} must be at least 2")
        if self.smoothquant_alpha is not None and not 0.0 <= self.smoothquant_alpha < 1.0:
            raise InvalidArgument(f"SmoothQuant alpha {self.smoothquant_alpha} must lie in "
                                  "[0, 1) (0 turns it off)")

    @property
    def backend(self) -> str:
        """The kiln backend that runs this recipe's artifact."""
        return BACKEND_OF[self.method]

    def excluding(self, nodes: list[str] | tuple[str, ...]) -> Recipe:
        """The same recipe with ``nodes`` kept in FP32 as well."""
        merged = tuple(dict.fromkeys((*self.exclude_nodes, *nodes)))
        return replace(self, exclude_nodes=merged)

    def describe(self) -> str:
        """A short label: ``static int8 per-channel minmax sq0.95``."""
        if self.method == "weight-only":
            group = f" g{self.group_size}" if self.granularity == "group" else ""
            text = f"weight-only {self.bits}-bit per-{self.granularity}{group}"
        elif self.method == "static":
            sq = f" sq{self.smoothquant_alpha:g}" if self.smoothquant_alpha else ""
            text = f"static int8 {self._granularity()} {self.calibration}{sq}"
        elif self.method == "openvino":
            text = "openvino int8 (NNCF)"
        else:
            text = f"dynamic int8 {self._granularity()}"
        if self.exclude_nodes:
            text += f", {len(self.exclude_nodes)} node(s) FP32"
        return text

    def _granularity(self) -> str:
        return "per-channel" if self.per_channel else "per-tensor"

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
