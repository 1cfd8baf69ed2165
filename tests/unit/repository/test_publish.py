"""The publish protocol: which version folders may be loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln.repository.publish import NotPublished, PublishCheck, check_published
from tests.lifecycle import write_manifest

DATA = b"model bytes " * 1000


@pytest.fixture
def version(tmp_path: Path) -> Path:
    folder = tmp_path / "model" / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(DATA)
    return folder


def _check(version: Path, *, require_marker: bool = True) -> None:
    check_published(version, model_dir=version.parent, require_marker=require_marker)


def test_a_folder_without_marker_waits_only_where_a_marker_is_required(version: Path) -> None:
    with pytest.raises(NotPublished, match=r"neither manifest\.json nor a READY file"):
        _check(version)
    _check(version, require_marker=False)
    (version / "READY").touch()
    _check(version)


def test_a_manifest_publishes_when_every_file_matches(version: Path) -> None:
    write_manifest(version, DATA)
    _check(version)


def test_a_file_shorter_than_its_manifest_says_is_refused(version: Path) -> None:
    write_manifest(version, DATA)
    (version / "model.onnx").write_bytes(DATA[:100])
    with pytest.raises(NotPublished, match=r"bytes, manifest\.json says"):
        _check(version, require_marker=False)  # a manifest is checked in every mode


def test_digests_are_left_to_the_load(version: Path) -> None:
    """Same size, other bytes: published, and refused by the integrity check at load
    (tests/integration/test_encrypted_models.py), which hashes the bytes it loads."""
    write_manifest(version, DATA)
    (version / "model.onnx").write_bytes(DATA[:-1] + b"X")
    _check(version, require_marker=False)


@pytest.mark.parametrize(("manifest", "message"), [
    ({"files": {"extra.bin": {"sha256": "0" * 64}}}, "missing"),
    ({"files": {"../../etc/passwd": {"sha256": "0" * 64}}}, "leaves the folder"),
    ({"files": {"/etc/passwd": {"sha256": "0" * 64}}}, "leaves the folder"),
    ({"files": {"model.onnx": {"sha256": "00"}}}, "sha256"),
    ({"files": {}}, "lists no files"),
    ({"model": "x"}, "field 'files'"),
    ([1, 2], "valid dictionary"),
])
def test_bad_manifests_are_refused_with_the_reason(version: Path, manifest: object,
                                                   message: str) -> None:
    (version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(NotPublished, match=message):
        _check(version)


def test_links_out_of_the_model_folder_are_refused(version: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(DATA)
    (version / "model.onnx").unlink()
    (version / "model.onnx").symlink_to(outside)
    (version / "READY").touch()
    with pytest.raises(NotPublished, match="symbolic link out of the model folder"):
        _check(version)
    linked = version.parent / "2"
    linked.symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(NotPublished, match="symbolic link out of the model folder"):
        _check(linked)


def test_a_link_inside_the_model_folder_is_allowed(version: Path) -> None:
    other = version.parent / "2"
    other.mkdir()
    (other / "model.onnx").symlink_to(version / "model.onnx")
    (other / "READY").touch()
    _check(other)


def test_the_verdict_is_kept_until_the_files_change(version: Path) -> None:
    check = PublishCheck(require_marker=True)
    first_stamp, reason = check(version, version.parent)
    assert reason is not None and "not published" in reason
    (version / "READY").touch()
    second_stamp, reason = check(version, version.parent)
    assert reason is None and second_stamp != first_stamp
    write_manifest(version, b"other bytes")
    assert check(version, version.parent)[1] is not None
