"""Overload: what kiln does at 4x the rate it can sustain, and how it recovers.

    python benchmarks/overload.py [--max-queue-wait-us 10000]

A compute-bound MLP (1024-4096-4096-1024, ~25 M weights) is served with kiln's defaults
(dynamic batching, a queue bounded by count and by expected wait) on one core, the load
generator on the other. The sustainable rate S is measured closed-loop first; then an
open-loop generator (``kiln.bench``, requests due on a fixed schedule) sends 0.5 S
(nominal), 4 S (overload) and 0.5 S again (recovery, in 1 s windows). Printed per phase:
answered/refused counts, latency of answered requests, how fast refusals come back (timed
with separate probes during the overload), the server's RSS, and the server's own view of
the answered requests (duration and queue-time histograms from its metrics port, free of
the load generator's lag).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.models import mlp_model, save

from benchmarks.common import Server, kiln_server, v2_bodies
from kiln.bench import BenchOptions, run

SIZES = (1024, 4096, 4096, 1024)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def point(url: str, pid: int, **options: object) -> object:
    options.setdefault("warmup_s", 0.5)
    report = run(f"v2-binary+{url}", BenchOptions(model="mlp", server_pid=pid,
                                                   **options))  # type: ignore[arg-type]
    return report.targets[0].points[0]


def probe_refusals(url: str, body: bytes, header: int, stop: threading.Event,
                   out: list[float]) -> None:
    """Time requests answered 503 while the overload runs: shedding must be immediate."""
    with httpx.Client() as client:
        while not stop.is_set():
            started = time.perf_counter()
            response = client.post(f"{url}/v2/models/mlp/infer", content=body, headers={
                "Inference-Header-Content-Length": str(header)})
            if response.status_code == 503:
                out.append((time.perf_counter() - started) * 1e3)
            time.sleep(0.02)


def histograms(server: Server) -> dict[str, dict[float, float]]:
    """The model's cumulative request and queue duration buckets (le seconds -> count), read
    from kiln's metrics port: the server's own view, without the load generator's lag."""
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    out: dict[str, dict[float, float]] = {"request": {}, "queue": {}}
    for family in text_string_to_metric_families(text):
        for kind in out:
            if family.name == f"kiln_inference_{kind}_duration_seconds":
                for sample in family.samples:
                    if sample.name.endswith("_bucket") and sample.labels["model"] == "mlp":
                        out[kind][float(sample.labels["le"])] = sample.value
    return out


def server_side(before: dict[str, dict[float, float]],
                after: dict[str, dict[float, float]]) -> str:
    """p50 / p99 of the requests answered between two readings, as histogram bucket bounds."""
    parts = []
    for kind, buckets in after.items():
        counts = sorted((le, n - before[kind].get(le, 0)) for le, n in buckets.items())
        total = counts[-1][1] if counts else 0
        bound = {q: next((le for le, n in counts if n >= q * total), float("inf"))
                 for q in (0.5, 0.99)}
        parts.append(f"{kind} p50 <= {bound[0.5] * 1e3:g} ms, p99 <= {bound[0.99] * 1e3:g} ms")
    return "  in the server: " + "; ".join(parts)


def describe(name: str, p: object, rss: float) -> None:
    lat = p.latency_ms  # type: ignore[attr-defined]
    errors = sum(p.errors.values())  # type: ignore[attr-defined]
    print(f"{name:12} rate {p.rate or 0:7.0f}/s  ok {p.ok:6d}  refused {errors:6d}  "  # type: ignore[attr-defined]
          f"dropped {p.dropped:5d}  p50 {lat.p50 if lat else float('nan'):8.1f} ms  "  # type: ignore[attr-defined]
          f"p99 {lat.p99 if lat else float('nan'):8.1f} ms  RSS {rss:7.1f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-queue-wait-us", type=int, default=None,
                        help="the model's dynamic_batching.max_queue_wait_us (default: kiln's)")
    args = parser.parse_args()
    base = "optimization: {intra_op_threads: 1}\n"
    tuned = base
    if args.max_queue_wait_us is not None:
        tuned += f"dynamic_batching: {{max_queue_wait_us: {args.max_queue_wait_us}}}\n"
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        # Server on core 0 (one intra-op thread), generator on core 1: neither starves the
        # other, so what is measured is the server's behaviour, not a fight for the cores.
        save(mlp_model(SIZES), repo, "mlp", config=base)
        os.sched_setaffinity(0, {1})
        # S comes from kiln's defaults: a tighter queue bound would refuse part of the
        # closed-loop load that measures it.
        with kiln_server(repo, pin_cpu=0) as server:
            closed = point(f"http://127.0.0.1:{server.http_port}", server.pid,
                           concurrency=(64,), duration_s=5)
        sustainable = closed.inferences_per_s  # type: ignore[attr-defined]
        print(f"sustainable rate S = {sustainable:.0f} inferences/s (closed loop, c=64)")
        (repo / "mlp" / "config.yaml").write_text(tuned)
        with kiln_server(repo, pin_cpu=0) as server:
            url = f"http://127.0.0.1:{server.http_port}"
            before = histograms(server)
            describe("nominal", nominal := point(url, server.pid, concurrency=(),
                                                  rates=(0.5 * sustainable,), duration_s=5),
                     rss_mib(server.pid))
            print(server_side(before, before := histograms(server)))
            _, body, header = v2_bodies("mlp", {"input": np.zeros((1, SIZES[0]), np.float32)})
            refusals: list[float] = []
            stop = threading.Event()
            prober = threading.Thread(target=probe_refusals,
                                      args=(url, body, header, stop, refusals))
            prober.start()
            overload = point(url, server.pid, concurrency=(), rates=(4 * sustainable,),
                             duration_s=10)
            stop.set()
            prober.join()
            describe("overload 4S", overload, rss_mib(server.pid))
            print(server_side(before, before := histograms(server)))
            if refusals:
                print(f"  503 answers during overload: p50 {np.percentile(refusals, 50):.2f} ms, "
                      f"p99 {np.percentile(refusals, 99):.2f} ms ({len(refusals)} probes)")
            for second in range(1, 11):
                describe(f"recovery {second:2d}s", point(
                    url, server.pid, concurrency=(), rates=(0.5 * sustainable,),
                    duration_s=1, warmup_s=0), rss_mib(server.pid))
            nominal_p99 = nominal.latency_ms.p99  # type: ignore[attr-defined]
            print(f"nominal p99 {nominal_p99:.1f} ms")


if __name__ == "__main__":
    main()
