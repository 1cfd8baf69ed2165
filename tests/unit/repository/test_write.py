"""Writers of the repository: versions staged and renamed into place, modes from the umask,
the config written only when the model has none, manifests rewritten in place."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.errors import ConfigError
from kiln.repository.autocomplete import config_for
from kiln.repository.manifest import build_manifest, manifest_json, read_manifest
from kiln.repository.write import publish_version, replace_file_entry, write_model_file
from kiln.tensors import DataType, Signature, TensorSpec

SIGNATURE = Signature(inputs=(TensorSpec("x", DataType.FP32, (-1, 4)),),
                      outputs=(TensorSpec("y", DataType.FP32, (-1, 4)),))


@pytest.fixture(params=[0o022, 0o027, 0o077])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_versions_and_files_get_the_modes_the_umask_allows(tmp_path: Path, umask: int) -> None:
    files = {"model.onnx": b"onnx", "report.md": b"# report"}
    manifest = build_manifest(files, signature=SIGNATURE, model=("m", 1))
    folder = publish_version(tmp_path, name="m", version=1, signature=SIGNATURE,
                             config=config_for(SIGNATURE, name="m"),
                             files={**files, "manifest.json": manifest_json(manifest)})
    assert _mode(folder) == 0o777 & ~umask
    for path in [*folder.iterdir(), tmp_path / "m" / "config.yaml"]:
        assert _mode(path) == 0o666 & ~umask, path.name
    single = write_model_file(tmp_path / "out" / "m.onnx", b"onnx",
                              build_manifest({"m.onnx": b"onnx"}, signature=SIGNATURE))
    assert _mode(single) == _mode(single.with_name("m.onnx.manifest.json")) == 0o666 & ~umask
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")]


def test_an_existing_config_is_kept_and_must_fit(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.yaml").write_text("max_batch_size: 8\n")
    publish_version(tmp_path, name="m", version=1, signature=SIGNATURE,
                    config=config_for(SIGNATURE, name="m"), files={"model.onnx": b"x"})
    assert (tmp_path / "m" / "config.yaml").read_text() == "max_batch_size: 8\n"
    with pytest.raises(ConfigError, match="already exists"):
        publish_version(tmp_path, name="m", version=1, signature=SIGNATURE,
                        config=config_for(SIGNATURE, name="m"), files={"model.onnx": b"x"})
    (tmp_path / "m" / "config.yaml").write_text(
        "inputs: [{name: x, datatype: INT32, dims: [4]}]\n")
    with pytest.raises(ConfigError, match="datatype INT32 but the model has FP32"):
        publish_version(tmp_path, name="m", version=2, signature=SIGNATURE,
                        config=config_for(SIGNATURE, name="m"), files={"model.onnx": b"x"})
    assert not (tmp_path / "m" / "2").exists()


def test_a_manifest_entry_is_replaced_by_the_new_file(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"plain")
    (tmp_path / "model.onnx.kiln-enc").write_bytes(b"sealed")
    manifest = build_manifest({"model.onnx": b"plain"}, signature=SIGNATURE,
                              sections={"parity": {"passed": True}})
    (tmp_path / "manifest.json").write_bytes(manifest_json(manifest))
    assert replace_file_entry(tmp_path / "manifest.json", "model.onnx",
                              tmp_path / "model.onnx.kiln-enc")
    assert not replace_file_entry(tmp_path / "manifest.json", "model.onnx",
                                  tmp_path / "model.onnx.kiln-enc")
    read = read_manifest(tmp_path)
    assert read is not None and list(read.files) == ["model.onnx.kiln-enc"]
    assert json.loads((tmp_path / "manifest.json").read_text())["parity"] == {"passed": True}
