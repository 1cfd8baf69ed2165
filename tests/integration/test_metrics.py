"""Prometheus /metrics and the statistics extension, counted exactly against known requests."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families

from kiln.serve.observability.metrics import gpu_collector
from tests.models import add_sub_model, mlp_model, save
from tests.server import KilnProcess, kiln_serve

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

BATCHED = """
max_batch_size: 8
dynamic_batching: {max_queue_delay_us: 200000}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnProcess]:
    repo = tmp_path_factory.mktemp("repo")
    save(mlp_model((8, 16, 4)), repo, "counted", config="optimization: {intra_op_threads: 1}\n")
    save(add_sub_model(), repo, "batched", config=BATCHED)
    save(mlp_model((8, 16, 4)), repo, "clients", config="optimization: {intra_op_threads: 1}\n")
    with kiln_serve(repo, log_dir=tmp_path_factory.mktemp("logs")) as process:
        yield process


def scrape(server: KilnProcess) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def mlp_body(rows: int, cols: int = 8) -> dict[str, object]:
    data = np.linspace(0, 1, rows * cols, dtype=np.float32)
    return {"inputs": [{"name": "input", "shape": [rows, cols], "datatype": "FP32",
                        "data": data.tolist()}]}


def post(server: KilnProcess, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{server.base}{path}", timeout=30, **kwargs)  # type: ignore[arg-type]


def test_metrics_count_successes_failures_and_samples_exactly(server: KilnProcess) -> None:
    before = scrape(server)
    for rows in (1, 2, 3, 1, 1):
        assert post(server, "/v2/models/counted/infer", json=mlp_body(rows)).status_code == 200
    for _ in range(3):  # wrong shape: refused by validation, in the data plane
        assert post(server, "/v2/models/counted/infer", json=mlp_body(1, 7)).status_code == 400
    for _ in range(2):  # not JSON: refused while decoding
        assert post(server, "/v2/models/counted/infer", content=b"{nope").status_code == 400
    for name in ("ghost1", "ghost2", "ghost3"):  # unknown models share one label
        assert post(server, f"/v2/models/{name}/infer", json=mlp_body(1)).status_code == 404
    assert post(server, "/v2/models/counted/versions/9/infer",
                json=mlp_body(1)).status_code == 404
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    v1 = {"model": "counted", "version": "1"}
    assert delta("kiln_inference_request_success_total", **v1) == 5
    assert delta("kiln_inference_request_failure_total", **v1, reason="invalid_argument") == 5
    assert delta("kiln_inference_request_failure_total", model="_unknown", version="_unknown",
                 reason="not_found") == 3
    assert delta("kiln_inference_request_failure_total", model="counted", version="_unknown",
                 reason="not_found") == 1
    assert not any(dict(labels).get("model", "").startswith("ghost") for _, labels in after)
    assert delta("kiln_inference_count_total", **v1) == 8
    assert delta("kiln_inference_exec_count_total", **v1) == 5
    for histogram in ("request_duration_seconds", "queue_duration_seconds",
                      "compute_duration_seconds", "batch_size"):
        assert delta(f"kiln_inference_{histogram}_count", **v1) == 5
        assert delta(f"kiln_inference_{histogram}_bucket", **v1, le="+Inf") == 5
    assert delta("kiln_inference_batch_size_sum", **v1) == 8
    assert [delta("kiln_inference_batch_size_bucket", **v1, le=le)
            for le in ("1.0", "2.0", "4.0")] == [3, 4, 5]
    assert sample(after, "kiln_inference_pending_requests", **v1) == 0


def test_statistics_endpoint_agrees_with_metrics(server: KilnProcess) -> None:
    post(server, "/v2/models/counted/infer", json=mlp_body(2))
    post(server, "/v2/models/counted/infer", json=mlp_body(1, 5))
    stats = httpx.get(f"{server.base}/v2/models/counted/stats").json()["model_stats"][0]
    metrics = scrape(server)
    v1 = {"model": "counted", "version": "1"}
    inference = stats["inference_stats"]
    assert inference["success"]["count"] == \
        sample(metrics, "kiln_inference_request_success_total", **v1)
    assert inference["fail"]["count"] == sum(
        value for (name, labels), value in metrics.items()
        if name == "kiln_inference_request_failure_total" and dict(labels)["model"] == "counted"
        and dict(labels)["version"] == "1")
    assert inference["queue"]["count"] == \
        sample(metrics, "kiln_inference_queue_duration_seconds_count", **v1)
    assert stats["inference_count"] == sample(metrics, "kiln_inference_count_total", **v1)
    assert stats["execution_count"] == sample(metrics, "kiln_inference_exec_count_total", **v1)
    assert inference["success"]["ns"] / 1e9 == pytest.approx(
        sample(metrics, "kiln_inference_request_duration_seconds_sum", **v1))
    assert sum(b["compute_infer"]["count"] for b in stats["batch_stats"]) == \
        stats["execution_count"]


def test_batched_requests_show_fewer_executions_than_inferences(server: KilnProcess) -> None:
    def one(i: int) -> int:
        value = np.full((1, 16), i, dtype=np.float32).ravel().tolist()
        body = {"inputs": [{"name": n, "shape": [1, 16], "datatype": "FP32", "data": value}
                           for n in ("INPUT0", "INPUT1")]}
        return post(server, "/v2/models/batched/infer", json=body).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(8))) == [200] * 8
    metrics = scrape(server)
    stats = httpx.get(f"{server.base}/v2/models/batched/stats").json()["model_stats"][0]
    labels = {"model": "batched", "version": "1"}
    executions = sample(metrics, "kiln_inference_exec_count_total", **labels)
    assert sample(metrics, "kiln_inference_count_total", **labels) == 8
    assert executions == stats["execution_count"] < 8
    assert sample(metrics, "kiln_inference_batch_size_count", **labels) == executions
    assert sample(metrics, "kiln_inference_batch_size_sum", **labels) == 8
    assert sample(metrics, "kiln_inference_compute_duration_seconds_count", **labels) == executions
    assert sample(metrics, "kiln_inference_queue_duration_seconds_count", **labels) == 8
    # Triton's per-request compute count: every request, merged or not.
    assert stats["inference_stats"]["compute_infer"]["count"] == 8


