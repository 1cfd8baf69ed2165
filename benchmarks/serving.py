"""kiln over HTTP (JSON and binary) and gRPC next to the same model run in-process by ONNX
Runtime, and next to peer servers, measured side by side in one run.

    python benchmarks/serving.py                       # tiny MLP + digits, c = 1, 16, 64
    python benchmarks/serving.py --models minilm --concurrency 1,16
    bash benchmarks/peers/setup.sh                     # once, for the peer targets
    python benchmarks/serving.py --models tiny --targets http-json,http-binary,pytriton-http
    git worktree add /tmp/kiln-before HEAD~1           # a change against the code before it
    python benchmarks/serving.py --baseline /tmp/kiln-before/src \
        --targets http-binary,grpc,base-http-binary,base-grpc

HTTP load comes from wrk (``apt-get install wrk``), which costs 15-50 us of CPU per
request; gRPC load from a grpc.aio client in its own process. Each point reports
inferences/s, p50/p99 latency, the ratio to the in-process limit, server CPU per inference
and the load generator's CPU share. Rounds alternate the targets; medians are printed.

Peers (``pytriton-http``, ``pytriton-binary``, ``pytriton-grpc``, ``torchserve-http``) get
the same model file, ONNX Runtime settings, request bodies, load generator and CPU pinning
as kiln, each with dynamic batching (max 32, 1 ms); server CPU counts each server's whole
process tree. When both run, a closing table gives kiln's best
throughput and server CPU per inference as ratios to the best peer's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    LoadResult,
    Server,
    in_process_best,
    in_process_sequential,
    kiln_baseline_server,
    kiln_server,
    process_tree,
    run_grpc_load,
    run_wrk,
    v2_bodies,
)
from benchmarks.models import MODELS, BenchModel
from benchmarks.peers.launch import pytriton_server, require_peers, torchserve_server

#: Each target: the server it loads and how (V2 JSON or binary over HTTP, or gRPC).
TARGETS = {"http-json": ("kiln", "json"), "http-binary": ("kiln", "binary"),
           "grpc": ("kiln", "grpc"), "pytriton-http": ("pytriton", "json"),
           "pytriton-binary": ("pytriton", "binary"), "pytriton-grpc": ("pytriton", "grpc"),
           "torchserve-http": ("torchserve", "json"), "base-http-json": ("base", "json"),
           "base-http-binary": ("base", "binary"), "base-grpc": ("base", "grpc")}
#: How to start each peer (benchmarks/peers/launch.py).
PEERS = {"pytriton": pytriton_server, "torchserve": torchserve_server}


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


@contextlib.contextmanager
def _servers(model: BenchModel, targets: list[str], work: Path, pin: bool,
             baseline: Path | None) -> Iterator[dict[str, Server]]:
    """kiln and every peer that ``targets`` name, all serving ``model`` until the block ends
    (``base``: kiln from the ``baseline`` source folder)."""
    wanted = {TARGETS[t][0] for t in targets}
    with contextlib.ExitStack() as stack:
        servers = {"kiln": stack.enter_context(
            kiln_server(work / "repo", pin_cpu=0 if pin else None))}
        if "base" in wanted:
            if baseline is None:
                raise SystemExit("the base-* targets need --baseline SRC_DIR")
            servers["base"] = stack.enter_context(kiln_baseline_server(
                work / "repo", baseline, pin_cpu=0 if pin else None))
        for peer in sorted(wanted - {"kiln", "base"}):
            servers[peer] = stack.enter_context(PEERS[peer](
                model.path, model.name, intra_op_threads=model.intra_op_threads, work=work,
                pin_cpu=0 if pin else None))
        yield servers


def bench_model(model: BenchModel, args: argparse.Namespace, work: Path) -> list[Point]:
    model.build(work / "repo")
    bodies = v2_bodies(model.name, model.inputs(1))
    points: list[Point] = []
    pin = model.overhead_dominated and (os.cpu_count() or 1) >= 2
    with _servers(model, args.targets, work, pin, args.baseline) as servers:
        for server in servers.values():  # JIT (TorchServe's Java), caches, lazy set-up
            run_wrk(f"http://127.0.0.1:{server.http_port}/v2/models/{model.name}/infer",
                    bodies[0], 16, args.warmup, server.pid)
        for c in args.concurrency:
            rounds: dict[str, list[LoadResult]] = {}
            for r in range(args.rounds):
                order = ["inproc", *args.targets]
                if r % 2:
                    order.reverse()
                for target in order:
                    with _only(servers, TARGETS[target][0] if target in TARGETS else None):
                        rounds.setdefault(target, []).append(
                            _measure(target, model, servers, c, args.duration, bodies, pin))
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


#: Servers that survive being stopped for a while. PyTriton does not: its Python side and
#: the Triton server check on each other, and one stopped for seconds ends the other.
PAUSABLE = {"kiln", "base", "torchserve"}


@contextlib.contextmanager
def _only(servers: dict[str, Server], name: str | None) -> Iterator[None]:
    """Every pausable server but ``name`` stopped (SIGSTOP) while the block runs: an idle
    server's background threads (a JVM's, say) would otherwise take turns on the measured
    one's core and lengthen its latency tail."""
    frozen = [pid for other, server in servers.items() if other != name and other in PAUSABLE
              for pid in process_tree(server.pid)]
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _measure(target: str, model: BenchModel, servers: dict[str, Server], c: int,
             duration: float, bodies: tuple[bytes, bytes, int], pin: bool) -> LoadResult:
    if target == "inproc":
        if c == 1:
            return in_process_sequential(model, duration)
        return in_process_best(model, duration, c)
    name, transport = TARGETS[target]
    server, load_cpu = servers[name], 1 if pin else None
    url = f"http://127.0.0.1:{server.http_port}/v2/models/{model.name}/infer"
    json_body, binary_body, binary_header = bodies
    if transport == "json":
        return run_wrk(url, json_body, c, duration, server.pid, pin_cpu=load_cpu)
    if transport == "binary":
        return run_wrk(url, binary_body, c, duration, server.pid, header_length=binary_header,
                       pin_cpu=load_cpu)
    return run_grpc_load(f"127.0.0.1:{server.grpc_port}", model.name, model.inputs(1), c,
                         duration, server.pid, pin_cpu=load_cpu)


