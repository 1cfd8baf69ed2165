"""The load generator's accounting, checked against a target whose behaviour is known."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kiln.bench.load import Plan, closed_loop, open_loop
from kiln.bench.results import LoadPoint
from kiln.bench.testing import EchoTarget
from kiln.errors import InvalidArgument, Unavailable

REQUESTS = [{"x": np.full((1, 4), i, np.float32)} for i in range(3)]


def _ordered(point: LoadPoint) -> None:
    lat = point.latency_ms
    assert lat is not None
    assert lat.min <= lat.p50 <= lat.p90 <= lat.p95 <= lat.p99 <= lat.max
    assert sum(point.histogram.counts) == point.ok  # type: ignore[union-attr]


def test_closed_loop_counts_add_up_and_errors_are_counted_by_kind() -> None:
    target = EchoTarget(delay_s=0.001, fail_every=5, error=Unavailable("busy"))
    plan = Plan(requests=100, warmup_s=0.05)
    point = asyncio.run(closed_loop(target, REQUESTS, 4, plan))
    assert point.mode == "closed" and point.concurrency == 4
    assert point.sent == 100
    assert point.ok + sum(point.errors.values()) == point.sent
    assert set(point.errors) == {"unavailable"}
    assert 15 <= point.errors["unavailable"] <= 25  # every 5th call fails, warm-up included
    assert point.first_error == "unavailable: busy"
    assert target.most_in_flight == 4
    assert target.calls > point.sent  # the warm-up sent requests too, uncounted
    _ordered(point)
    assert point.latency_ms.min >= 1.0  # type: ignore[union-attr]  # each call sleeps 1 ms
    assert point.requests_per_s == pytest.approx(point.ok / point.duration_s)


def test_closed_loop_for_a_duration() -> None:
    point = asyncio.run(closed_loop(EchoTarget(delay_s=0.002), REQUESTS, 2,
                                    Plan(duration_s=0.3, warmup_s=0.0)))
    assert point.duration_s >= 0.3
    assert point.sent == point.ok > 0 and not point.errors
    assert point.client.cores >= 0 and point.client.us_per_request > 0
    assert point.client.saturated is False
    # /proc/stat counts in 10 ms ticks: over 0.3 s of mostly sleeping it may read 0.
    assert point.machine_cores is not None and point.machine_cores >= 0
    assert point.server_cores is None  # no server pid given
    _ordered(point)


def test_open_loop_sends_every_due_request_and_times_from_when_it_was_due() -> None:
    target = EchoTarget(delay_s=0.004)
    point = asyncio.run(open_loop(target, REQUESTS, 500.0,
                                  Plan(requests=60, warmup_s=0.0)))
    assert point.mode == "open" and point.rate == 500.0
    assert point.sent == point.ok == 60 and point.dropped == 0
    assert point.latency_ms.min >= 4.0  # type: ignore[union-attr]
    assert point.send_lag_p99_ms is not None and point.send_lag_p99_ms >= 0
    # 60 requests due 2 ms apart, each answered after 4 ms: more than one is in flight
    assert target.most_in_flight >= 2 and point.concurrency >= target.most_in_flight
    _ordered(point)


def test_open_loop_drops_what_exceeds_max_outstanding() -> None:
    target = EchoTarget(delay_s=0.05)
    point = asyncio.run(open_loop(target, REQUESTS, 2000.0,
                                  Plan(requests=100, warmup_s=0.0, max_outstanding=3)))
    assert target.most_in_flight <= 3
    assert point.dropped > 0
    assert point.sent + point.dropped == 100
    assert point.ok + sum(point.errors.values()) == point.sent


def test_poisson_arrivals_and_failures() -> None:
    target = EchoTarget(fail_every=2, error=InvalidArgument("bad"))
    point = asyncio.run(open_loop(target, REQUESTS, 1000.0,
                                  Plan(requests=40, warmup_s=0.0, distribution="poisson")))
    assert point.sent == 40
    assert point.errors == {"invalid_argument": point.sent - point.ok}
    assert point.ok >= 1
