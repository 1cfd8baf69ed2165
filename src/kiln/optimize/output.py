"""Writing a quantized model: a file with its manifest and report beside it, or a repository
version (``model.onnx``, ``manifest.json``, ``report.*``) ready for ``kiln serve``.

The manifest has the ``kiln-manifest/1`` format of converted models, with an
``optimization`` section recording the recipe, the backend, the nodes kept in FP32, the
measured quality and speed, and the CPU it was measured on::

    "source": {"quantized_from": "model.onnx", "sha256": "..."},
    "optimization": {"recipe": {...}, "backend": "openvino", "fp32_nodes": [],
                     "quality": {...}, "speed": {...}, "cpu": {...}}
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln import __version__
from kiln.convert.manifest import FORMAT, MANIFEST_NAME, _spec, manifest_json, write_atomic
from kiln.convert.repository import MODEL_FILE, build_config, publish_version

if TYPE_CHECKING:
    from kiln.optimize.api import QuantizationResult


def build_manifest(result: QuantizationResult, *, file_name: str, name: str | None = None,
                   version: int | None = None) -> dict[str, Any]:
    """The manifest of ``result`` written as ``file_name``."""
    report = result.report
    source = Path(report.source)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "files": {file_name: {"sha256": hashlib.sha256(result.model_bytes).hexdigest(),
                              "bytes": len(result.model_bytes)}},
    }
    if name is not None:
        manifest["model"] = {"name": name, "version": version}
    manifest.update({
        "source": {"quantized_from": str(source), "sha256": _sha256(source)},
        "signature": {"inputs": [_spec(s) for s in result.signature.inputs],
                      "outputs": [_spec(s) for s in result.signature.outputs]},
        "optimization": {"recipe": report.recipe, "recipe_label": report.recipe_label,
                         "backend": result.backend, "fp32_nodes": report.fp32_nodes,
                         "metric": report.metric, "max_drop": report.max_drop,
                         "met": report.met, "quality": report.quantized,
                         "fp32_quality": report.fp32, "speed": report.speed,
                         "cpu": report.cpu},
        "kiln_version": __version__,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    return manifest


def write_file(result: QuantizationResult, path: Path) -> Path:
    """``path``, ``<path>.manifest.json`` and ``<path>.report.json|md|svg``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, result.model_bytes)
    write_atomic(path.with_name(path.name + ".manifest.json"),
                 manifest_json(build_manifest(result, file_name=path.name)))
    for name, data in result.report.files(prefix=f"{path.name}.").items():
        write_atomic(path.parent / name, data)
    return path


def write_version(result: QuantizationResult, repository: Path, *, name: str, version: int,
                  overwrite: bool) -> Path:
    """One repository version (model, manifest, report) and, when the model has none, a
    ``config.yaml`` naming the backend that runs it best."""
    config = build_config(result.signature, name=name, max_batch_size=None)
    config = config.model_copy(update={"backend": result.backend})
    manifest = build_manifest(result, file_name=MODEL_FILE, name=name, version=version)
    files = {MODEL_FILE: result.model_bytes, MANIFEST_NAME: manifest_json(manifest),
             **result.report.files()}
    return publish_version(repository, name=name, version=version, signature=result.signature,
                           config=config, files=files, overwrite=overwrite)


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
