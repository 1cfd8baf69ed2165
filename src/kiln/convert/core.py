"""``convert``: any supported model in, a parity-checked ONNX model out.

    result = convert(pipeline, example_inputs=x_test[:8])
    result.save_to_repository(Path("model_repository"), name="digits", version=1)

The steps: find the framework (from the object's type or the file's suffix), name the inputs,
export, load the result in ONNX Runtime, then compare it with the original on the examples
and on generated inputs at several batch sizes. A failing comparison raises ``ParityError``
and nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.convert.base import (
    CONVERTERS,
    ConversionError,
    ExportRequest,
    FrameworkConverter,
    SourceInfo,
    get_converter,
)
from kiln.convert.inputs import check_examples, export_sample, name_examples, parity_sets
from kiln.convert.parity import ParityError, ParityReport, Tolerance, check_parity
from kiln.errors import KilnError
from kiln.repository.autocomplete import config_for
from kiln.repository.manifest import MANIFEST_NAME, build_manifest, manifest_json
from kiln.repository.write import MODEL_FILE, publish_version, write_model_file
from kiln.runtime.base import ModelArtifact, Session, SessionOptions
from kiln.tensors import DataType, Signature, TensorSpec

if TYPE_CHECKING:
    import onnx

#: The ONNX opset kiln exports to unless told otherwise (ONNX Runtime 1.17+ runs it).
DEFAULT_OPSET = 18
#: Batch sizes of the generated parity inputs.
DEFAULT_BATCH_SIZES = (1, 2, 16)


@dataclass(frozen=True, slots=True)
class ConversionResult:
    """A converted model with its evidence: parity figures and provenance."""

    model: onnx.ModelProto
    #: The ONNX model's signature as ONNX Runtime reads it (-1 for dynamic dimensions).
    signature: Signature
    parity: ParityReport
    source: SourceInfo
    opset: int

    def model_bytes(self) -> bytes:
        return bytes(self.model.SerializeToString())

    def provenance(self) -> dict[str, Any]:
        """The manifest sections that say where the model came from and how close it is."""
        return {"source": asdict(self.source),
                "onnx": {"opset": self.opset, "ir_version": int(self.model.ir_version)},
                "parity": self.parity.as_dict()}

    def save(self, path: Path) -> Path:
        """Write the model to ``path`` and its manifest to ``<path>.manifest.json``."""
        path, data = Path(path), self.model_bytes()
        manifest = build_manifest({path.name: data}, signature=self.signature,
                                  sections=self.provenance())
        return write_model_file(path, data, manifest)

    def save_to_repository(self, repository: Path, *, name: str, version: int = 1,
                           max_batch_size: int | None = None, overwrite: bool = False) -> Path:
        """Write ``repository/name/version/model.onnx`` + manifest, and ``config.yaml``;
        returns the version folder."""
        config = config_for(self.signature, name=name, max_batch_size=max_batch_size)
        data = self.model_bytes()
        manifest = build_manifest({MODEL_FILE: data}, signature=self.signature,
                                  model=(name, version), sections=self.provenance())
        return publish_version(Path(repository), name=name, version=version,
                               signature=self.signature, config=config,
                               files={MODEL_FILE: data, MANIFEST_NAME: manifest_json(manifest)},
                               overwrite=overwrite)


def convert(model: object, *, example_inputs: object = None,
            inputs: Sequence[TensorSpec] | None = None,
            output_names: Sequence[str] | None = None, framework: str | None = None,
            opset: int = DEFAULT_OPSET, tolerances: Mapping[DataType, Tolerance] | None = None,
            batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, allow_pickle: bool = False,
            seed: int = 0, threads: int = 1,
            progress: Callable[[str], None] | None = None) -> ConversionResult:
    """Convert ``model`` (an object or a file) to ONNX and prove it gives the same results.

    ``example_inputs``: an array, a list of arrays (in the model's input order) or a dict by
    input name; numpy, torch or TensorFlow tensors. ``inputs`` declares the signature instead
    (or as well), with -1 for dynamic dimensions; without it the first dimension of each
    example is the (dynamic) batch. Raises ``ConversionError`` naming the part that cannot be
    converted, or ``ParityError`` with the figures when the results differ.
    """
    report = progress or (lambda _: None)
    converter, model = _resolve(model, framework, allow_pickle)
    examples = name_examples(example_inputs, lambda n: converter.default_input_names(model, n))
    specs = converter.input_specs(model, examples, inputs)
    if examples is not None:
        check_examples(specs, examples)
    rng = np.random.default_rng(seed)
    report(f"exporting {converter.name} model to ONNX (opset {opset})")
    request = ExportRequest(inputs=specs, sample=export_sample(specs, examples, rng), opset=opset,
                            output_names=tuple(output_names) if output_names else None)
    proto = converter.export(model, request)
    session = _load(proto, threads)
    sets = parity_sets(specs, examples, batch_sizes, rng)
    report(f"checking parity on {len(sets)} input sets")
    parity = check_parity(session, converter.reference(model, specs), sets, tolerances)
    if not parity.passed:
        raise ParityError(f"parity check failed: {parity.describe_failures()}", parity)
    return ConversionResult(model=proto, signature=session.signature, parity=parity,
                            source=converter.source(model), opset=opset)


def _resolve(model: object, framework: str | None,
             allow_pickle: bool) -> tuple[FrameworkConverter, object]:
    """The converter for ``model``, and the model itself (loaded when given as a path)."""
    if framework is not None:
        converter = get_converter(framework)
    else:
        candidates = (get_converter(name) for name in CONVERTERS)
        found = next((c for c in candidates if c.handles(model)), None)
        if found is None:
            raise ConversionError(
                f"kiln cannot tell which framework {_describe(model)} comes from; it converts "
                "torch (nn.Module, .pt2, TorchScript), keras (.keras, .h5, SavedModel folder) "
                "and sklearn (estimators, .joblib with --allow-pickle): name the framework"
            )
        converter = found
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.exists():
            raise ConversionError(f"model file '{path}' does not exist")
        model = converter.load(path, allow_pickle=allow_pickle)
    return converter, model


def _describe(model: object) -> str:
    if isinstance(model, str | Path):
        return f"'{model}'"
    return f"a {type(model).__module__}.{type(model).__qualname__}"


def _load(proto: onnx.ModelProto, threads: int) -> Session:
    import onnx

    from kiln.runtime.onnx import OnnxRuntimeBackend

    try:
        onnx.checker.check_model(proto)
        artifact = ModelArtifact(path=Path("model.onnx"), content=proto.SerializeToString())
        options = SessionOptions(intra_op_threads=threads, inter_op_threads=1,
                                 allow_spinning=False)
        return OnnxRuntimeBackend().load(artifact, options)
    except (onnx.checker.ValidationError, KilnError) as exc:
        raise ConversionError(f"the exported ONNX model is not valid: {exc}") from exc
    except Exception as exc:  # ONNX Runtime raises its own exception types
        raise ConversionError(f"ONNX Runtime cannot load the exported model: {exc}") from exc
