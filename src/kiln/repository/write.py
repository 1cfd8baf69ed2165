"""Writing models: a version into a repository (the producer's side of the publish protocol),
or a model file with its manifest beside it. Used by ``kiln convert``, ``kiln optimize`` and
``kiln encrypt``; writers take plain values (names, bytes, a signature, a config).

    repository/<name>/config.yaml             written unless the model already has a config
    repository/<name>/<version>/model.onnx    ... and the other files given
    repository/<name>/<version>/manifest.json

A version folder is assembled in a hidden staging folder beside it and renamed into place, so
a server polling the repository never sees half a version. Files and folders get the modes
the process's umask allows (a server running as another user must be able to read them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from kiln.errors import ConfigError, InvalidArgument
from kiln.repository.autocomplete import served_signature
from kiln.repository.config import ModelConfig, dump_yaml
from kiln.repository.layout import ModelRepository, check_model_name
from kiln.repository.manifest import manifest_json, sha256_file
from kiln.tensors import Signature

#: The model file of a version written by kiln.
MODEL_FILE = "model.onnx"


def publish_version(repository: Path, *, name: str, version: int, signature: Signature,
                    config: ModelConfig, files: Mapping[str, bytes],
                    overwrite: bool = False) -> Path:
    """Stage ``files`` in a hidden folder and rename it to ``repository/name/version``; write
    ``config`` unless the model has a config already (which must fit ``signature``).
    Returns the version folder."""
    check_model_name(name)
    if version < 1:
        raise InvalidArgument(f"version {version} is not a positive integer")
    model_dir = repository / name
    final = model_dir / str(version)
    if final.exists() and not overwrite:
        raise ConfigError(f"'{final}' already exists; choose another version or overwrite")
    model_dir.mkdir(parents=True, exist_ok=True)
    existing = ModelRepository([repository]).find(name)
    if existing.config_path is not None:
        served_signature(name, existing.config, signature)
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=".staging-"))
    try:
        os.chmod(staging, 0o777 & ~_umask())
        for file_name, data in files.items():
            write_atomic(staging / file_name, data)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if existing.config_path is None:
        write_atomic(model_dir / "config.yaml", dump_yaml(config))
    return final


def write_model_file(path: Path, data: bytes, manifest: Mapping[str, object]) -> Path:
    """Write a model to ``path`` and its manifest to ``<path>.manifest.json``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    write_atomic(file_manifest_path(path), manifest_json(manifest))
    return path


def file_manifest_path(path: Path) -> Path:
    """Where the manifest of a model file kept outside a repository goes."""
    return path.with_name(path.name + ".manifest.json")


def replace_file_entry(manifest_path: Path, old: str, new: Path) -> bool:
    """Where the manifest at ``manifest_path`` lists ``old``, list ``new`` (with its SHA-256)
    instead; True when it did and the manifest was rewritten."""
    import orjson

    if not manifest_path.is_file():
        return False
    manifest = orjson.loads(manifest_path.read_bytes())
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or old not in files:
        return False
    digest, size = sha256_file(new)
    del files[old]
    files[new.name] = {"sha256": digest, "bytes": size}
    write_atomic(manifest_path, manifest_json(manifest))
    return True


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``; the file
    gets mode 0666 less the umask, like any file the process creates."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask. NOTE: only readable by setting it, so it is set back at once;
    on Linux it is read from /proc without touching it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
