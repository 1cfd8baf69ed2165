"""kiln over HTTP (JSON and binary) and gRPC next to the same model run in-process by ONNX
Runtime, measured side by side in one run.

    python benchmarks/serving.py                       # tiny MLP + digits, c = 1, 16, 64
    python benchmarks/serving.py --models minilm --concurrency 1,16

HTTP load comes from wrk (``apt-get install wrk``), which costs 15-50 us of CPU per
request; gRPC load from a grpc.aio client in its own process. Each point reports
inferences/s, p50/p99 latency, the ratio to the in-process limit, server CPU per inference
and the load generator's CPU share. Rounds alternate the targets; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    LoadResult,
    in_process_best,
    in_process_sequential,
    kiln_server,
    run_grpc_load,
    run_wrk,
    v2_bodies,
)
from benchmarks.models import MODELS, BenchModel


@dataclass
class Point:
    model: str
    target: str
    concurrency: int
    inf_per_s: float
    p50_ms: float
    p99_ms: float
    ratio: float
    server_us_per_inf: float
    generator_cores: float
    errors: int


def _median(results: list[LoadResult], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in results)


def bench_model(model: BenchModel, args: argparse.Namespace, work: Path) -> list[Point]:
    repo = work / "repo"
    model.build(repo)
    inputs = model.inputs(1)
    json_body, binary_body, binary_header = v2_bodies(model.name, inputs)
    points: list[Point] = []
    pin = model.overhead_dominated and (os.cpu_count() or 1) >= 2
    with kiln_server(repo, pin_cpu=0 if pin else None) as server:
        for c in args.concurrency:
            rounds: dict[str, list[LoadResult]] = {}
            for r in range(args.rounds):
                order = ["inproc", *args.targets]
                if r % 2:
                    order.reverse()
                for target in order:
                    rounds.setdefault(target, []).append(_measure(
                        target, model, server, c, args.duration, json_body, binary_body,
                        binary_header, pin))
            limit = _median(rounds["inproc"], "inf_per_s")
            for target, results in rounds.items():
                points.append(Point(
                    model=model.name, target=target, concurrency=c,
                    inf_per_s=_median(results, "inf_per_s"), p50_ms=_median(results, "p50_ms"),
                    p99_ms=_median(results, "p99_ms"),
                    ratio=_median(results, "inf_per_s") / limit,
                    server_us_per_inf=_median(results, "server_us_per_inf"),
                    generator_cores=_median(results, "generator_cores"),
                    errors=sum(r.errors for r in results)))
                _print_point(points[-1])
    return points


def _measure(target: str, model: BenchModel, server: object, c: int, duration: float,
             json_body: bytes, binary_body: bytes, binary_header: int, pin: bool) -> LoadResult:
    url = f"http://127.0.0.1:{server.http_port}/v2/models/{model.name}/infer"  # type: ignore[attr-defined]
    if target == "inproc":
        if c == 1:
            return in_process_sequential(model, duration)
        return in_process_best(model, duration, c)
    if target == "http-json":
        return run_wrk(url, json_body, c, duration, server.pid, pin_cpu=1 if pin else None)  # type: ignore[attr-defined]
    if target == "http-binary":
        return run_wrk(url, binary_body, c, duration, server.pid,  # type: ignore[attr-defined]
                       header_length=binary_header, pin_cpu=1 if pin else None)
    if target == "grpc":
        return run_grpc_load(f"127.0.0.1:{server.grpc_port}", model.name,  # type: ignore[attr-defined]
                             model.inputs(1), c, duration, server.pid,  # type: ignore[attr-defined]
                             pin_cpu=1 if pin else None)
    raise ValueError(f"unknown target {target}")


def _print_point(p: Point) -> None:
    print(f"{p.model:8} {p.target:12} c={p.concurrency:<3} {p.inf_per_s:10.1f} inf/s  "
          f"x{p.ratio:6.3f}  p50 {p.p50_ms:8.2f} ms  p99 {p.p99_ms:8.2f} ms  "
          f"server {p.server_us_per_inf:9.1f} us/inf  generator {p.generator_cores:.2f} cores"
          f"{'  ERRORS ' + str(p.errors) if p.errors else ''}", flush=True)


def markdown(points: list[Point]) -> str:
    lines = ["| model | target | c | inf/s | x in-process | p50 ms | p99 ms | "
             "server CPU us/inf | generator cores |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p.model} | {p.target} | {p.concurrency} | {p.inf_per_s:,.0f} | "
                     f"{p.ratio:.3f} | {p.p50_ms:.2f} | {p.p99_ms:.2f} | "
                     f"{p.server_us_per_inf:,.0f} | {p.generator_cores:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,digits")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--targets", default="http-json,http-binary,grpc")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per point")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the points as JSON here")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.targets = [t for t in args.targets.split(",") if t]
    if shutil.which("wrk") is None and any(t.startswith("http") for t in args.targets):
        sys.exit("wrk is needed for the HTTP targets: apt-get install wrk")
    points: list[Point] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        for name in args.models.split(","):
            points += bench_model(MODELS[name](), args, Path(tmp) / name)
    print()
    print(markdown(points))
    print(f"\n({time.time() - started:.0f} s, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f})")
    if args.json:
        args.json.write_text(json.dumps([asdict(p) for p in points], indent=1))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
