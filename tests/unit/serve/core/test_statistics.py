"""Statistics: histogram buckets, Triton's per-request compute semantics, the wire shape."""

from __future__ import annotations

from google.protobuf import json_format
from tritonclient.grpc import service_pb2

from kiln.serve.core.statistics import BATCH_BOUNDS, Histogram, ModelStats


def test_histogram_buckets_are_inclusive_upper_bounds_and_cumulative_on_read() -> None:
    h = Histogram((10, 20, 40))
    for value in (0, 10, 11, 20, 40, 41, 1000):
        h.observe(value)
    assert h.cumulative() == [(10, 2), (20, 4), (40, 5), (float("inf"), 7)]
    assert h.count == 7 and h.sum == 0 + 10 + 11 + 20 + 40 + 41 + 1000


def test_stats_without_histograms_keep_none_and_with_them_count_every_observation() -> None:
    off, on = ModelStats.create(histograms=False), ModelStats.create(histograms=True)
    for stats in (off, on):
        stats.record_queue(3_000)
        stats.record_execution(rows=6, requests=2, input_ns=10, infer_ns=700_000, output_ns=5)
        stats.record_success(900_000)
        stats.record_success(2_000_000)
        stats.record_failure(50, "invalid_argument")
    assert off.histograms is None
    assert on.histograms is not None
    assert (on.success.count, on.success.ns) == (2, 2_900_000)
    assert (off.success.count, off.success.ns) == (2, 2_900_000)
    assert on.histograms.request.count == 2 and on.histograms.request.sum == 2_900_000
    assert on.histograms.queue.count == 1 and on.histograms.compute.count == 1
    assert on.histograms.batch_size.sum == 6
    assert on.histograms.batch_size.cumulative()[BATCH_BOUNDS.index(8)] == (8, 1)
    assert on.failures == {"invalid_argument": 1} and on.fail.count == 1


def test_compute_times_count_per_request_like_triton() -> None:
    """Two requests merged into one execution: each is charged the whole execution."""
    stats = ModelStats.create(histograms=False)
    stats.record_execution(rows=3, requests=2, input_ns=10, infer_ns=1_000, output_ns=20)
    assert stats.compute_infer.as_dict() == {"count": 2, "ns": 2_000}
    assert stats.compute_input.as_dict() == {"count": 2, "ns": 20}
    assert stats.batches[3].compute_infer.as_dict() == {"count": 1, "ns": 1_000}
    assert (stats.inference_count, stats.execution_count) == (3, 1)


def test_triton_shape_parses_with_tritonclients_own_protobuf() -> None:
    """Every field name kiln writes exists, with a compatible type, in Triton's proto."""
    stats = ModelStats.create(histograms=True)
    stats.record_queue(5)
    stats.record_execution(rows=4, requests=1, input_ns=1, infer_ns=2, output_ns=3)
    stats.record_success(10)
    message = json_format.ParseDict({"model_stats": [stats.as_triton("m", "1")]},
                                    service_pb2.ModelStatisticsResponse())
    parsed = message.model_stats[0]
    assert (parsed.name, parsed.version, parsed.inference_count, parsed.execution_count) == \
        ("m", "1", 4, 1)
    assert parsed.inference_stats.success.count == 1
    assert parsed.inference_stats.compute_infer.ns == 2
    assert [b.batch_size for b in parsed.batch_stats] == [4]
    assert parsed.last_inference > 0
