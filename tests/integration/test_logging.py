"""Request ids, structured request logs, the logging extension at run time, tracing spans."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.models import mlp_model, save
from tests.server import KilnProcess, kiln_serve

#: A value that must never reach the log, whatever the log level.
SECRET = 7316.4921875


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("repo")
    save(mlp_model((8, 16, 4)), path, "mlp", config="optimization: {intra_op_threads: 1}\n")
    return path


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnProcess]:
    with kiln_serve(repo, "--log-format", "json",
                    log_dir=tmp_path_factory.mktemp("logs")) as process:
        yield process


def body(rows: int = 1, cols: int = 8, **extra: Any) -> dict[str, Any]:
    data = np.full(rows * cols, SECRET, dtype=np.float32).tolist()
    return {**extra, "inputs": [{"name": "input", "shape": [rows, cols], "datatype": "FP32",
                                 "data": data}]}


def infer(server: KilnProcess, payload: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{server.base}/v2/models/mlp/infer", json=payload, headers=headers,
                      timeout=30)


def log_lines(server: KilnProcess) -> list[dict[str, Any]]:
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            lines.append(orjson.loads(line))
    return lines


def wait_for(server: KilnProcess, match: Callable[[dict[str, Any]], bool],
             timeout_s: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [line for line in log_lines(server) if match(line)]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no matching log line in:\n{server.log()[-3000:]}")


def test_request_id_header_is_honoured_then_v2_id_then_generated(server: KilnProcess) -> None:
    assert infer(server, body(), **{"x-request-id": "trace-42"}).headers["x-request-id"] == \
        "trace-42"
    assert infer(server, body(id="v2-id-7"), **{"x-request-id": "hdr-1"}).headers[
        "x-request-id"] == "hdr-1"
    answer = infer(server, body(id="v2-id-7"))
    assert answer.headers["x-request-id"] == "v2-id-7" and answer.json()["id"] == "v2-id-7"
    generated = {infer(server, body()).headers["x-request-id"] for _ in range(3)}
    generated.add(infer(server, body(), **{"x-request-id": "has space"}).headers["x-request-id"])
    assert len(generated) == 4 and "has space" not in generated
    failed = infer(server, body(cols=5), **{"x-request-id": "bad-shape-1"})
    assert failed.status_code == 400 and failed.headers["x-request-id"] == "bad-shape-1"
    health = httpx.get(f"{server.base}/v2/health/ready", headers={"x-request-id": "probe-9"})
    assert health.headers["x-request-id"] == "probe-9"


def test_failed_requests_are_logged_at_info_with_id_and_reason(server: KilnProcess) -> None:
    infer(server, body(cols=5), **{"x-request-id": "info-fail-1"})
    line = wait_for(server, lambda line: line.get("id") == "info-fail-1")
    assert line["level"] == "info" and line["status"] == 400
    assert line["reason"] == "invalid_argument" and "expects shape" in line["error"]
    assert line["path"] == "/v2/models/mlp/infer"


def test_log_level_changes_at_run_time(server: KilnProcess) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.get_log_settings()["log_verbose_level"] == 0
    infer(server, body(), **{"x-request-id": "quiet-1"})
    assert client.update_log_settings({"log_verbose_level": 1})["log_verbose_level"] == 1
    try:
        infer(server, body(2), **{"x-request-id": "loud-1"})
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        tensor = grpcclient.InferInput("input", [1, 8], "FP32")
        tensor.set_data_from_numpy(np.full((1, 8), SECRET, dtype=np.float32))
        grpc.infer("mlp", [tensor], request_id="loud-grpc-1")
        line = wait_for(server, lambda line: line.get("id") == "loud-1")
        grpc_line = wait_for(server, lambda line: line.get("id") == "loud-grpc-1")
    finally:
        assert client.update_log_settings({"log_verbose_level": 0})["log_verbose_level"] == 0
    infer(server, body(), **{"x-request-id": "quiet-2"})
    assert line["level"] == "debug" and line["status"] == 200
    assert (line["model"], line["version"], line["protocol"]) == ("mlp", "1", "http")
    assert all(line[k] > 0 for k in ("decode_us", "queue_us", "compute_us", "encode_us"))
    assert line["total_us"] >= line["compute_us"]
    assert (grpc_line["protocol"], grpc_line["status"], grpc_line["model"]) == \
        ("grpc", "OK", "mlp")
    ids = {line.get("id") for line in log_lines(server)}
    assert "quiet-1" not in ids and "quiet-2" not in ids


def test_tensor_values_never_reach_the_log(server: KilnProcess) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    client.update_log_settings({"log_verbose_level": 1})
    try:
        answer = infer(server, body(), **{"x-request-id": "data-1"})
        output = answer.json()["outputs"][0]["data"][0]
        infer(server, body(cols=5), **{"x-request-id": "data-2"})
        httpx.post(f"{server.base}/v2/models/mlp/infer", timeout=30,
                   content=b'{"inputs": [{"name": "input", "data": [7316.4921875, "x"]}',
                   headers={"x-request-id": "data-3"})
        for request_id in ("data-1", "data-2", "data-3"):
            wait_for(server, lambda line, rid=request_id: line.get("id") == rid)
    finally:
        client.update_log_settings({"log_verbose_level": 0})
    log = server.log()
    assert "7316.49" not in log and "7316,49" not in log
    assert repr(output)[:8] not in log


def test_logging_settings_refuse_bad_values_and_file_paths(server: KilnProcess) -> None:
    url = f"{server.base}/v2/logging"
    for payload, message in (({"log_file": "/root/.bashrc"}, "'log_file' cannot be changed"),
                             ({"log_verbose_level": "high"}, "non-negative integer"),
                             ({"nope": 1}, "unknown logging setting 'nope'")):
        answer = httpx.post(url, json=payload)
        assert answer.status_code == 400 and message in answer.json()["error"]
    assert httpx.post(url, content=b"{").status_code == 400
    assert httpx.get(url).json()["log_file"] == ""
    assert "logging" in httpx.get(f"{server.base}/v2").json()["extensions"]


def test_tracing_spans_and_metrics_off(repo: Path, tmp_path: Path) -> None:
    """One server with console tracing and --allow-metrics false."""
    with kiln_serve(repo, "--trace-exporter", "console", "--allow-metrics", "false",
                    log_dir=tmp_path) as server:
        trace_id = "0af7651916cd43dd8448eb211c80319c"
        traceparent = f"00-{trace_id}-b7ad6b7169203331-01"
        assert infer(server, body(), traceparent=traceparent).status_code == 200
        spans = {}
        deadline = time.monotonic() + 10
        while len(spans) < 5 and time.monotonic() < deadline:
            spans = {line["name"]: line for line in log_lines(server) if "context" in line}
            time.sleep(0.05)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics")
        stats = httpx.get(f"{server.base}/v2/models/mlp/stats").json()["model_stats"][0]
    assert set(spans) == {"infer", "decode", "queue", "execute", "encode"}
    root = spans["infer"]
    assert root["parent_id"] == "0xb7ad6b7169203331"
    assert root["attributes"]["kiln.model"] == "mlp"
    for name in ("decode", "queue", "execute", "encode"):
        assert spans[name]["context"]["trace_id"] == f"0x{trace_id}"
        assert spans[name]["parent_id"] == root["context"]["span_id"]
    assert spans["queue"]["end_time"] <= spans["execute"]["end_time"] <= root["end_time"]
    assert stats["inference_stats"]["success"]["count"] == 1  # statistics stay on