def _print_point(p: Point) -> None:
    print(f"{p.model:8} {p.target:15} c={p.concurrency:<3} {p.inf_per_s:10.1f} inf/s  "
          f"x{p.ratio:6.3f}  p50 {p.p50_ms:8.2f} ms  p99 {p.p99_ms:8.2f} ms  "
          f"server {p.server_us_per_inf:9.1f} us/inf  generator {p.generator_cores:.2f} cores"
          f"{'  ERRORS ' + str(p.errors) if p.errors else ''}", flush=True)


def markdown(points: list[Point]) -> str:
    # NOTE: server cores (inf/s x CPU per inference) below 1 for a pinned server means it
    # waited: on its batcher, or, on a busy machine, for its core.
    lines = ["| model | target | c | inf/s | x in-process | p50 ms | p99 ms | "
             "server CPU us/inf | server cores | generator cores |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in points:
        lines.append(f"| {p.model} | {p.target} | {p.concurrency} | {p.inf_per_s:,.0f} | "
                     f"{p.ratio:.3f} | {p.p50_ms:.2f} | {p.p99_ms:.2f} | "
                     f"{p.server_us_per_inf:,.0f} | "
                     f"{p.inf_per_s * p.server_us_per_inf / 1e6:.2f} | "
                     f"{p.generator_cores:.2f} |")
    return "\n".join(lines)


def versus_peers(points: list[Point]) -> str:
    """kiln's fastest target against the fastest peer target, per model and concurrency:
    throughput ratio (kiln ÷ peer) and server CPU per inference ratio (kiln ÷ peer)."""
    lines = ["| model | c | kiln best | inf/s | peer best | inf/s | throughput kiln/peer | "
             "server CPU us/inf kiln / peer | CPU ratio kiln/peer |",
             "|---|---:|---|---:|---|---:|---:|---:|---:|"]
    groups: dict[tuple[str, int], list[Point]] = {}
    for p in points:
        if p.target in TARGETS:
            groups.setdefault((p.model, p.concurrency), []).append(p)
    for (model, c), group in groups.items():
        kiln = [p for p in group if TARGETS[p.target][0] == "kiln"]
        peers = [p for p in group if TARGETS[p.target][0] not in ("kiln", "base")]
        if not kiln or not peers:
            continue
        k = max(kiln, key=lambda p: p.inf_per_s)
        q = max(peers, key=lambda p: p.inf_per_s)
        lines.append(f"| {model} | {c} | {k.target} | {k.inf_per_s:,.0f} | {q.target} | "
                     f"{q.inf_per_s:,.0f} | {k.inf_per_s / q.inf_per_s:.2f} | "
                     f"{k.server_us_per_inf:,.0f} / {q.server_us_per_inf:,.0f} | "
                     f"{k.server_us_per_inf / q.server_us_per_inf:.2f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.targets = [t for t in args.targets.split(",") if t]
    if unknown := [t for t in args.targets if t not in TARGETS]:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed for the HTTP targets and the warm-up: apt-get install wrk")
    for peer in {TARGETS[t][0] for t in args.targets} - {"kiln", "base"}:
        require_peers(peer)
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,digits")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--targets", default="http-json,http-binary,grpc",
                        help=f"comma-separated, from: {', '.join(TARGETS)}")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per point")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of load on each server before the first point")
    parser.add_argument("--json", type=Path, help="also write the points as JSON here")
    parser.add_argument("--baseline", type=Path, metavar="SRC_DIR",
                        help="another checkout's src/ folder, served for the base-* targets")
    args = _parse(parser)
    points: list[Point] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        for name in args.models.split(","):
            points += bench_model(MODELS[name](), args, Path(tmp) / name)
    print()
    print(markdown(points))
    if comparison := versus_peers(points):
        print("\n" + comparison)
    print(f"\n({time.time() - started:.0f} s, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f})")
    if args.json:
        args.json.write_text(json.dumps([asdict(p) for p in points], indent=1))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
