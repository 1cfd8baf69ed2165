"""API keys on a real ``kiln serve``: every endpoint group × every kind of key, over HTTP and
gRPC; keys never logged; revocation without restart; startup refusals."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from kiln.errors import ConfigError
from kiln.repository.model_keys import write_key_file
from kiln.serve.app import KilnServer
from kiln.serve.security.keys import new_key
from kiln.serve.settings import ServerSettings
from tests.credentials import make_keys
from tests.models import add_sub_model, identity_model, save
from tests.server import KilnProcess, kiln_serve

KINDS = ("none", "bad", "other-scope", "wrong-model", "right", "admin")
SCOPE_OF = {"health": None, "metadata": "metadata", "infer": "infer", "statistics": "metrics",
            "metrics": "metrics",
            "repository": "admin", "logging": "admin"}
#: For each scope, a key holding some other scope only.
OTHER = {"metadata": "infer", "infer": "metadata", "metrics": "infer", "admin": "metrics"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("keys")
    path = folder / "keys.yaml"
    scoped = ["infer", "metadata", "metrics"]
    tokens = make_keys(path, *[([s], ["add_sub"]) for s in scoped], (["admin"], None),
                       (scoped, ["identity"]))
    bad, _ = new_key(scopes=["admin"])
    return {"path": path, "admin": tokens[3], "wrong-model": tokens[4], "bad": bad,
            **dict(zip(scoped, tokens[:3], strict=True))}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Any]
           ) -> Iterator[KilnProcess]:
    repo = tmp_path_factory.mktemp("repo")
    save(add_sub_model(), repo, "add_sub")
    save(identity_model(), repo, "identity")
    # The repository API is on, so that only the key decides whether its calls get through.
    with kiln_serve(repo, "--keys-file", str(keys["path"]), "--log-verbose", "1",
                    "--allow-repository-api", "true", "--model-control-mode", "explicit",
                    "--load-model", "*", log_dir=tmp_path_factory.mktemp("logs")) as process:
        yield process


def token_for(kind: str, group: str, keys: dict[str, Any]) -> str | None:
    scope = SCOPE_OF[group] or "infer"
    return {"none": None, "bad": keys["bad"], "other-scope": keys[OTHER[scope]],
            "wrong-model": keys["wrong-model"], "right": keys[scope],
            "admin": keys["admin"]}[kind]


def expected(kind: str, group: str, names_model: bool) -> str:
    if SCOPE_OF[group] is None or kind in ("right", "admin"):
        return "ok"
    if kind in ("none", "bad"):
        return "unauthenticated"
    if kind == "wrong-model":  # infer, metadata and metrics scopes, for another model
        return "denied" if names_model or SCOPE_OF[group] == "admin" else "ok"
    return "denied"


INFER = orjson.dumps({"inputs": [
    {"name": n, "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}
    for n in ("INPUT0", "INPUT1")]})
HTTP_ENDPOINTS = [  # method, path, body, group, names a model
    ("GET", "/v2/health/live", None, "health", False),
    ("GET", "/v2/health/ready", None, "health", False),
    ("GET", "/v2/models/add_sub/ready", None, "health", True),
    ("GET", "/v1/models/add_sub", None, "health", True),
    ("GET", "/v2", None, "metadata", False),
    ("GET", "/v2/models/add_sub", None, "metadata", True),
    ("GET", "/v2/models/add_sub/versions/1/config", None, "metadata", True),
    ("GET", "/v1/models/add_sub/metadata", None, "metadata", True),
    ("POST", "/v2/models/add_sub/infer", INFER, "infer", True),
    ("POST", "/v1/models/add_sub:predict",
     orjson.dumps({"inputs": {"INPUT0": [[1.0] * 16], "INPUT1": [[2.0] * 16]}}), "infer", True),
    ("GET", "/v2/models/add_sub/stats", None, "statistics", True),
    ("GET", "/v2/models/stats", None, "statistics", False),
    ("POST", "/v2/repository/index", b"{}", "repository", False),
    ("POST", "/v2/repository/models/add_sub/load", b"{}", "repository", True),
    ("GET", "/v2/logging", None, "logging", False),
    ("GET", "/metrics", None, "metrics", False),
]
HTTP_OUTCOME = {200: "ok", 401: "unauthenticated", 403: "denied"}


@pytest.mark.parametrize(("method", "path", "body", "group", "names_model"), HTTP_ENDPOINTS,
                         ids=[f"{e[0]} {e[1]}" for e in HTTP_ENDPOINTS])
def test_http_matrix(server: KilnProcess, keys: dict[str, Any], method: str, path: str,
                     body: bytes | None, group: str, names_model: bool) -> None:
    for kind in KINDS:
        token = token_for(kind, group, keys)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        base = f"http://127.0.0.1:{server.metrics_port}" if group == "metrics" else server.base
        response = httpx.request(method, base + path, content=body, headers=headers)
        outcome = HTTP_OUTCOME.get(response.status_code, str(response.status_code))
        assert outcome == expected(kind, group, names_model), (kind, response.text)
        if outcome == "unauthenticated":
            assert response.headers["www-authenticate"].startswith("Bearer")
        if token and response.status_code >= 400:
            assert token not in response.text and token[22:] not in response.text


def _raw_infer(model: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 16])
        request.raw_input_contents.append(b"\0" * 64)
    return request


def _stream(stub: pb_grpc.GRPCInferenceServiceStub, metadata: Any) -> Any:
    responses = list(stub.ModelStreamInfer(iter([_raw_infer("add_sub")]), metadata=metadata))
    assert not responses[0].error_message
    return responses


GRPC_CALLS: list[tuple[str, Callable[[Any, Any], Any], str, bool]] = [
    ("ServerLive", lambda s, m: s.ServerLive(pb.ServerLiveRequest(), metadata=m), "health",
     False),
    ("ModelReady", lambda s, m: s.ModelReady(pb.ModelReadyRequest(name="add_sub"), metadata=m),
     "health", True),
    ("ServerMetadata", lambda s, m: s.ServerMetadata(pb.ServerMetadataRequest(), metadata=m),
     "metadata", False),
    ("ModelMetadata", lambda s, m: s.ModelMetadata(pb.ModelMetadataRequest(name="add_sub"),
                                                   metadata=m), "metadata", True),
    ("ModelConfig", lambda s, m: s.ModelConfig(pb.ModelConfigRequest(name="add_sub"),
                                               metadata=m), "metadata", True),
    ("ModelInfer", lambda s, m: s.ModelInfer(_raw_infer("add_sub"), metadata=m), "infer", True),
    ("ModelStreamInfer", _stream, "infer", True),
    ("ModelStatistics", lambda s, m: s.ModelStatistics(
        pb.ModelStatisticsRequest(name="add_sub"), metadata=m), "statistics", True),
    ("ModelStatistics-all", lambda s, m: s.ModelStatistics(pb.ModelStatisticsRequest(),
                                                           metadata=m), "statistics", False),
    ("RepositoryIndex", lambda s, m: s.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=m),
     "repository", False),
    ("RepositoryModelLoad", lambda s, m: s.RepositoryModelLoad(
        pb.RepositoryModelLoadRequest(model_name="add_sub"), metadata=m), "repository", True),
    ("LogSettings", lambda s, m: s.LogSettings(pb.LogSettingsRequest(), metadata=m), "logging",
     False),
]
GRPC_OUTCOME = {grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
                grpc.StatusCode.PERMISSION_DENIED: "denied"}


@pytest.mark.parametrize(("call", "group", "names_model"), [c[1:] for c in GRPC_CALLS],
                         ids=[c[0] for c in GRPC_CALLS])
def test_grpc_matrix(server: KilnProcess, keys: dict[str, Any], call: Callable[[Any, Any], Any],
                     group: str, names_model: bool) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for kind in KINDS:
            token = token_for(kind, group, keys)
            metadata = (("authorization", f"Bearer {token}"),) if token else ()
            try:
                call(stub, metadata)
                outcome = "ok"
            except grpc.RpcError as exc:
                # Passing the key check and reaching a method kiln does not offer counts as ok.
                outcome = GRPC_OUTCOME.get(exc.code(), "ok")
                assert token is None or token not in (exc.details() or "")
            assert outcome == expected(kind, group, names_model), kind


def test_a_stream_ends_at_the_first_request_for_a_model_the_key_may_not_use(
        server: KilnProcess, keys: dict[str, Any]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        requests = iter([_raw_infer("add_sub"), _raw_infer("identity"), _raw_infer("add_sub")])
        responses = stub.ModelStreamInfer(
            requests, metadata=(("authorization", f"Bearer {keys['infer']}"),))
        first = next(responses)
        assert not first.error_message and first.infer_response.model_name == "add_sub"
        with pytest.raises(grpc.RpcError) as info:
            next(responses)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "may not use model 'identity'" in info.value.details()


def test_keys_are_never_accepted_from_a_query_string(server: KilnProcess,
                                                     keys: dict[str, Any]) -> None:
    for query in (f"?authorization=Bearer%20{keys['admin']}", f"?key={keys['admin']}",
                  f"?access_token={keys['admin']}"):
        response = httpx.get(server.base + "/v2/models/add_sub" + query)
        assert response.status_code == 401


def test_keys_never_appear_in_the_log(server: KilnProcess, keys: dict[str, Any]) -> None:
    """After the matrices above (run first in this module), the debug-level log holds no key."""
    for kind in ("bad", "admin", "infer"):
        httpx.get(server.base + "/v3/unknown", headers={"Authorization": f"Bearer {keys[kind]}"})
    log = server.log()
    assert "API keys from" in log
    for name in ("admin", "infer", "metadata", "metrics", "wrong-model", "bad"):
        token = keys[name]
        assert token not in log and token[22:34] not in log, name


def test_revoking_a_key_applies_to_a_running_server(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    gone, kept = make_keys(path, (["metadata"], None), (["metadata"], None))
    (tmp_path / "repo").mkdir()
    with kiln_serve(tmp_path / "repo", "--keys-file", str(path), log_dir=tmp_path) as server:
        def status(token: str) -> int:
            return httpx.get(server.base + "/v2",
                             headers={"Authorization": f"Bearer {token}"}).status_code

        assert status(gone) == 200
        key_id = gone.split("_")[1]
        subprocess.run([sys.executable, "-m", "kiln.cli.main", "keys", "revoke", key_id,
                        "--keys-file", str(path)], check=True, capture_output=True)
        deadline = time.monotonic() + 5
        while status(gone) != 401 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status(gone) == 401 and status(kept) == 200


def _refusal(tmp_path: Path, *args: str) -> str:
    (tmp_path / "repo").mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "kiln.cli.main", "serve", str(tmp_path / "repo"),
                           "--http-port", "0", "--grpc-port", "0", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stderr
    return done.stderr


def test_kiln_serve_refuses_to_start(tmp_path: Path) -> None:
    message = _refusal(tmp_path, "--http-address", "0.0.0.0")
    assert "refusing to serve HTTP on 0.0.0.0" in message and "--insecure" in message
    assert "kiln keys create" in message
    (tmp_path / "bad.yaml").write_text("version: 1\nkeys: [{id: 12}]\n")
    (tmp_path / "bad.yaml").chmod(0o600)
    assert "keys file" in _refusal(tmp_path, "--keys-file", str(tmp_path / "bad.yaml"))


def _refused(tmp_path: Path, **settings: Any) -> str:
    (tmp_path / "repo").mkdir(exist_ok=True)
    with pytest.raises(ConfigError) as info:
        KilnServer(ServerSettings.build(model_repository=[tmp_path / "repo"], **settings))
    return info.value.message


def test_other_startup_refusals(tmp_path: Path) -> None:
    assert "refusing to serve gRPC on ::" in _refused(tmp_path, grpc_address="::")
    assert "refusing to serve metrics on 10.0.0.1" in _refused(tmp_path,
                                                               metrics_address="10.0.0.1")
    assert "missing.yaml" in _refused(tmp_path, keys_file=tmp_path / "missing.yaml")
    assert "needs both --tls-cert-file and --tls-key-file" in _refused(
        tmp_path, tls_cert_file=tmp_path / "cert.pem")
    assert "mutual TLS is TLS first" in _refused(tmp_path, tls_client_ca_file=tmp_path / "x")
    (tmp_path / "cert.pem").write_text("not a certificate")
    assert "TLS: cannot use" in _refused(tmp_path, tls_cert_file=tmp_path / "cert.pem",
                                         tls_key_file=tmp_path / "cert.pem")
    key = tmp_path / "model.key"
    write_key_file(key)
    key.chmod(0o644)
    assert "chmod 600" in _refused(tmp_path, model_key_file=[key])
    assert "not a kiln model key" in _refused(tmp_path, model_key="kiln-model-key-v1:00:AAAA")
