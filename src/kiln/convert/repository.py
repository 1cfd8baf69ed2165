"""Writing a converted model into a model repository, ready for ``kiln serve``.

    repository/<name>/config.yaml             generated unless the model already has a config
    repository/<name>/<version>/model.onnx
    repository/<name>/<version>/manifest.json provenance, parity figures, SHA-256 of model.onnx

The version folder is assembled in a hidden staging folder beside it and renamed into place,
so a server polling the repository never sees half a version. An existing config is kept,
after checking that the new version fits it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from kiln.convert.base import ConversionError
from kiln.convert.manifest import MANIFEST_NAME, build_manifest, manifest_json, write_atomic
from kiln.errors import InvalidArgument
from kiln.serve.repository.autocomplete import DEFAULT_MAX_BATCH_SIZE, served_signature
from kiln.serve.repository.config import DynamicBatchingConfig, ModelConfig, TensorConfig
from kiln.serve.repository.layout import ModelRepository, check_model_name
from kiln.tensors import Signature, TensorSpec

if TYPE_CHECKING:
    from kiln.convert.core import ConversionResult

MODEL_FILE = "model.onnx"


def write_version(result: ConversionResult, repository: Path, *, name: str, version: int,
                  max_batch_size: int | None, overwrite: bool) -> Path:
    """Write one model version (and the model's config if it has none); returns its folder."""
    config = build_config(result.signature, name=name, max_batch_size=max_batch_size)
    data = result.model_bytes()
    manifest = build_manifest(result, files={MODEL_FILE: data}, name=name, version=version)
    return publish_version(repository, name=name, version=version, signature=result.signature,
                           config=config, files={MODEL_FILE: data, MANIFEST_NAME:
                                                 manifest_json(manifest)}, overwrite=overwrite)


def publish_version(repository: Path, *, name: str, version: int, signature: Signature,
                    config: ModelConfig, files: dict[str, bytes], overwrite: bool) -> Path:
    """Stage ``files`` in a hidden folder and rename it to ``repository/name/version``; write
    ``config`` unless the model has a config already (which must fit ``signature``)."""
    check_model_name(name)
    if version < 1:
        raise InvalidArgument(f"version {version} is not a positive integer")
    model_dir = repository / name
    final = model_dir / str(version)
    if final.exists() and not overwrite:
        raise ConversionError(f"'{final}' already exists; choose another version or overwrite")
    model_dir.mkdir(parents=True, exist_ok=True)
    existing = ModelRepository([repository]).find(name)
    if existing.config_path is not None:
        served_signature(name, existing.config, signature)
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=".staging-"))
    try:
        for file_name, data in files.items():
            (staging / file_name).write_bytes(data)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if existing.config_path is None:
        write_atomic(model_dir / "config.yaml", config_yaml(config))
    return final


def build_config(signature: Signature, *, name: str, max_batch_size: int | None) -> ModelConfig:
    """A config for ``signature``: batching on when every tensor has a dynamic first dim."""
    tensors = signature.inputs + signature.outputs
    batchable = all(s.shape and s.shape[0] == -1 for s in tensors)
    if max_batch_size is None:
        max_batch_size = DEFAULT_MAX_BATCH_SIZE if batchable else 0
    if max_batch_size > 0 and not batchable:
        fixed = [s.name for s in tensors if not s.shape or s.shape[0] != -1]
        raise ConversionError(
            f"max_batch_size {max_batch_size} needs a dynamic first dimension, but "
            f"{', '.join(fixed)} have a fixed one; use max_batch_size 0"
        )

    def tensor(spec: TensorSpec) -> TensorConfig:
        dims = spec.shape[1:] if max_batch_size else spec.shape
        return TensorConfig(name=spec.name, datatype=spec.datatype, dims=list(dims))

    return ModelConfig(
        name=name, backend="onnxruntime", max_batch_size=max_batch_size,
        inputs=[tensor(s) for s in signature.inputs],
        outputs=[tensor(s) for s in signature.outputs],
        dynamic_batching=DynamicBatchingConfig() if max_batch_size else None,
    )


def config_yaml(config: ModelConfig) -> bytes:
    """``config.yaml`` text: the fields that differ from the defaults."""
    fields = config.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(fields, sort_keys=False).encode()
