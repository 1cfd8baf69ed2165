"""``kiln bench`` on the bundled digits model, in-process and against a real ``kiln serve``
over every protocol it speaks: the report's numbers must be consistent and its accuracy must
equal the accuracy ONNX Runtime gives directly on the same data."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest

from kiln.bench import BenchOptions, BenchReport, run
from kiln.bench.load import Plan, closed_loop
from kiln.bench.results import TargetResult
from kiln.bench.targets import open_target
from kiln.examples.digits import INPUT, LABEL, load_split
from kiln.serve.settings import bundled_repository
from tests.server import KilnProcess

MODEL = bundled_repository() / "digits" / "1" / "model.onnx"
QUICK = BenchOptions(model="digits", concurrency=(1, 4), requests=150, warmup_s=0.05,
                     data="digits")


@pytest.fixture(scope="module")
def direct_accuracy() -> float:
    _, x, _, y = load_split()
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    return float(np.mean(session.run([LABEL], {INPUT: x})[0] == y))


def _consistent(result: TargetResult, levels: tuple[int, ...], requests: int) -> None:
    assert [p.concurrency for p in result.points] == list(levels)
    for point in result.points:
        assert point.sent == requests
        assert point.ok == requests and not point.errors, point.first_error
        assert sum(point.histogram.counts) == point.ok  # type: ignore[union-attr]
        lat = point.latency_ms
        assert lat is not None
        assert 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p95 <= lat.p99 <= lat.max
        assert point.requests_per_s == pytest.approx(point.ok / point.duration_s)
        assert point.inferences_per_s == pytest.approx(point.requests_per_s)  # batch 1
        assert point.client.cpu_s > 0 and point.client.us_per_request > 0


def test_in_process(direct_accuracy: float) -> None:
    report = run(str(MODEL), QUICK)
    (result,) = report.targets
    assert result.protocol == "onnxruntime" and result.size_bytes == MODEL.stat().st_size
    assert result.inputs[0].name == INPUT and result.inputs[0].shape == [-1, 64]
    _consistent(result, (1, 4), 150)
    assert result.accuracy is not None and result.accuracy.samples == 360
    assert result.accuracy.output == "probabilities"
    assert result.accuracy.top1 == pytest.approx(direct_accuracy)
    assert result.accuracy.top1 > 0.9 and result.accuracy.topk[5] >= result.accuracy.top1
    assert all(not p.client.saturated and p.client.loop_cores == 0 for p in result.points)
    assert BenchReport.model_validate_json(report.model_dump_json()) == report


@pytest.mark.parametrize("scheme", ["http", "v2-binary+http", "grpc", "tfserving+http"])
def test_served(example_server: KilnProcess, direct_accuracy: float, scheme: str) -> None:
    port = example_server.grpc_port if scheme == "grpc" else example_server.http_port
    report = run(f"{scheme}://127.0.0.1:{port}",
                 replace(QUICK, reference=str(MODEL), server_pid=example_server.process.pid))
    (result,) = report.targets
    assert result.protocol == {"http": "v2-json", "v2-binary+http": "v2-binary",
                               "grpc": "v2-grpc", "tfserving+http": "tfserving"}[scheme]
    assert result.address == f"127.0.0.1:{port}" and result.size_bytes is None
    _consistent(result, (1, 4), 150)
    assert result.accuracy is not None
    assert result.accuracy.top1 == pytest.approx(direct_accuracy)
    agreement = {a.output: a for a in result.agreement}
    assert agreement["label"].exact_match == 1.0
    assert agreement["probabilities"].max_abs_error < 1e-6
    assert agreement["probabilities"].cosine_min == pytest.approx(1.0)
    for point in result.points:
        assert point.server_cores is not None and point.server_cores > 0
        assert point.client.loop_cores > 0  # measured on the event loop's thread


def test_server_errors_are_counted_by_kind(example_server: KilnProcess) -> None:
    async def wrong_shape() -> object:
        target = open_target(f"http://{example_server.http_url}", model="digits")
        await target.open()
        try:
            request = target.encode({INPUT: np.zeros((1, 63), np.float32)})
            return await closed_loop(target, [request], 2, Plan(requests=20, warmup_s=0))
        finally:
            await target.close()

    point = asyncio.run(wrong_shape())
    assert point.sent == 20 and point.ok == 0  # type: ignore[attr-defined]
    assert point.errors == {"invalid_argument": 20}  # type: ignore[attr-defined]
    assert point.latency_ms is None  # type: ignore[attr-defined]
    assert "pixels" in point.first_error and "HTTP 400" in point.first_error  # type: ignore[attr-defined]
    assert example_server.alive()
