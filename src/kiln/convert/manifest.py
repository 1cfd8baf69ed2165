"""The manifest written next to every converted model: what it is, where it came from, proof.

A stable, plain JSON object (``format`` names its version)::

    {
      "format": "kiln-manifest/1",
      "files": {"model.onnx": {"sha256": "<64 hex digits>", "bytes": 90392019}},
      "model": {"name": "minilm", "version": 1},            # only inside a repository
      "source": {"framework": "torch", "framework_version": "2.13.0+cpu",
                 "converter": "...", "converter_version": "...", "model_type": "..."},
      "onnx": {"opset": 18, "ir_version": 10},
      "signature": {"inputs": [{"name": "...", "datatype": "INT64", "shape": [-1, -1]}],
                    "outputs": [...]},
      "parity": {"passed": true, "input_sets": ["examples", "generated batch 1", ...],
                 "outputs": {"embedding": {"datatype": "FP32", "max_abs_error": 2.1e-07,
                                           "max_rel_error": 1.3e-05, "atol": 0.0001,
                                           "rtol": 0.001, "passed": true, "worst": "..."}}},
      "kiln_version": "0.1.0",
      "created": "2026-05-01T12:00:00Z"
    }

``files`` maps each file of the version folder, by name relative to the manifest, to its
SHA-256 and size, so a reader can verify what it loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln import __version__
from kiln.tensors import TensorSpec

if TYPE_CHECKING:
    from kiln.convert.core import ConversionResult

FORMAT = "kiln-manifest/1"
MANIFEST_NAME = "manifest.json"


def build_manifest(result: ConversionResult, *, files: dict[str, bytes],
                   name: str | None = None, version: int | None = None) -> dict[str, Any]:
    """The manifest of ``result``; ``files`` maps file names to the bytes written."""
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "files": {file: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                  for file, data in files.items()},
    }
    if name is not None:
        manifest["model"] = {"name": name, "version": version}
    manifest.update({
        "source": asdict(result.source),
        "onnx": {"opset": result.opset, "ir_version": int(result.model.ir_version)},
        "signature": {"inputs": [_spec(s) for s in result.signature.inputs],
                      "outputs": [_spec(s) for s in result.signature.outputs]},
        "parity": result.parity.as_dict(),
        "kiln_version": __version__,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    return manifest


def manifest_json(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2) + "\n").encode()


def write_model_file(result: ConversionResult, path: Path) -> Path:
    """Write the model to ``path`` and ``<path>.manifest.json`` beside it."""
    data = result.model_bytes()
    manifest = build_manifest(result, files={path.name: data})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    write_atomic(path.with_name(path.name + ".manifest.json"), manifest_json(manifest))
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _spec(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype.v2, "shape": list(spec.shape)}
