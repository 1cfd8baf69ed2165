"""Build one recipe's model: the single place that dispatches on ``Recipe.method``."""

from __future__ import annotations

from pathlib import Path

from kiln.optimize import graph
from kiln.optimize.calibration import CalibrationData
from kiln.optimize.recipe import Recipe


def build_model(source: Path, recipe: Recipe, output: Path,
                calibration: CalibrationData | None) -> list[str]:
    """Quantize ``source`` by ``recipe`` into ``output``; returns the quantized nodes' names.

    ``source`` must have named nodes (``graph.name_nodes``). Static and OpenVINO recipes need
    ``calibration``.
    """
    import onnx

    model = graph.load(source)
    ops = graph.op_types(model, recipe)
    quantized = [n.name for n in graph.weighted_nodes(model, ops)
                 if n.name not in recipe.exclude_nodes]
    if recipe.method == "weight-only":
        from kiln.optimize.bbit import quantize_weights

        quantized = quantize_weights(model, recipe)
        onnx.save(model, str(output))
        return quantized
    if recipe.method == "dynamic":
        from kiln.optimize.ort_quant import quantize_dynamic

        quantize_dynamic(model, output, recipe)
        return quantized
    if calibration is None:
        from kiln.errors import InvalidArgument

        raise InvalidArgument(f"the {recipe.method} method needs calibration data: give "
                              "--calibration or --eval (a .npz file or a folder of them)")
    if recipe.method == "static":
        from kiln.optimize.ort_quant import quantize_static

        quantize_static(model, output, recipe, calibration)
    else:
        from kiln.optimize.nncf_ptq import quantize_nncf

        quantize_nncf(model, output, recipe, calibration)
    return quantized
