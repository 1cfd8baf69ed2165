"""A quantized model with its evidence, and how it is written: a file with its manifest and
report beside it, or a repository version (``model.onnx``, ``manifest.json``, ``report.*``)
ready for ``kiln serve``.

The manifest has the ``kiln-manifest/1`` format of converted models, with an
``optimization`` section recording the recipe, the backend, the nodes kept in FP32, the
measured quality and speed, and the CPU it was measured on::

    "source": {"quantized_from": "model.onnx", "sha256": "..."},
    "optimization": {"recipe": {...}, "backend": "openvino", "fp32_nodes": [],
                     "quality": {...}, "speed": {...}, "cpu": {...}}
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.optimize.recipe import Recipe
from kiln.optimize.report import OptimizeReport
from kiln.repository.autocomplete import config_for
from kiln.repository.manifest import MANIFEST_NAME, build_manifest, manifest_json
from kiln.repository.write import (
    MODEL_FILE,
    publish_version,
    write_atomic,
    write_model_file,
)
from kiln.tensors import Signature


@dataclass(frozen=True, slots=True)
class QuantizationResult:
    """The quantized model (bytes of an ONNX file), how to run it, and the report."""

    model_bytes: bytes
    recipe: Recipe
    #: The kiln backend that runs it best (``onnxruntime`` or ``openvino``).
    backend: str
    signature: Signature
    report: OptimizeReport

    def provenance(self) -> dict[str, Any]:
        """The manifest sections: what was quantized, and how, and what it measured."""
        report = self.report
        source = Path(report.source)
        return {
            "source": {"quantized_from": str(source), "sha256": _sha256(source)},
            "optimization": {"recipe": report.recipe, "recipe_label": report.recipe_label,
                             "backend": self.backend, "fp32_nodes": report.fp32_nodes,
                             "metric": report.metric, "max_drop": report.max_drop,
                             "met": report.met, "quality": report.quantized,
                             "fp32_quality": report.fp32, "speed": report.speed,
                             "cpu": report.cpu},
        }

    def save(self, path: Path) -> Path:
        """Write the model, ``<path>.manifest.json`` and ``<path>.report.*`` beside it."""
        path = Path(path)
        manifest = build_manifest({path.name: self.model_bytes}, signature=self.signature,
                                  sections=self.provenance())
        write_model_file(path, self.model_bytes, manifest)
        for name, data in self.report.files(prefix=f"{path.name}.").items():
            write_atomic(path.parent / name, data)
        return path

    def save_to_repository(self, repository: Path, *, name: str, version: int = 1,
                           overwrite: bool = False) -> Path:
        """Write ``repository/name/version/`` (model, manifest, report) and ``config.yaml``
        (with this model's backend) when the model has none; returns the version folder."""
        config = config_for(self.signature, name=name, backend=self.backend)
        manifest = build_manifest({MODEL_FILE: self.model_bytes}, signature=self.signature,
                                  model=(name, version), sections=self.provenance())
        files = {MODEL_FILE: self.model_bytes, MANIFEST_NAME: manifest_json(manifest),
                 **self.report.files()}
        return publish_version(Path(repository), name=name, version=version,
                               signature=self.signature, config=config, files=files,
                               overwrite=overwrite)


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
