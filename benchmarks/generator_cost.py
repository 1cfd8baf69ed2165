"""What a load generator costs: kiln bench's HTTP and gRPC clients next to wrk and an
httpx.AsyncClient, all loading one ``kiln serve`` (the bundled digits model) in one run.

    python benchmarks/generator_cost.py                  # c = 1, 16; 3 s per point; 2 rounds
    python benchmarks/generator_cost.py --concurrency 1,4,64 --seconds 5 --rounds 3

The server is pinned to CPU 0 and the generators to CPU 1 (when there are two), so each
generator's CPU per request is measured apart from the server's. Prints, per client and
concurrency, the medians over rounds of requests/s, generator µs of CPU per request and cores,
server µs per request, and the generator's CPU per request as a multiple of kiln bench's
HTTP client's. A generator that needs more CPU per request than the server it measures
reports its own limit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import kiln_server, run_wrk, v2_bodies
from kiln.bench import BenchOptions, run
from kiln.bench.results import LoadPoint
from kiln.examples.digits import load_split
from kiln.serve.settings import bundled_repository
from kiln.tensors import DataType, Signature, TensorDict, TensorSpec


class HttpxTarget:
    """KServe V2 JSON through ``httpx.AsyncClient``: the convenient client, for comparison."""

    protocol, size_bytes = "httpx", None

    def __init__(self, port: int) -> None:
        self.address = f"127.0.0.1:{port}"
        self.label = "httpx"
        self._client: httpx.AsyncClient | None = None

    async def open(self) -> Signature:
        self._client = httpx.AsyncClient(base_url=f"http://{self.address}",
                                         limits=httpx.Limits(max_connections=256))
        meta = (await self._client.get("/v2/models/digits")).json()
        return Signature(inputs=tuple(map(_spec, meta["inputs"])),
                         outputs=tuple(map(_spec, meta["outputs"])))

    def encode(self, inputs: TensorDict) -> bytes:
        return v2_bodies("digits", inputs)[0]

    async def call(self, body: bytes) -> bytes:
        assert self._client is not None
        reply = await self._client.post("/v2/models/digits/infer", content=body,
                                        headers={"content-type": "application/json"})
        reply.raise_for_status()
        return reply.content

    def decode(self, reply: bytes) -> TensorDict:
        raise NotImplementedError("only used for load")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _spec(meta: dict[str, Any]) -> TensorSpec:
    return TensorSpec(meta["name"], DataType.from_v2(meta["datatype"]), tuple(meta["shape"]))


def _row(point: LoadPoint) -> dict[str, float]:
    server = (point.server_cores or 0) / max(point.requests_per_s, 1e-9) * 1e6
    return {"req/s": point.requests_per_s, "gen us/req": point.client.us_per_request,
            "gen cores": point.client.cores, "srv us/req": server}


def one_round(args: argparse.Namespace, http_port: int, grpc_port: int,
              pid: int) -> dict[tuple[str, int], dict[str, float]]:
    options = BenchOptions(model="digits", concurrency=args.concurrency,
                           duration_s=args.seconds, warmup_s=0.5, server_pid=pid)
    report = run([f"http://127.0.0.1:{http_port}", f"grpc://127.0.0.1:{grpc_port}",
                  HttpxTarget(http_port)], options)
    names = {"v2-json": "kiln bench http", "v2-grpc": "kiln bench grpc", "httpx": "httpx"}
    rows = {(names[t.protocol], p.concurrency): _row(p)
            for t in report.targets for p in t.points}
    if shutil.which("wrk"):
        _, x, _, _ = load_split()
        body = v2_bodies("digits", {"pixels": x[:1]})[0]
        for c in args.concurrency:
            result = run_wrk(f"http://127.0.0.1:{http_port}/v2/models/digits/infer", body, c,
                             args.seconds, pid, pin_cpu=args.generator_cpu)
            rows[("wrk", c)] = {
                "req/s": result.inf_per_s, "gen cores": result.generator_cores,
                "gen us/req": result.generator_cores / result.inf_per_s * 1e6,
                "srv us/req": result.server_us_per_inf}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=lambda s: tuple(map(int, s.split(","))),
                        default=(1, 16))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    two = (os.cpu_count() or 1) >= 2
    args.generator_cpu = 1 if two else None
    if two:
        os.sched_setaffinity(0, {1})
    rounds = []
    with kiln_server(bundled_repository(), pin_cpu=0 if two else None) as server:
        for _ in range(args.rounds):
            rounds.append(one_round(args, server.http_port, server.grpc_port, server.pid))
    columns = ("req/s", "gen us/req", "gen cores", "srv us/req")
    print(f"{'client':<18}{'c':>4}" + "".join(f"{c:>12}" for c in columns) + f"{'gen x':>8}")
    for key in rounds[0]:
        median = {c: statistics.median(r[key][c] for r in rounds) for c in columns}
        base = statistics.median(r[("kiln bench http", key[1])]["gen us/req"] for r in rounds)
        print(f"{key[0]:<18}{key[1]:>4}" + "".join(f"{median[c]:>12,.2f}" for c in columns)
              + f"{median['gen us/req'] / base:>8.2f}")


if __name__ == "__main__":
    main()
