"""The repository API (Triton's extension) in explicit control mode, over HTTP and gRPC."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.lifecycle import index, infer_body, offset_of, publish
from tests.models import offset_model
from tests.server import KilnProcess, kiln_serve


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the repository, holding a model the server must never load."""
    path = tmp_path_factory.mktemp("outside")
    publish(path, "secret", 1, offset_model(99.0))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, outside: Path) -> Iterator[KilnProcess]:
    repo = tmp_path_factory.mktemp("repo")
    publish(repo, "offset", 1, offset_model(1.0))
    publish(repo, "offset", 2, offset_model(2.0))
    publish(repo, "other", 1, offset_model(7.0))
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"\x08\x07 not a model")
    (repo / "linked").symlink_to(outside / "secret", target_is_directory=True)
    (repo / "escape" / "1").mkdir(parents=True)
    (repo / "escape" / "1" / "model.onnx").symlink_to(outside / "secret" / "1" / "model.onnx")
    with kiln_serve(repo, "--model-control-mode", "explicit", "--load-model", "offset",
                    "--allow-repository-api", "true",
                    log_dir=tmp_path_factory.mktemp("logs")) as process:
        yield process


def _infer(server: KilnProcess, model: str, version: str = "") -> httpx.Response:
    path = f"/versions/{version}" if version else ""
    return httpx.post(f"{server.base}/v2/models/{model}{path}/infer", json=infer_body(),
                      timeout=30)


def _post(server: KilnProcess, path: str, body: object = None) -> httpx.Response:
    return httpx.post(f"{server.base}/v2/repository/{path}", json=body, timeout=60)


def test_explicit_mode_loads_only_the_named_models(server: KilnProcess) -> None:
    assert httpx.get(f"{server.base}/v2/health/ready").status_code == 200
    assert offset_of(_infer(server, "offset")) == 2.0
    rows = {r["name"]: r for r in index(server.base) if r.get("version") != "1"}
    assert rows["offset"] == {"name": "offset", "version": "2", "state": "READY"}
    assert rows["other"] == {"name": "other"}  # in the repository, never loaded (as Triton)
    assert _infer(server, "other").status_code == 404


def test_load_and_unload_over_http(server: KilnProcess) -> None:
    assert _post(server, "models/other/load").status_code == 200
    assert offset_of(_infer(server, "other")) == 7.0
    assert _post(server, "models/other/unload", {"parameters": {"unload_dependents": False}}
                 ).status_code == 200
    gone = _infer(server, "other")
    assert gone.status_code == 404 and "not loaded (unloaded)" in gone.json()["error"]
    assert httpx.get(f"{server.base}/v2/models/other/ready").status_code == 503
    assert {"name": "other", "state": "UNAVAILABLE", "reason": "unloaded"} in index(server.base)
    assert httpx.get(f"{server.base}/v2/health/ready").status_code == 200


def test_a_model_that_fails_to_load_is_reported_and_unready(server: KilnProcess) -> None:
    response = _post(server, "models/broken/load")
    assert response.status_code == 400
    assert "failed to load model 'broken': version 1:" in response.json()["error"]
    assert "not a valid onnx model" in response.json()["error"].lower()
    row = next(r for r in index(server.base) if r["name"] == "broken" and r.get("version"))
    assert row["state"] == "UNAVAILABLE" and "not a valid onnx model" in row["reason"].lower()
    # It should be loaded and is not: the server is not ready until it is unloaded.
    assert httpx.get(f"{server.base}/v2/health/ready").status_code == 503
    assert _post(server, "models/broken/unload").status_code == 200
    assert httpx.get(f"{server.base}/v2/health/ready").status_code == 200


def test_a_config_override_changes_versions_and_labels(server: KilnProcess) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    client.load_model("offset", config=json.dumps(
        {"version_policy": {"all": True}, "labels": {"stable": 1, "canary": 2}}))
    assert offset_of(_infer(server, "offset", "stable")) == 1.0
    assert offset_of(_infer(server, "offset", "canary")) == 2.0
    assert offset_of(_infer(server, "offset")) == 2.0
    # Triton's ModelConfig JSON works too (here through gRPC): only version 1.
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    grpc.load_model("offset", config=json.dumps({
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "version_policy": {"specific": {"versions": [1]}}}))
    assert offset_of(_infer(server, "offset")) == 1.0
    assert _infer(server, "offset", "2").status_code == 404
    # A load without config goes back to the folder's config (latest version).
    client.load_model("offset")
    assert offset_of(_infer(server, "offset")) == 2.0
    bad = _post(server, "models/offset/load", {"parameters": {"config": '{"max_batch": 4}'}})
    assert bad.status_code == 400 and "did you mean 'max_batch_size'" in bad.json()["error"]
    assert offset_of(_infer(server, "offset")) == 2.0


@pytest.mark.parametrize("name", ["%2E%2E", "%2E%2E%2F%2E%2E%2Fetc", "%2Fetc%2Fpasswd",
                                  "a%2F..%2F..%2Fb", "%2Ftmp", ".hidden"])
def test_names_that_leave_the_repository_are_refused(server: KilnProcess, name: str) -> None:
    response = _post(server, f"models/{name}/load")
    assert response.status_code == 400, response.text
    assert "invalid model name" in response.json()["error"]


def test_symbolic_links_out_of_the_repository_are_refused(server: KilnProcess) -> None:
    folder = _post(server, "models/linked/load")
    assert folder.status_code == 400 and "symbolic link" in folder.json()["error"]
    file = _post(server, "models/escape/load")
    assert file.status_code == 400
    assert "symbolic link out of the model folder" in file.json()["error"]
    for name in ("escape", "linked"):
        assert _infer(server, name).status_code == 503
        assert _post(server, f"models/{name}/unload").status_code == 200
    assert httpx.get(f"{server.base}/v2/health/ready").status_code == 200


def test_model_files_cannot_be_sent_through_the_api(server: KilnProcess) -> None:
    response = _post(server, "models/other/load",
                     {"parameters": {"config": "{}", "file:1/model.onnx": "AAAA"}})
    assert response.status_code == 400
    assert "does not accept model files" in response.json()["error"]


def test_the_repository_api_over_grpc(server: KilnProcess) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    client.load_model("other")
    assert client.is_model_ready("other")
    models = client.get_model_repository_index().models
    assert any(m.name == "other" and m.version == "1" and m.state == "READY" for m in models)
    ready = client.get_model_repository_index(as_json=True)
    assert ready["models"]
    client.unload_model("other")
    assert not client.is_model_ready("other")
    for name in ("../x", "/etc/passwd", "a/../../b"):
        with pytest.raises(InferenceServerException) as info:
            client.load_model(name)
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "invalid model name" in info.value.message()


def test_the_repository_api_is_off_unless_enabled(example_server: KilnProcess) -> None:
    response = httpx.post(f"{example_server.base}/v2/repository/index")
    assert response.status_code == 403
    assert "--allow-repository-api true" in response.json()["error"]
