"""kiln's HTTP data plane behind different HTTP servers, measured side by side in one run.

    python benchmarks/http_stack.py                          # every stack, c = 1 and 32
    python benchmarks/http_stack.py --stacks kiln,uvicorn-httptools,granian-rsgi --rounds 5

Every stack serves the same ``KilnServer`` data plane and route table (``HttpApp``) with
the tiny MLP (64-256-256-10, ``intra_op_threads: 1``) in its own process, all up at once
and pinned to core 0; wrk (``apt-get install wrk``) runs pinned to core 1 and posts the
same 1 KB KServe V2 JSON request, after a check that every stack gives the same answers
(an inference, a bad request, an unknown path). Rounds alternate the order of the stacks.
Medians are printed, with each stack's throughput and server CPU per request as a ratio to
the current stack (kiln's own ``HttpConnection`` on httptools + uvloop, in ``KilnServer``),
and the adoption bar per stack. Candidates need ``pip install -e '.[http-stacks]'``; results and
the decision are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server import stop_process, unused_port

from benchmarks.common import LoadResult, run_wrk, v2_bodies
from benchmarks.models import MODELS

CURRENT = "kiln"
STACKS = (CURRENT, "uvicorn-httptools", "uvicorn-h11", "hypercorn", "granian-asgi",
          "granian-rsgi", "uvicorn-starlette")
HOST = "127.0.0.1"
#: The module each candidate needs beyond kiln's own dependencies.
NEEDS = {"hypercorn": "hypercorn", "granian-asgi": "granian", "granian-rsgi": "granian",
         "uvicorn-starlette": "starlette"}


# --- server side: one stack in this process ------------------------------------------------

async def serve(stack: str, repo: Path, port: int) -> None:
    """kiln's composition root with its HTTP app behind ``stack``, until SIGTERM."""
    from benchmarks.http_servers import RUNNERS
    from kiln.serve.app import KilnServer
    from kiln.serve.settings import ServerSettings

    current = stack == CURRENT
    server = KilnServer(ServerSettings.build(
        model_repository=[repo], http_address=HOST, http_port=port, allow_grpc=False,
        allow_metrics=False,
        allow_http=current))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await server.start()
    try:
        if current:
            await stop.wait()
        else:
            await RUNNERS[stack](server.http_app(), HOST, port, stop)
    finally:
        await server.stop()


# --- driver side ---------------------------------------------------------------------------

@dataclass
class StackProcess:
    name: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@contextlib.contextmanager
