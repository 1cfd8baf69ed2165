"""TLS on both listeners (HTTPS and gRPC), TLS 1.2 as the floor, and mutual TLS."""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.credentials import Certs, make_certs
from tests.models import add_sub_model, save
from tests.server import KilnProcess, kiln_serve

INFER = {"inputs": [{"name": n, "shape": [1, 16], "datatype": "FP32", "data": [1.0] * 16}
                    for n in ("INPUT0", "INPUT1")]}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("repo")
    save(add_sub_model(), path, "add_sub")
    return path


def _tls_args(certs: Certs) -> list[str]:
    return ["--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key)]


@pytest.fixture(scope="module")
def server(certs: Certs, repo: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[KilnProcess]:
    with kiln_serve(repo, *_tls_args(certs), client={"verify": _client_context(certs)},
                    log_dir=tmp_path_factory.mktemp("logs")) as process:
        yield process


def _client_context(certs: Certs, *, maximum: ssl.TLSVersion | None = None,
                    with_certificate: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if with_certificate:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    if maximum is not None:
        # Let this client offer old versions at all, so the server is the one refusing.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = maximum
    return context


def test_https_serves_and_plain_http_does_not(server: KilnProcess, certs: Certs) -> None:
    response = httpx.post(f"{server.base}/v2/models/add_sub/infer", json=INFER,
                          verify=_client_context(certs))
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [2.0] * 16
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{server.http_port}/v2/health/live", timeout=3)


def _handshake(port: int, context: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        return str(tls.version())


@pytest.mark.parametrize("listener", ["http", "grpc"])
def test_tls_1_1_is_refused_and_1_2_accepted(server: KilnProcess, certs: Certs,
                                             listener: str) -> None:
    port = server.http_port if listener == "http" else server.grpc_port
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = _client_context(certs, maximum=ssl.TLSVersion.TLSv1_1)
    with pytest.raises(ssl.SSLError):  # the server ends the handshake
        _handshake(port, old)
    context = _client_context(certs, maximum=ssl.TLSVersion.TLSv1_2)
    if listener == "grpc":
        context.set_alpn_protocols(["h2"])
    assert _handshake(port, context) == "TLSv1.2"


def test_grpc_over_tls(server: KilnProcess, certs: Certs) -> None:
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}", ssl=True,
                                          root_certificates=str(certs.ca)) as client:
        inputs = [grpcclient.InferInput(n, [1, 16], "FP32") for n in ("INPUT0", "INPUT1")]
        for tensor in inputs:
            tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
        result = client.infer("add_sub", inputs)
        assert np.array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), 2, np.float32))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel, \
            pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=5)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate(certs: Certs, repo: Path,
                                                  tmp_path: Path) -> None:
    mutual = _client_context(certs, with_certificate=True)
    with kiln_serve(repo, *_tls_args(certs), "--tls-client-ca-file", str(certs.ca),
                    client={"verify": mutual}, log_dir=tmp_path) as server:
        ok = httpx.get(f"{server.base}/v2/health/ready", verify=mutual)
        assert ok.status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.base}/v2/health/ready", verify=_client_context(certs),
                      timeout=5)
        root, key, chain = (p.read_bytes() for p in (certs.ca, certs.client_key,
                                                      certs.client_cert))
        address = f"127.0.0.1:{server.grpc_port}"
        with grpc.secure_channel(address, grpc.ssl_channel_credentials(root, key, chain)) as ch:
            live = pb_grpc.GRPCInferenceServiceStub(ch).ServerLive(pb.ServerLiveRequest())
            assert live.live
        with grpc.secure_channel(address, grpc.ssl_channel_credentials(root)) as ch, \
                pytest.raises(grpc.RpcError) as info:
            pb_grpc.GRPCInferenceServiceStub(ch).ServerLive(pb.ServerLiveRequest(), timeout=5)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
