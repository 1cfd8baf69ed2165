"""Load generation and measurement shared by the benchmark scripts."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from tests.server import kiln_serve, stop_process, unused_port

from benchmarks.peers.ort_session import session as ort_session
from kiln.serve.codecs.binary import encode_tensor
from kiln.tensors import DataType, TensorDict

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class LoadResult:
    inf_per_s: float
    p50_ms: float
    p99_ms: float
    server_us_per_inf: float
    generator_cores: float
    errors: int = 0


@dataclass
class Server:
    """A server under load: its main process (whose whole tree is charged) and its ports."""

    pid: int
    http_port: int
    grpc_port: int
    metrics_port: int | None = None


@contextlib.contextmanager
def kiln_server(repo: Path, *args: str, pin_cpu: int | None,
                client: dict[str, object] | None = None) -> Iterator[Server]:
    prefix = ["taskset", "-c", str(pin_cpu)] if pin_cpu is not None else []
    with kiln_serve(repo, *args, command_prefix=prefix, client=client) as process:
        yield Server(process.process.pid, process.http_port, process.grpc_port,
                     process.metrics_port)


@contextlib.contextmanager
def kiln_baseline_server(repo: Path, source: Path, *, pin_cpu: int | None) -> Iterator[Server]:
    """kiln run from another checkout's ``source`` folder (``<checkout>/src``), to measure a
    change against the code before it in one run. NOTE: older kiln has no --address-file,
    so its ports are chosen here (another process could take one in between)."""
    import httpx

    ports = [unused_port() for _ in range(3)]
    prefix = ["taskset", "-c", str(pin_cpu)] if pin_cpu is not None else []
    command = [*prefix, sys.executable, "-m", "kiln.cli.main", "serve", str(repo),
               "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
               "--metrics-port", str(ports[2])]
    env = {**os.environ, "PYTHONPATH": str(source)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the baseline kiln from {source} did not start")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{ports[0]}/v2/health/ready").status_code == 200:
                    break
            time.sleep(0.1)
        yield Server(process.pid, ports[0], ports[1], ports[2])
    finally:
        stop_process(process)


def _stat(pid: int | str) -> list[str]:
    """/proc/PID/stat's fields after the command name (state first), or [] if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return []


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (from the parent links in /proc), parents first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry.name)):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree = [pid]
    for parent in tree:
        tree += children.get(parent, [])
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used by a process and all its live descendants, e.g. a Triton server's
    Python process, ``tritonserver`` and the Python backend stubs."""
    ticks = 0
    for member in process_tree(pid):
        if fields := _stat(member):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / TICKS


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def v2_bodies(model: str, inputs: TensorDict) -> tuple[bytes, bytes, int]:
    """The same request as V2 JSON and as V2 binary (body, JSON header length)."""
    json_inputs, binary_inputs, blobs = [], [], []
    for name, value in inputs.items():
        datatype = DataType.from_numpy(value.dtype)
        meta = {"name": name, "shape": list(value.shape), "datatype": datatype.v2}
        json_inputs.append({**meta, "data": value.ravel().tolist()})
        blob = encode_tensor(value, datatype)
        binary_inputs.append({**meta, "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    json_body = orjson.dumps({"inputs": json_inputs})
    header = orjson.dumps({"inputs": binary_inputs,
                           "parameters": {"binary_data_output": True}})
    return json_body, header + b"".join(blobs), len(header)


def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def run_wrk(url: str, body: bytes, concurrency: int, duration: float, server_pid: int, *,
            header_length: int | None = None, pin_cpu: int | None = None,
            extra_headers: dict[str, str] | None = None) -> LoadResult:
    """Closed-loop HTTP load from wrk (one thread); latency percentiles from wrk itself."""
    headers = {"Content-Type": "application/json"}
    if header_length is not None:
        headers = {"Content-Type": "application/octet-stream",
                   "Inference-Header-Content-Length": str(header_length)}
    headers.update(extra_headers or {})
    lua = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body)}"]
    lua += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lua) + "\n")
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency", "-s",
               script.name, url]
    out, server_cpu, generator_cores = _measured_run(command, server_pid, pin_cpu)
    os.unlink(script.name)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    seconds = float(re.search(r"requests in ([\d.]+)s", out).group(1))  # type: ignore[union-attr]
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return LoadResult(
        inf_per_s=requests / seconds,
        p50_ms=_wrk_ms(out, "50%"), p99_ms=_wrk_ms(out, "99%"),
        server_us_per_inf=server_cpu / max(requests, 1) * 1e6,
        generator_cores=generator_cores, errors=errors)


def _measured_run(command: list[str], server_pid: int,
                  pin_cpu: int | None) -> tuple[str, float, float]:
    """Run a load generator; returns its output, the server tree's CPU seconds meanwhile and
    the generator's cores."""
    if pin_cpu is not None:
        command = ["taskset", "-c", str(pin_cpu), *command]
    server_before, gen_before, wall = tree_cpu_seconds(server_pid), _children_cpu(), time.time()
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    wall = time.time() - wall
    return (out, tree_cpu_seconds(server_pid) - server_before,
            (_children_cpu() - gen_before) / wall)


