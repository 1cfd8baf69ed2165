"""Convert PyTorch, Keras/TensorFlow and scikit-learn models to ONNX, with parity proven.

    from kiln.convert import convert

    result = convert(model, example_inputs=x[:8])        # raises ParityError on a mismatch
    result.save_to_repository(Path("model_repository"), name="digits", version=1)
    print(result.parity.as_dict())

``convert`` picks the framework from the model's type (or a file's suffix); each framework is
an optional extra (``kiln-ml[torch]``, ``kiln-ml[tensorflow]``, ``kiln-ml[sklearn]``), imported
only when a model needs it. ``kiln.convert.minilm`` converts the bundled MiniLM-L6
sentence-transformer.
"""

from kiln.convert.base import CONVERTERS, ConversionError, SourceInfo
from kiln.convert.core import DEFAULT_BATCH_SIZES, DEFAULT_OPSET, ConversionResult, convert
from kiln.convert.inputs import parse_tensor_spec
from kiln.convert.parity import (
    DEFAULT_TOLERANCES,
    OutputParity,
    ParityError,
    ParityReport,
    Tolerance,
)

__all__ = [
    "CONVERTERS",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_OPSET",
    "DEFAULT_TOLERANCES",
    "ConversionError",
    "ConversionResult",
    "OutputParity",
    "ParityError",
    "ParityReport",
    "SourceInfo",
    "Tolerance",
    "convert",
    "parse_tensor_spec",
]
