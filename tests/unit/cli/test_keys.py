"""``kiln keys``, ``kiln keygen`` and ``kiln encrypt`` from the command line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from kiln.cli.main import main
from kiln.repository.files import ArtifactPolicy, VersionFolder
from kiln.repository.model_keys import KeyRing
from kiln.serve.security.keys import load_keys, parse_token
from tests.models import mlp_model


def test_keys_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.yaml"
    assert main(["keys", "create", "--keys-file", str(path), "--scope", "infer", "--scope",
                 "metadata", "--model", "digits", "--name", "ci"]) == 0
    token = capsys.readouterr().out.strip()
    parsed = parse_token(token)
    assert parsed is not None
    record = load_keys(path).keys[0]
    assert (record.id, record.scopes, record.models) == (parsed[0], ["infer", "metadata"],
                                                         ["digits"])
    assert main(["keys", "list", "--keys-file", str(path)]) == 0
    listed = capsys.readouterr().out
    assert record.id in listed and "models=digits" in listed and parsed[1] not in listed
    assert main(["keys", "revoke", "--keys-file", str(path), "0000000000000000"]) == 1
    assert "no key with id" in capsys.readouterr().err
    assert main(["keys", "revoke", "--keys-file", str(path), record.id]) == 0
    assert load_keys(path).keys == []
    with pytest.raises(SystemExit):
        main(["keys", "create", "--keys-file", str(path), "--scope", "root"])


def test_keygen_and_encrypt_update_the_manifest(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    key, folder = tmp_path / "model.key", tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    data = mlp_model((4, 8, 2)).SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    (folder / "manifest.json").write_text(json.dumps({
        "format": "kiln-manifest/1", "parity": {"passed": True},
        "files": {"model.onnx": {"sha256": hashlib.sha256(data).hexdigest(),
                                 "bytes": len(data)}}}))
    assert main(["keygen", str(key)]) == 0
    assert main(["keygen", str(key)]) == 1  # never overwrites a key
    assert main(["encrypt", str(folder / "model.onnx"), "--key-file", str(key),
                 "--bind", "m/1"]) == 0
    assert "remove model.onnx" in capsys.readouterr().out
    manifest = json.loads((folder / "manifest.json").read_text())
    assert list(manifest["files"]) == ["model.onnx.kiln-enc"]
    assert manifest["parity"] == {"passed": True}
    (folder / "model.onnx").unlink()
    files = VersionFolder(folder, binding="m/1", policy=ArtifactPolicy(keys=KeyRing.load([key])))
    assert files.read("model.onnx").data == data