def test_model_state_load_time_and_process_figures(server: KilnProcess) -> None:
    metrics = scrape(server)
    v1 = {"model": "counted", "version": "1"}
    assert sample(metrics, "kiln_model_state", **v1, state="READY") == 1
    assert sample(metrics, "kiln_model_state", **v1, state="LOADING") == 0
    assert sample(metrics, "kiln_model_load_duration_seconds", **v1) > 0
    assert sample(metrics, "process_resident_memory_bytes") > 10 << 20
    assert sample(metrics, "process_cpu_seconds_total") > 0
    has_gpu_metrics = any(name.startswith("kiln_gpu_") for name, _ in metrics)
    assert has_gpu_metrics == (gpu_collector() is not None)


def test_tritonclient_reads_the_statistics_over_http_and_grpc(server: KilnProcess) -> None:
    post(server, "/v2/models/clients/infer", json=mlp_body(3))
    http = httpclient.InferenceServerClient(server.http_url)
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    over_http = http.get_inference_statistics("clients", "1")["model_stats"][0]
    over_grpc = grpc.get_inference_statistics("clients").model_stats[0]  # Triton's protobuf
    assert over_http["name"] == over_grpc.name == "clients"
    assert over_http["version"] == over_grpc.version == "1"
    assert over_http["inference_count"] == over_grpc.inference_count == 3
    assert over_http["inference_stats"]["success"]["count"] == \
        over_grpc.inference_stats.success.count == 1
    assert [b["batch_size"] for b in over_http["batch_stats"]] == \
        [b.batch_size for b in over_grpc.batch_stats] == [3]
    everything = http.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} == {"batched", "clients", "counted"}
    assert len(grpc.get_inference_statistics().model_stats) == 3
