"""Dynamic batching in a real server: merged batches, own rows back, 503 when full."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.models import add_sub_model, save
from tests.server import KilnProcess, kiln_serve

BATCHED = """
max_batch_size: 16
dynamic_batching: {max_queue_delay_us: 30000}
instances: {count: 1}
"""
TINY_QUEUE = """
max_batch_size: 8
dynamic_batching: {max_queue_delay_us: 3000000, max_queue_size: 2}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilnProcess]:
    repo = tmp_path_factory.mktemp("repo")
    save(add_sub_model(), repo, "batched", config=BATCHED)
    save(add_sub_model(), repo, "tiny_queue", config=TINY_QUEUE)
    with kiln_serve(repo, log_dir=tmp_path_factory.mktemp("logs")) as process:
        yield process


def _request(model: str, a: np.ndarray, b: np.ndarray, **params: int) -> dict[str, object]:
    body = {"inputs": [
        {"name": "INPUT0", "shape": list(a.shape), "datatype": "FP32", "data": a.ravel().tolist()},
        {"name": "INPUT1", "shape": list(b.shape), "datatype": "FP32", "data": b.ravel().tolist()},
    ]}
    if params:
        body["parameters"] = params
    return body


def test_concurrent_requests_are_merged_and_answered_exactly(server: KilnProcess) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    before = client.get_inference_statistics("batched")["model_stats"][0]

    def one(i: int) -> tuple[int, np.ndarray, np.ndarray]:
        rows = 1 + i % 3
        a = np.full((rows, 16), i, dtype=np.float32)
        b = np.arange(rows * 16, dtype=np.float32).reshape(rows, 16)
        response = httpx.post(f"{server.base}/v2/models/batched/infer",
                              content=orjson.dumps(_request("batched", a, b)), timeout=30)
        assert response.status_code == 200, response.text
        out = {o["name"]: np.array(o["data"]).reshape(o["shape"])
               for o in response.json()["outputs"]}
        assert np.array_equal(out["OUTPUT0"], a + b) and np.array_equal(out["OUTPUT1"], a - b)
        return rows, a, b

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        sent = list(pool.map(one, range(48)))
    stats = client.get_inference_statistics("batched")["model_stats"][0]
    requests = stats["inference_stats"]["success"]["count"] - \
        before["inference_stats"]["success"].get("count", 0)
    samples = int(stats["inference_count"]) - int(before.get("inference_count", 0))
    executions = int(stats["execution_count"]) - int(before.get("execution_count", 0))
    assert requests == 48
    assert samples == sum(rows for rows, _, _ in sent)
    assert executions < 48  # requests were merged
    sizes = {int(b["batch_size"]) for b in stats["batch_stats"]}
    assert max(sizes) > 3 and max(sizes) <= 16


def test_full_queue_answers_503_at_once(server: KilnProcess) -> None:
    a = np.ones((1, 16), dtype=np.float32)
    body = orjson.dumps(_request("tiny_queue", a, a))
    url = f"{server.base}/v2/models/tiny_queue/infer"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(httpx.post, url, content=body, timeout=30) for _ in range(2)]
        time.sleep(0.5)
        started = time.monotonic()
        refused = httpx.post(url, content=body, timeout=30)
        elapsed = time.monotonic() - started
        assert refused.status_code == 503
        assert "full" in refused.json()["error"] and refused.headers["retry-after"] == "1"
        assert elapsed < 1.5  # well before the 3 s queue delay lets the waiting ones go
        _assert_grpc_refused(server, a)
        assert [w.result().status_code for w in waiting] == [200, 200]


def _assert_grpc_refused(server: KilnProcess, a: np.ndarray) -> None:
    """Over gRPC a full queue is UNAVAILABLE (Triton's code for it), also at once."""
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    inputs = [grpcclient.InferInput(name, list(a.shape), "FP32") for name in ("INPUT0", "INPUT1")]
    for i in inputs:
        i.set_data_from_numpy(a)
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as refused:
        client.infer("tiny_queue", inputs, client_timeout=30)
    assert time.monotonic() - started < 1.5
    assert refused.value.status() == "StatusCode.UNAVAILABLE"
    assert "full" in refused.value.message()
    client.close()


def test_request_timeout_parameter(server: KilnProcess) -> None:
    a = np.ones((1, 16), dtype=np.float32)
    response = httpx.post(f"{server.base}/v2/models/tiny_queue/infer",
                          content=orjson.dumps(_request("tiny_queue", a, a, timeout=2000)),
                          timeout=30)
    assert response.status_code == 503
    assert "timeout of 2000 us" in response.json()["error"]
    bad = httpx.post(f"{server.base}/v2/models/tiny_queue/infer",
                     content=orjson.dumps(_request("tiny_queue", a, a, priority=-3)))
    assert bad.status_code == 400 and "priority" in bad.json()["error"]


def test_statistics_endpoints_agree(server: KilnProcess) -> None:
    everything = httpx.get(f"{server.base}/v2/models/stats").json()["model_stats"]
    assert {s["name"] for s in everything} == {"batched", "tiny_queue"}
    one = httpx.get(f"{server.base}/v2/models/batched/versions/1/stats").json()["model_stats"]
    assert one[0]["name"] == "batched" and one[0]["version"] == "1"
