"""Poll mode in a real server: versions published while clients send requests.

One server follows one repository through a sequence of deployments; every step checks
that no request failed and which version answered.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.lifecycle import Traffic, index, infer_body, publish, row, wait_for, write_manifest
from tests.models import offset_model
from tests.server import KilnProcess, kiln_serve

POLL_S = 0.2


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("repo")
    publish(path, "offset", 1, offset_model(1.0))
    return path


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnProcess]:
    with kiln_serve(repo, "--model-control-mode", "poll", "--repository-poll-secs", str(POLL_S),
                    "--allow-repository-api", "true",
                    log_dir=tmp_path_factory.mktemp("logs")) as process:
        yield process


def _url(server: KilnProcess) -> str:
    return f"{server.base}/v2/models/offset/infer"


def _swap(server: KilnProcess, old: float, new: float, deploy: object) -> Traffic:
    """Run ``deploy`` while two clients send requests; return once they all get ``new``."""
    with Traffic(_url(server)) as traffic:
        wait_for(lambda: len(traffic.answers) >= 20, what="answers before the swap")
        deploy()  # type: ignore[operator]
        wait_for(lambda: traffic.latest() == new, what=f"answers from offset {new}")
        seen = len(traffic.answers)
        wait_for(lambda: len(traffic.answers) >= seen + 20, what="answers after the swap")
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.switched_once(old, new), traffic.offsets()[-50:]
    return traffic


def test_publishing_a_version_swaps_without_a_failed_request(repo: Path,
                                                              server: KilnProcess) -> None:
    traffic = _swap(server, 1.0, 2.0, lambda: publish(repo, "offset", 2, offset_model(2.0)))
    print(f"\nswap v1 -> v2: {len(traffic.answers)} requests, {len(traffic.failures)} failed")
    wait_for(lambda: row(server.base, "offset", 1) is None, what="version 1 unloaded")
    assert row(server.base, "offset", 2) == {"name": "offset", "version": "2", "state": "READY"}
    assert httpx.get(f"{server.base}/v2/models/offset/versions/1/ready").status_code == 503
    old = httpx.post(f"{server.base}/v2/models/offset/versions/1/infer", json=infer_body())
    assert old.status_code == 404 and "has no version 1" in old.json()["error"]


def test_a_corrupt_version_is_reported_and_the_old_one_keeps_serving(
        repo: Path, server: KilnProcess) -> None:
    with Traffic(_url(server)) as traffic:
        folder = repo / "offset" / ".staging-3"
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"this is not an ONNX model")
        (folder / "READY").touch()
        folder.rename(repo / "offset" / "3")
        wait_for(lambda: (row(server.base, "offset", 3) or {}).get("state") == "UNAVAILABLE",
                 what="version 3 reported")
        time.sleep(5 * POLL_S)  # it is not retried while unchanged; v2 keeps serving
    assert traffic.failures == []
    assert set(traffic.offsets()) == {2.0}
    failed = row(server.base, "offset", 3)
    assert failed is not None and "not a valid onnx model" in failed["reason"].lower(), failed
    assert row(server.base, "offset", 2)["state"] == "READY"  # type: ignore[index]
    assert httpx.get(f"{server.base}/v2/health/ready").status_code == 200
    answer = httpx.post(f"{server.base}/v2/models/offset/versions/3/infer", json=infer_body())
    assert answer.status_code == 503 and "version 3 is UNAVAILABLE" in answer.json()["error"]


def test_a_half_copied_version_without_marker_is_not_loaded(repo: Path,
                                                             server: KilnProcess) -> None:
    data = offset_model(4.0).SerializeToString()
    folder = repo / "offset" / "4"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    wait_for(lambda: "not published" in (row(server.base, "offset", 4) or {}).get("reason", ""),
             what="version 4 seen as unpublished")
    time.sleep(5 * POLL_S)
    assert row(server.base, "offset", 2)["state"] == "READY"  # type: ignore[index]

    def complete() -> None:
        (folder / "model.onnx").write_bytes(data)
        (folder / "READY").touch()

    _swap(server, 2.0, 4.0, complete)


def test_a_manifest_publishes_only_when_every_hash_matches(repo: Path,
                                                           server: KilnProcess) -> None:
    data = offset_model(5.0).SerializeToString()
    folder = repo / "offset" / "5"
    folder.mkdir()
    write_manifest(folder, data)  # the manifest first, then a file still being copied
    (folder / "model.onnx").write_bytes(data[:100])
    wait_for(lambda: "manifest.json says" in (row(server.base, "offset", 5) or {}).get(
        "reason", ""), what="version 5 refused by its manifest")
    time.sleep(5 * POLL_S)
    assert row(server.base, "offset", 4)["state"] == "READY"  # type: ignore[index]
    _swap(server, 4.0, 5.0, lambda: (folder / "model.onnx").write_bytes(data))


def test_removing_the_newest_version_rolls_back(repo: Path, server: KilnProcess) -> None:
    _swap(server, 5.0, 4.0, lambda: shutil.rmtree(repo / "offset" / "5"))
    wait_for(lambda: row(server.base, "offset", 5) is None, what="version 5 forgotten")


def test_a_config_change_reloads_and_labels_follow(repo: Path, server: KilnProcess) -> None:
    config = repo / "offset" / "config.yaml"
    config.write_text("version_policy: {all: true}\nlabels: {stable: 2, canary: 4}\n")
    base = f"{server.base}/v2/models/offset"
    wait_for(lambda: httpx.get(f"{base}/versions/stable/ready").status_code == 200,
             what="the stable label")
    for label, offset in (("stable", 2.0), ("canary", 4.0), ("1", 1.0)):
        response = httpx.post(f"{base}/versions/{label}/infer", json=infer_body())
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"][0] == 1.0 + offset
    ready = [r["version"] for r in index(server.base)
             if r["name"] == "offset" and r.get("state") == "READY"]
    assert ready == ["1", "2", "4"]  # version 3 is still the corrupt one
    missing = httpx.post(f"{base}/versions/beta/infer", json=infer_body())
    assert missing.status_code == 404 and "no version or label 'beta'" in missing.text


def test_models_come_and_go_with_their_folders(repo: Path, server: KilnProcess) -> None:
    publish(repo, "second", 1, offset_model(10.0), how="manifest")
    url = f"{server.base}/v2/models/second/infer"
    wait_for(lambda: httpx.post(url, json=infer_body()).status_code == 200, what="model 'second'")
    shutil.rmtree(repo / "second")
    wait_for(lambda: httpx.post(url, json=infer_body()).status_code == 404, what="'second' gone")
    assert all(r["name"] != "second" for r in index(server.base))
    assert httpx.get(f"{server.base}/v2/health/ready").status_code == 200


def test_the_api_cannot_load_in_poll_mode(server: KilnProcess) -> None:
    response = httpx.post(f"{server.base}/v2/repository/models/offset/unload")
    assert response.status_code == 400
    assert "model control mode 'poll'" in response.json()["error"]