def stack_process(name: str, repo: Path, log_dir: Path) -> Iterator[StackProcess]:
    port = unused_port()
    command = ["taskset", "-c", "0", sys.executable, __file__, "--serve", name,
               "--repo", str(repo), "--port", str(port)]
    with open(log_dir / f"{name}.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    stack = StackProcess(name, process, port)
    try:
        _wait_ready(stack, log_dir / f"{name}.log")
        yield stack
    finally:
        stop_process(process)


def _wait_ready(stack: StackProcess, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if stack.process.poll() is not None:
            sys.exit(f"{stack.name} exited at start:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{stack.url}/v2/health/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    sys.exit(f"{stack.name} not ready after 60 s:\n{log.read_text(errors='replace')}")


def check_answers(stacks: list[StackProcess], model: str, body: bytes) -> None:
    """Every stack gives the same answer, and the same errors for a bad request and path."""
    seen: dict[str, set[object]] = {}
    probes = [("POST", f"/v2/models/{model}/infer", body),
              ("POST", f"/v2/models/{model}/infer", b'{"inputs": 1}'),
              ("GET", "/v2/nowhere", b"")]
    for stack in stacks:
        with httpx.Client(base_url=stack.url) as client:
            for method, path, content in probes:
                r = client.request(method, path, content=content,
                                   headers={"content-type": "application/json"})
                seen.setdefault(f"{method} {path} {content[:12]!r}", set()).add(
                    (stack.name, r.status_code, r.content[:200]))
    for probe, answers in seen.items():
        if len({a[1:] for a in answers}) != 1:
            sys.exit(f"stacks disagree on {probe}: {answers}")
    print(f"all {len(stacks)} stacks give the same answers to {len(probes)} probes")


def measure(stacks: list[StackProcess], url_path: str, body: bytes,
            args: argparse.Namespace) -> dict[tuple[str, int], list[LoadResult]]:
    results: dict[tuple[str, int], list[LoadResult]] = {}
    for stack in stacks:  # warm-up, discarded
        run_wrk(stack.url + url_path, body, 32, 1, stack.process.pid, pin_cpu=1)
    for c in args.concurrency:
        for r in range(args.rounds):
            order = stacks[r % len(stacks):] + stacks[:r % len(stacks)]
            for stack in order[::-1] if r % 2 else order:
                result = run_wrk(stack.url + url_path, body, c, args.duration,
                                 stack.process.pid, pin_cpu=1)
                results.setdefault((stack.name, c), []).append(result)
                print(f"  round {r + 1} c={c:<3} {stack.name:18} {result.inf_per_s:8.0f} req/s "
                      f"{result.server_us_per_inf:6.0f} us/req", flush=True)
    return results


@dataclass
class Row:
    stack: str
    c: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    us_per_req: float
    x_req: float
    x_cpu: float
    errors: int


def summarize(results: dict[tuple[str, int], list[LoadResult]]) -> list[Row]:
    """Medians over rounds; ratios are medians of each round's ratio to the current stack
    in the same round (paired, so load that drifts between rounds cancels)."""
    def med(key: tuple[str, int], attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in results[key])

    def ratio(key: tuple[str, int], base: tuple[str, int], attr: str) -> float:
        return statistics.median(getattr(a, attr) / getattr(b, attr)
                                 for a, b in zip(results[key], results[base], strict=True))

    rows = []
    for stack, c in results:
        key, base = (stack, c), (CURRENT, c) if (CURRENT, c) in results else (stack, c)
        rows.append(Row(
            stack, c, med(key, "inf_per_s"), med(key, "p50_ms"), med(key, "p99_ms"),
            med(key, "server_us_per_inf"), ratio(key, base, "inf_per_s"),
            ratio(key, base, "server_us_per_inf"), sum(r.errors for r in results[key])))
    return sorted(rows, key=lambda row: (row.c, row.stack != CURRENT))


def verdict(rows: list[Row]) -> list[str]:
    """The adoption bar: > 20 % less server CPU per request at the highest concurrency and
    no more at the lowest (as ratios to the current stack)."""
    low, high = min(r.c for r in rows), max(r.c for r in rows)
    cpu = {(r.stack, r.c): r.x_cpu for r in rows}
    return [f"{stack:18} CPU/req x{cpu[stack, high]:.2f} at c={high}, x{cpu[stack, low]:.2f} "
            f"at c={low}: {'PASSES' if cpu[stack, high] < 0.8 and cpu[stack, low] <= 1.0 else 'no'}"
            for stack in dict.fromkeys(r.stack for r in rows) if stack != CURRENT]


def markdown(rows: list[Row]) -> str:
    lines = ["| stack | c | req/s | x current | p50 ms | p99 ms | server CPU us/req | "
             "x current CPU | server cores |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.stack} | {r.c} | {r.req_per_s:,.0f} | {r.x_req:.2f} | {r.p50_ms:.2f} | "
              f"{r.p99_ms:.2f} | {r.us_per_req:.0f} | {r.x_cpu:.2f} | "
              f"{r.req_per_s * r.us_per_req / 1e6:.2f} |"
              f"{' errors ' + str(r.errors) if r.errors else ''}" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", default=",".join(STACKS))
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per point")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=STACKS, help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(serve(args.serve, args.repo, args.port))
        return
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.stacks = args.stacks.split(",")
    missing = [s for s in args.stacks if s in NEEDS and find_spec(NEEDS[s]) is None]
    if missing:
        sys.exit(f"{', '.join(missing)} need pip install -e '.[http-stacks]'")
    started, load = time.time(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kiln-http-stack-") as tmp, \
            contextlib.ExitStack() as stack:
        model = MODELS["tiny"]()
        model.build(Path(tmp) / "repo")
        body = v2_bodies(model.name, model.inputs(1))[0]
        processes = [stack.enter_context(stack_process(name, Path(tmp) / "repo", Path(tmp)))
                     for name in args.stacks]
        check_answers(processes, model.name, body)
        rows = summarize(measure(processes, f"/v2/models/{model.name}/infer", body, args))
    print()
    print(markdown(rows))
    print("\nadoption bar (> 20 % less CPU/req at the highest c, no more at the lowest):")
    print("\n".join(verdict(rows)))
    print(f"\n({time.time() - started:.0f} s; {os.cpu_count()} cores; load average "
          f"{load:.1f} at start, {os.getloadavg()[0]:.1f} at end; {args.rounds} rounds of "
          f"{args.duration:g} s, medians)")


if __name__ == "__main__":
    main()
