"""What a model file must pass before ONNX Runtime sees it: format, links, manifest, external
data locations, operator domains."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from kiln.errors import InvalidModel
from kiln.repository.encryption import encrypt_file
from kiln.repository.files import ArtifactPolicy, VersionFolder
from kiln.repository.model_keys import KeyRing, new_key_line
from kiln.runtime import ModelArtifact, SessionOptions
from kiln.runtime.onnx import OnnxRuntimeBackend
from tests.models import OPSET, mlp_model

SIZES = (4, 8, 3)


def external_model(folder: Path, location: str = "weights.bin") -> onnx.ModelProto:
    """An MLP saved as ``folder/model.onnx`` with its weights in ``folder/<location>``."""
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    model = mlp_model(SIZES)
    onnx.save_model(model, folder / "model.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location=location, size_threshold=0)
    return onnx.load_model(folder / "model.onnx", load_external_data=False)


def rewrite(folder: Path, model: onnx.ModelProto, **entries: str) -> None:
    """Set the external_data entries of every external tensor, then save the model file."""
    for tensor in model.graph.initializer:
        del tensor.external_data[:]
        for key, value in entries.items():
            tensor.external_data.add(key=key.replace("dunder", "__class__"), value=value)
    (folder / "model.onnx").write_bytes(model.SerializeToString())


def admit(folder: Path, name: str = "model.onnx", *, binding: str = "m/1",
          policy: ArtifactPolicy | None = None) -> ModelArtifact:
    """What the ONNX Runtime backend admits from ``folder`` (as a repository version)."""
    files = VersionFolder(folder, binding=binding, policy=policy or ArtifactPolicy())
    return OnnxRuntimeBackend().admit(files, name, SessionOptions())


def test_external_data_inside_the_folder_loads_from_the_checked_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "1"
    external_model(folder, "sub/weights.bin")
    artifact = admit(folder)
    assert artifact.content == (folder / "model.onnx").read_bytes()
    session = OnnxRuntimeBackend().load(artifact, SessionOptions())
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    expected = OnnxRuntimeBackend().load(
        type(artifact)(path=folder / "model.onnx"), SessionOptions()).run({"input": x})
    assert np.array_equal(session.run({"input": x})["output"], expected["output"])


@pytest.mark.parametrize(("entries", "reason"), [
    ({"location": "../outside.bin"}, "plain relative path"),
    ({"location": "/etc/passwd"}, "plain relative path"),
    ({"location": "C:\\x.bin"}, "plain relative path"),
    ({"location": "C:x.bin"}, "plain relative path"),
    ({"location": "sub/../../outside.bin"}, "plain relative path"),
    ({"location": "./weights.bin"}, "plain relative path"),
    ({"location": ""}, "plain relative path"),
    ({"location": "missing.bin"}, "does not exist"),
    ({"location": "weights.bin", "offset": "-1"}, "non-negative integer"),
    ({"location": "weights.bin", "length": "-4"}, "non-negative integer"),
    ({"location": "weights.bin", "length": str(2**60)}, "reach past the end"),
    ({"location": "weights.bin", "offset": "999999", "length": "4"}, "reach past the end"),
    ({"location": "weights.bin", "dunder": "x"}, "must be distinct and among"),
])
def test_unsafe_external_data_is_refused(tmp_path: Path, entries: dict[str, str],
                                         reason: str) -> None:
    folder = tmp_path / "1"
    model = external_model(folder)
    (tmp_path / "outside.bin").write_bytes(b"\0" * 4096)
    rewrite(folder, model, **entries)
    with pytest.raises(InvalidModel, match=reason):
        admit(folder)


def test_duplicate_external_data_keys_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "1"
    model = external_model(folder)
    for tensor in model.graph.initializer:
        tensor.external_data.add(key="location", value="../outside.bin")
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(InvalidModel, match=r"must be distinct"):
        admit(folder)


@pytest.mark.parametrize("link", ["file", "folder", "hardlink"])
def test_links_out_of_the_folder_are_refused(tmp_path: Path, link: str) -> None:
    folder = tmp_path / "1"
    external_model(folder, "sub/weights.bin")
    secret = tmp_path / "secret"
    secret.mkdir()
    os.replace(folder / "sub" / "weights.bin", secret / "weights.bin")
    if link == "file":
        os.symlink(secret / "weights.bin", folder / "sub" / "weights.bin")
    elif link == "folder":
        (folder / "sub").rmdir()
        os.symlink(secret, folder / "sub")
    else:
        os.link(secret / "weights.bin", folder / "sub" / "weights.bin")
    with pytest.raises(InvalidModel, match=r"symbolic link|single hard link"):
        admit(folder)


def test_the_model_file_itself_may_not_be_a_link(tmp_path: Path) -> None:
    folder = tmp_path / "1"
    folder.mkdir()
    (tmp_path / "real.onnx").write_bytes(mlp_model(SIZES).SerializeToString())
    os.symlink(tmp_path / "real.onnx", folder / "model.onnx")
    with pytest.raises(InvalidModel, match=r"not a symbolic link"):
        admit(folder)


@pytest.mark.parametrize("name", ["model.pkl", "model.pt", "../model.onnx", "model.onnx.py"])
def test_only_onnx_files_are_loaded(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidModel, match=r"ONNX models only|plain file name"):
        admit(tmp_path, name)


def test_operators_needing_custom_libraries_are_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Evil", ["x"], ["y"], domain="custom.evil")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("custom.evil", 1)])
    folder = tmp_path / "1"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(InvalidModel, match=r"custom.evil"):
        admit(folder)
    (folder / "model.onnx").write_bytes(b"\x08\x07garbage that is not a model")
    with pytest.raises(InvalidModel, match=r"not a valid ONNX model"):
        admit(folder)


def _manifest(folder: Path, **files: bytes | str) -> None:
    entries = {name: {"sha256": value if isinstance(value, str)
                      else hashlib.sha256(value).hexdigest(), "bytes": None}
               for name, value in files.items()}
    for name, entry in entries.items():
        if (folder / name).exists():
            entry["bytes"] = (folder / name).stat().st_size
    (folder / "manifest.json").write_text(json.dumps(
        {"format": "kiln-manifest/1", "files": entries, "parity": {"passed": True}}))


def test_manifest_hashes_are_checked(tmp_path: Path) -> None:
    folder = tmp_path / "1"
    external_model(folder)
    model_bytes = (folder / "model.onnx").read_bytes()
    weights = (folder / "weights.bin").read_bytes()
    with pytest.raises(InvalidModel, match=r"no manifest.json"):
        admit(folder, policy=ArtifactPolicy(require_manifest=True))
    _manifest(folder, **{"model.onnx": model_bytes, "weights.bin": weights})
    assert admit(folder, policy=ArtifactPolicy(require_manifest=True)).content == model_bytes
    _manifest(folder, **{"model.onnx": model_bytes[:-1], "weights.bin": weights})
    with pytest.raises(InvalidModel, match=r"model.onnx does not match manifest.json"):
        admit(folder)
    _manifest(folder, **{"model.onnx": model_bytes, "weights.bin": weights[::-1]})
    with pytest.raises(InvalidModel, match=r"weights.bin does not match"):
        admit(folder)
    _manifest(folder, **{"model.onnx": model_bytes})
    with pytest.raises(InvalidModel, match=r"does not list weights.bin"):
        admit(folder)
    (folder / "manifest.json").write_text('{"files": {"model.onnx": {"sha256": "xyz"}}}')
    with pytest.raises(InvalidModel, match=r"files.model.onnx.sha256"):
        admit(folder)


def test_encrypted_models_decrypt_in_memory_and_may_not_use_external_data(
        tmp_path: Path) -> None:
    keys = KeyRing.load([], new_key_line())
    plain = tmp_path / "1"
    plain.mkdir()
    (plain / "model.onnx").write_bytes(mlp_model(SIZES).SerializeToString())
    sealed = tmp_path / "2"
    sealed.mkdir()
    encrypt_file(plain / "model.onnx", sealed / "model.onnx.kiln-enc", keys)  # type: ignore[arg-type]
    artifact = admit(sealed, binding="m/2", policy=ArtifactPolicy(keys=keys))
    assert artifact.content == (plain / "model.onnx").read_bytes()
    encrypt_file(plain / "model.onnx", plain / "model.onnx.kiln-enc", keys)  # type: ignore[arg-type]
    with pytest.raises(InvalidModel, match=r"has both model.onnx and model.onnx.kiln-enc"):
        admit(plain, policy=ArtifactPolicy(keys=keys))
    external = tmp_path / "3"
    external_model(external)
    encrypt_file(external / "model.onnx", external / "model.onnx.kiln-enc", keys)  # type: ignore[arg-type]
    (external / "model.onnx").unlink()
    with pytest.raises(InvalidModel, match=r"may not keep weights in external data"):
        admit(external, binding="m/3", policy=ArtifactPolicy(keys=keys))