def _wrk_ms(out: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_grpc_load(address: str, model: str, inputs: TensorDict, concurrency: int,
                  duration: float, server_pid: int, *, pin_cpu: int | None = None) -> LoadResult:
    """Closed-loop gRPC load from ``benchmarks/grpc_load.py`` in its own process."""
    with tempfile.NamedTemporaryFile(suffix=".npz", delete=False) as f:
        np.savez(f, **inputs)
    command = [sys.executable, str(Path(__file__).with_name("grpc_load.py")), address, model,
               f.name, str(concurrency), str(duration)]
    out, server_cpu, generator_cores = _measured_run(command, server_pid, pin_cpu)
    os.unlink(f.name)
    result = orjson.loads(out)
    return LoadResult(
        inf_per_s=result["requests"] / result["seconds"], p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        server_us_per_inf=server_cpu / max(result["requests"], 1) * 1e6,
        generator_cores=generator_cores, errors=result["errors"])


def _loop(session: ort.InferenceSession, feed: TensorDict, duration: float,
          latencies: list[float]) -> None:
    session.run(None, feed)
    deadline = time.perf_counter() + duration
    while (start := time.perf_counter()) < deadline:
        session.run(None, feed)
        latencies.append(time.perf_counter() - start)


def in_process(model: object, duration: float, *, batch: int, callers: int,
               threads: int, spinning: bool = True) -> LoadResult:
    """``callers`` threads calling one session at ``batch`` rows for ``duration`` seconds."""
    session = ort_session(model.path, threads, spinning=spinning)  # type: ignore[attr-defined]
    feed = model.inputs(batch)  # type: ignore[attr-defined]
    per_thread: list[list[float]] = [[] for _ in range(callers)]
    workers = [threading.Thread(target=_loop, args=(session, feed, duration, lat))
               for lat in per_thread]
    cpu, wall = time.process_time(), time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    latencies = np.array([x for lat in per_thread for x in lat]) * 1e3
    inferences = len(latencies) * batch
    return LoadResult(inf_per_s=inferences / wall, p50_ms=float(np.percentile(latencies, 50)),
                      p99_ms=float(np.percentile(latencies, 99)),
                      server_us_per_inf=cpu / inferences * 1e6, generator_cores=0.0)


def in_process_sequential(model: object, duration: float) -> LoadResult:
    """The batch-1 limit: one caller, the model's own thread settings, the faster of
    spinning on and off."""
    threads = model.intra_op_threads  # type: ignore[attr-defined]
    if threads == 1:  # no intra-op pool: spinning does not apply
        return in_process(model, duration, batch=1, callers=1, threads=1)
    return min((in_process(model, duration / 2, batch=1, callers=1, threads=threads,
                           spinning=spin) for spin in (True, False)), key=lambda r: r.p50_ms)


def in_process_best(model: object, duration: float, concurrency: int) -> LoadResult:
    """The best in-process throughput for ``concurrency`` requests in flight: one batch of
    all of them, or the cores' worth of single-thread callers at batch 1."""
    cores = os.cpu_count() or 1
    threads = model.intra_op_threads  # type: ignore[attr-defined]
    candidates = [
        in_process(model, duration / 2, batch=concurrency, callers=1, threads=threads),
        in_process(model, duration / 2, batch=max(1, concurrency // cores),
                   callers=cores, threads=1),
    ]
    if threads > 1:
        candidates.append(in_process(model, duration / 2, batch=concurrency, callers=1,
                                     threads=threads, spinning=False))
    return max(candidates, key=lambda r: r.inf_per_s)
