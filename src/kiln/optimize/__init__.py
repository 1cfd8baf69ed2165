"""``kiln optimize``: quantize ONNX models and prove what it cost.

    from kiln.optimize import CalibrationData, QuantizeOptions, Recipe, quantize
    result = quantize(Path("model.onnx"), evaluation=held_back,
                      options=QuantizeOptions(metric="cosine", max_drop=0.005))
    result.save_to_repository(Path("model_repository"), name="minilm", version=2)
    print(result.report.markdown())

Methods (``Recipe.method``): ``dynamic`` and ``static`` int8 through ONNX Runtime's quantizer
(``kiln.optimize.ort_quant``, SmoothQuant in ``kiln.optimize.smoothquant``), ``openvino``
int8 through NNCF (``kiln.optimize.nncf_ptq``, served by the ``openvino`` backend), and
``weight-only`` b-bit weights by the min-max formula (``kiln.optimize.bbit``). The
accuracy-aware search lives in ``kiln.optimize.search``, measurements in
``kiln.optimize.evaluate`` and ``kiln.optimize.speed``, the report in ``kiln.optimize.report``.
"""

from kiln.optimize.api import QuantizeOptions, auto_candidates, quantize
from kiln.optimize.calibration import CalibrationData
from kiln.optimize.evaluate import METRICS, Quality
from kiln.optimize.ort_quant import QuantizationError
from kiln.optimize.recipe import METHODS, Recipe
from kiln.optimize.report import OptimizeReport
from kiln.optimize.result import QuantizationResult

__all__ = [
    "METHODS",
    "METRICS",
    "CalibrationData",
    "OptimizeReport",
    "Quality",
    "QuantizationError",
    "QuantizationResult",
    "QuantizeOptions",
    "Recipe",
    "auto_candidates",
    "quantize",
]
