"""Overload: what kiln does at 4x the rate it can sustain, and how it recovers.

    python benchmarks/overload.py

A compute-bound MLP (1024-4096-4096-1024, ~25 M weights) is served with kiln's defaults
(dynamic batching, bounded queue) on one core, the load generator on the other. The
sustainable rate S is measured closed-loop first; then an open-loop generator
(``kiln.bench``, requests due on a fixed schedule) sends 0.5 S (nominal), 4 S (overload)
and 0.5 S again (recovery, in 1 s windows). Printed per phase: answered/refused counts,
latency of answered requests, how fast refusals come back (timed with separate probes
during the overload) and the server's RSS.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.models import mlp_model, save

from benchmarks.common import kiln_server, v2_bodies
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


def describe(name: str, p: object, rss: float) -> None:
    lat = p.latency_ms  # type: ignore[attr-defined]
    errors = sum(p.errors.values())  # type: ignore[attr-defined]
    print(f"{name:12} rate {p.rate or 0:7.0f}/s  ok {p.ok:6d}  refused {errors:6d}  "  # type: ignore[attr-defined]
          f"dropped {p.dropped:5d}  p50 {lat.p50 if lat else float('nan'):8.1f} ms  "  # type: ignore[attr-defined]
          f"p99 {lat.p99 if lat else float('nan'):8.1f} ms  RSS {rss:7.1f} MiB", flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        # Server on core 0 (one intra-op thread), generator on core 1: neither starves the
        # other, so what is measured is the server's behaviour, not a fight for the cores.
        save(mlp_model(SIZES), repo, "mlp", config="optimization: {intra_op_threads: 1}\n")
        os.sched_setaffinity(0, {1})
        with kiln_server(repo, pin_cpu=0) as server:
            url = f"http://127.0.0.1:{server.http_port}"
            closed = point(url, server.pid, concurrency=(64,), duration_s=5)
            sustainable = closed.inferences_per_s  # type: ignore[attr-defined]
            print(f"sustainable rate S = {sustainable:.0f} inferences/s (closed loop, c=64)")
            describe("nominal", nominal := point(url, server.pid, concurrency=(),
                                                  rates=(0.5 * sustainable,), duration_s=5),
                     rss_mib(server.pid))
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
