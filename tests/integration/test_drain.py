"""Requests in flight finish: across an unload, across SIGTERM; unloading frees memory.

Requests are held in flight by a batching delay: ``max_queue_delay_us`` keeps them queued
(the batch never fills) for HOLD_S after they arrive. Each request is written in full on
its own connection before the unload or the signal, so all of them are in the server.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.lifecycle import infer_body, publish, wait_for
from tests.models import mlp_model, offset_model
from tests.server import KilnProcess, kiln_serve

HOLD_S = 1.5
HELD = f"""
max_batch_size: 64
dynamic_batching: {{max_queue_delay_us: {int(HOLD_S * 1e6)}, max_queue_size: 256}}
"""


@pytest.fixture
def held_repo(repo: Path) -> Path:
    publish(repo, "held", 1, offset_model(3.0))
    (repo / "held" / "config.yaml").write_text(HELD)
    return repo


def _send(server: KilnProcess, count: int) -> list[http.client.HTTPConnection]:
    """Write ``count`` requests in full, each on its own connection; answers are read later."""
    body = json.dumps(infer_body())
    connections = []
    for _ in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        connection.request("POST", "/v2/models/held/infer", body,
                           {"Content-Type": "application/json"})
        connections.append(connection)
    return connections


def _answers(connections: list[http.client.HTTPConnection]) -> list[tuple[int, float]]:
    answers = []
    for connection in connections:
        response = connection.getresponse()
        data = json.loads(response.read())
        answers.append((response.status, data["outputs"][0]["data"][0] if "outputs" in data
                        else data))
        connection.close()
    return answers


def test_unload_lets_50_requests_in_flight_finish(held_repo: Path, tmp_path: Path) -> None:
    with kiln_serve(held_repo, "--model-control-mode", "explicit", "--load-model", "held",
                    "--allow-repository-api", "true", log_dir=tmp_path) as server:
        connections = _send(server, 50)
        time.sleep(0.5)
        started = time.monotonic()
        unload = httpx.post(f"{server.base}/v2/repository/models/held/unload", timeout=30)
        waited = time.monotonic() - started
        assert unload.status_code == 200, unload.text
        assert _answers(connections) == [(200, 4.0)] * 50
        assert waited > 0.5  # the unload waited for the held batch
        after = httpx.post(f"{server.base}/v2/models/held/infer", json=infer_body())
        assert after.status_code == 404


def test_sigterm_refuses_new_work_finishes_in_flight_and_exits_0(held_repo: Path,
                                                                 tmp_path: Path) -> None:
    with kiln_serve(held_repo, log_dir=tmp_path) as server:
        connections = _send(server, 20)
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: httpx.get(f"{server.base}/v2/health/ready").status_code == 503,
                 timeout_s=1, what="readiness to turn false")
        # The held requests are still running: new ones are refused, not dropped.
        late = httpx.post(f"{server.base}/v2/models/held/infer", json=infer_body())
        assert late.status_code == 503 and "shutting down" in late.json()["error"]
        assert _answers(connections) == [(200, 4.0)] * 20
        assert server.process.wait(timeout=30) == 0


def test_unloading_releases_the_memory_of_the_model(repo: Path, tmp_path: Path) -> None:
    # An MLP with 16.8 M float weights (64 MiB).
    publish(repo, "big", 1, mlp_model((1024, 2048, 2048, 2048, 2048, 1024, 10)))
    publish(repo, "small", 1, offset_model(0.0))
    with kiln_serve(repo, "--model-control-mode", "explicit", "--load-model", "small",
                    "--allow-repository-api", "true", log_dir=tmp_path) as server:
        before = _rss_mib(server)
        assert httpx.post(f"{server.base}/v2/repository/models/big/load",
                          timeout=60).status_code == 200
        loaded = _rss_mib(server)
        assert httpx.post(f"{server.base}/v2/repository/models/big/unload",
                          timeout=60).status_code == 200
        after = _rss_mib(server)
    print(f"\nRSS MiB: before load {before:.0f}, loaded {loaded:.0f}, after unload {after:.0f}; "
          f"released {loaded - after:.0f} of {loaded - before:.0f}")
    assert loaded - before > 64
    assert after - before < 0.25 * (loaded - before)


def _rss_mib(server: KilnProcess) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")
