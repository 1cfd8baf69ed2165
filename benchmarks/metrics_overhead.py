"""What Prometheus metrics cost: the tiny MLP served with metrics on and off, side by side.

    python benchmarks/metrics_overhead.py                 # 15 rounds x 3 s, concurrency 32
    python benchmarks/metrics_overhead.py --rounds 21 --duration 5

Two ``kiln serve`` processes run the same repository, one with ``--allow-metrics false``
(no listener, no histograms kept); wrk (``apt-get install wrk``) loads one at a time with
the same V2 JSON request, alternating the order each round. On a machine with two or more
cores the servers share core 0 and wrk gets core 1. After each round on the metrics server
``/metrics`` is scraped (as Prometheus would). Prints the medians, the on/off throughput
ratio (of the medians, and the median of each round's own ratio), the on/off ratio of server
CPU per inference (less sensitive to other load on the machine) and the statistics' own
per-request cost, timed in-process in CPU time. ``--control`` turns metrics on in the "off"
server too (an A/A run): its ratio is the noise floor of the machine at the time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server import KilnProcess, kiln_serve

from benchmarks.common import LoadResult, run_wrk, v2_bodies
from benchmarks.models import MODELS
from kiln.serve.core.statistics import ModelStats


@contextlib.contextmanager
def _server(repo: Path, *, metrics: bool, pin: bool) -> Iterator[KilnProcess]:
    prefix = ["taskset", "-c", "0"] if pin else []
    with kiln_serve(repo, "--allow-metrics", str(metrics).lower(),
                    command_prefix=prefix) as process:
        yield process


def _successes(server: KilnProcess) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).text
    match = re.search(r"^kiln_inference_request_success_total\{[^}]*\} (\S+)$", text, re.M)
    if match is None:
        raise RuntimeError("the metrics server reports no kiln_inference_request_success_total")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--control", action="store_true",
                        help="A/A run: metrics on in both servers, to show the noise floor")
    args = parser.parse_args()
    pin = (os.cpu_count() or 1) >= 2
    model = MODELS["tiny"]()
    with tempfile.TemporaryDirectory() as work:
        repo = Path(work) / "repo"
        model.build(repo)
        body, _, _ = v2_bodies(model.name, model.inputs(1))
        with _server(repo, metrics=True, pin=pin) as on, \
                _server(repo, metrics=args.control, pin=pin) as off:
            results = _measure(on, off, body, args, pin)
    _report(results, args)


def _measure(on: KilnProcess, off: KilnProcess, body: bytes, args: argparse.Namespace,
             pin: bool) -> dict[str, list[LoadResult]]:
    servers = {"metrics on": on, "control (on)" if args.control else "metrics off": off}
    results: dict[str, list[LoadResult]] = {name: [] for name in servers}
    for server in servers.values():  # warm-up, not counted
        _load(server, body, args.concurrency, 2.0, pin)
    for r in range(args.rounds):
        order = list(servers) if r % 2 == 0 else list(reversed(servers))
        for name in order:
            server = servers[name]
            before = _successes(on) if server is on else 0.0
            result = _load(server, body, args.concurrency, args.duration, pin)
            results[name].append(result)
            if server is on:
                counted = _successes(on) - before
                print(f"  round {r}: {result.inf_per_s:.0f} inf/s; /metrics counted "
                      f"{counted:.0f} successes", flush=True)
    return results


def _load(server: KilnProcess, body: bytes, concurrency: int, duration: float,
          pin: bool) -> LoadResult:
    url = f"{server.base}/v2/models/tiny/infer"
    result = run_wrk(url, body, concurrency, duration, server.process.pid,
                     pin_cpu=1 if pin else None)
    if result.errors:
        raise RuntimeError(f"{result.errors} requests to {url} failed")
    return result


def _report(results: dict[str, list[LoadResult]], args: argparse.Namespace) -> None:
    print(f"\ntiny MLP, V2 JSON over HTTP, concurrency {args.concurrency}, "
          f"{args.rounds} rounds x {args.duration:g} s, medians:")
    medians = {}
    for name, rounds in results.items():
        rate = statistics.median(r.inf_per_s for r in rounds)
        medians[name] = rate
        print(f"  {name:12s} {rate:9.0f} inf/s  p50 "
              f"{statistics.median(r.p50_ms for r in rounds):6.2f} ms  server "
              f"{statistics.median(r.server_us_per_inf for r in rounds):5.1f} us CPU/inf  "
              f"(rounds: {', '.join(f'{r.inf_per_s:.0f}' for r in rounds)})")
    on, off = results  # the metrics server first, then the one it is compared with
    ratio = medians[on] / medians[off]
    cpu = {name: statistics.median(r.server_us_per_inf for r in rounds)
           for name, rounds in results.items()}
    paired = statistics.median(a.inf_per_s / b.inf_per_s
                               for a, b in zip(results[on], results[off], strict=True))
    print(f"  throughput ratio on/off: {ratio:.3f} ({(1 - ratio) * 100:+.1f}% cost); "
          f"median of the rounds' own ratios: {paired:.3f}")
    print(f"  server CPU per inference on/off: {cpu[on] / cpu[off]:.3f}")
    on_ns, off_ns = _hot_path_ns(histograms=True), _hot_path_ns(histograms=False)
    print(f"  statistics hot path per request (in-process, batch 1): {on_ns:.0f} ns with "
          f"histograms, {off_ns:.0f} ns without: {(on_ns - off_ns) / 1e3:.2f} us added = "
          f"{(on_ns - off_ns) / 1e3 / cpu[off] * 100:.1f}% of the server's CPU per "
          "inference")


def _hot_path_ns(*, histograms: bool, n: int = 200_000) -> float:
    """What one batch-1 request costs the statistics: queue, execution, success."""
    stats = ModelStats.create(histograms=histograms)

    def request() -> None:
        stats.record_queue(40_000)
        stats.record_execution(rows=1, requests=1, input_ns=1_000, infer_ns=30_000,
                               output_ns=2_000)
        stats.record_success(90_000)

    # CPU time, not wall time: other work on the machine then barely moves the figure.
    timer = timeit.Timer(request, timer=time.process_time)
    return min(timer.repeat(number=n, repeat=5)) / n * 1e9


if __name__ == "__main__":
    main()
