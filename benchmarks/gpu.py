"""GPU check: kiln serves KIND_GPU models on ONNX Runtime's CUDA execution provider.

    python benchmarks/gpu.py                 # on a machine with an NVIDIA GPU and onnxruntime-gpu
    python benchmarks/gpu.py --cpu --sizes 64,256,10 --duration 0.5    # plumbing only, no GPU

Two models are served by one real ``kiln serve`` process on 127.0.0.1:

- ``mlp``: a compute-bound MLP 1024-4096-4096-1024 (~25 M weights) built in code, with a
  Triton ``config.pbtxt`` holding ``instance_group [{kind: KIND_GPU, count: 1}]``;
- ``digits``: the bundled example classifier, with ``config.yaml``
  ``instances: {kind: gpu, count: 1}``.

Everything else is kiln's default (dynamic batching on, ``max_batch_size`` 64). The script
checks, per model:

1. providers: the server log's ``loaded ... with execution providers ...`` line names
   CUDAExecutionProvider first, ``GET /v2/models/NAME/config`` says KIND_GPU, and (where
   NVML answers) the server process holds GPU memory;
2. parity: V2 requests with binary tensors (batch 1 and 8) answered by the server match the
   same model run in-process on the CPU: ``|kiln - cpu| <= 1e-3 * (|cpu| + max |cpu|)``;

and measures, with ``kiln.bench`` (closed loop, V2 binary, batch-1 requests):

3. kiln's throughput at concurrency 16 as a ratio to in-process ONNX Runtime on CUDA (kiln's
   own session settings, one caller) at its best batch size (1, 16, 64 or 256) and at batch 16;
4. kiln's p50 at concurrency 1 as a ratio to the in-process CUDA batch-1 p50.

CUDA and cuDNN libraries from pip's ``nvidia-*`` packages are put on ``LD_LIBRARY_PATH`` (the
script re-executes itself once), so that this process and the server both find them.

Exit status: 0 when every check passed, 1 when one failed, 2 when CUDA is not usable here.
``--cpu`` runs the same steps with KIND_CPU models on the CPU provider, to try the plumbing
on a machine without a GPU; it is no GPU check.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's kiln

from tests.models import mlp_model, save
from tests.server import KilnProcess, kiln_serve

import kiln
from kiln.bench import BenchOptions, open_target, run
from kiln.bench.results import LoadPoint
from kiln.repository.config import ModelConfig, load_yaml_config
from kiln.repository.pbtxt import load_pbtxt_config
from kiln.runtime import ModelArtifact
from kiln.runtime.onnx import OnnxRuntimeBackend, OnnxSession
from kiln.serve.core.model import session_options
from kiln.tensors import TensorDict

ROOT = Path(__file__).resolve().parents[1]
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
SIZES = (1024, 4096, 4096, 1024)
BATCHES = (1, 16, 64, 256)
CONCURRENCY = 16
PARITY_BATCHES = (1, 8)
RTOL = 1e-3
REEXEC = "KILN_GPU_CHECK_REEXEC"
LOADED = re.compile(r"loaded (\S+) with execution providers (.+?)\s*$")


@dataclass
class Served:
    """One model of the repository and everything measured about it."""

    name: str
    config_file: str
    path: Path
    config: ModelConfig | None = None
    inprocess_providers: list[str] = field(default_factory=list)
    #: In-process (kiln's session settings) on the provider under test: batch -> inferences/s.
    inprocess_rate: dict[int, float] = field(default_factory=dict)
    inprocess_p50_ms: float = float("nan")
    server_providers: list[str] = field(default_factory=list)
    config_kind: str = "?"
    parity: list[tuple[str, float, float, bool]] = field(default_factory=list)
    #: The same comparison for kiln's session run in this process (tells the provider's own
    #: numerics from anything the server adds).
    inprocess_parity: list[tuple[str, float, float, bool]] = field(default_factory=list)
    kiln_c1: LoadPoint | None = None
    kiln_c16: LoadPoint | None = None
    mean_batch: float = float("nan")
    failures: list[str] = field(default_factory=list)


def nvidia_library_dirs() -> list[str]:
    """``lib`` folders of the pip packages under the ``nvidia`` namespace (CUDA, cuDNN)."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [str(lib) for base in spec.submodule_search_locations
            for lib in sorted(Path(base).glob("*/lib")) if any(lib.glob("lib*.so*"))]


def ensure_library_path() -> None:
    """Re-execute once with pip's CUDA libraries on ``LD_LIBRARY_PATH``: the dynamic loader
    reads it only at start, and the server (a child process) inherits it."""
    current = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    missing = [d for d in nvidia_library_dirs() if d not in current]
    if missing and not os.environ.get(REEXEC):
        env = {**os.environ, REEXEC: "1", "LD_LIBRARY_PATH": ":".join([*missing, *current])}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def cuda_problem(model: Path) -> str | None:
    """Why ONNX Runtime cannot run ``model`` on CUDA here, or None when it can."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if CUDA not in available:
        return (f"onnxruntime {ort.__version__} here offers {', '.join(available)}: no {CUDA}. "
                "Run this on a machine with an NVIDIA GPU and onnxruntime-gpu installed.")
    session = ort.InferenceSession(str(model), providers=[CUDA, CPU])
    if session.get_providers()[0] != CUDA:
        return (f"onnxruntime {ort.__version__} has {CUDA} but a session fell back to "
                f"{', '.join(session.get_providers())}: no GPU, or CUDA / cuDNN libraries "
                "missing (see ONNX Runtime's error above).")
    return None


def model_config(served: Served, repo: Path) -> ModelConfig:
    path = repo / served.name / served.config_file
    return load_pbtxt_config(path) if path.suffix == ".pbtxt" else load_yaml_config(path)


def build_repository(repo: Path, sizes: tuple[int, ...], kind: str) -> list[Served]:
    """``mlp`` (config.pbtxt, KIND_<kind>) and ``digits`` (config.yaml, kind: <kind>)."""
    pbtxt = (f"instance_group [{{ kind: KIND_{kind.upper()}, count: 1 }}]\n"
             "dynamic_batching { }\n")
    model = mlp_model(sizes)
    model.ir_version = min(model.ir_version, 10)  # a newer onnx writes IRs older runtimes refuse
    mlp = save(model, repo, "mlp", config=pbtxt, config_name="config.pbtxt")
    digits = repo / "digits" / "1" / "model.onnx"
    digits.parent.mkdir(parents=True)
    shutil.copyfile(Path(kiln.__file__).parent / "examples" / "model_repository" / "digits"
                    / "1" / "model.onnx", digits)
    (repo / "digits" / "config.yaml").write_text(f"instances: {{kind: {kind}, count: 1}}\n")
    models = [Served("mlp", "config.pbtxt", mlp), Served("digits", "config.yaml", digits)]
    for served in models:
        served.config = model_config(served, repo)
    return models


def random_inputs(session: Any, batch: int, rng: np.random.Generator) -> TensorDict:
    """Float inputs in [0, 1) for every input of an ``onnxruntime.InferenceSession``."""
    return {i.name: rng.random((batch, *i.shape[1:])).astype(np.float32)
            for i in session.get_inputs()}


def compare(name: str, got: np.ndarray, want: np.ndarray) -> tuple[str, float, float, bool]:
    """(output, max |diff|, max |diff| / max |want|, within tolerance)."""
    if got.shape != want.shape:
        return name, float("inf"), float("inf"), False
    if want.dtype.kind in "iub":
        wrong = float(np.count_nonzero(got != want))
        return name, wrong, wrong / max(want.size, 1), wrong == 0
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    scale = float(np.abs(want).max()) or 1.0
    ok = bool(np.all(diff <= RTOL * (np.abs(want) + scale)))
    return name, float(diff.max()), float(diff.max()) / scale, ok


def timed_runs(session: OnnxSession, feed: TensorDict, duration_s: float) -> list[float]:
    """Seconds per ``session.run`` for ``duration_s`` seconds, after three warm-up runs."""
    for _ in range(3):
        session.run(feed)
    times: list[float] = []
    deadline = time.perf_counter() + duration_s
    while (started := time.perf_counter()) < deadline:
        session.run(feed)
        times.append(time.perf_counter() - started)
    return times


def measure_in_process(served: Served, reference: Any, parity: list[tuple[TensorDict, TensorDict]],
                       duration_s: float, rng: np.random.Generator) -> None:
    """kiln's own session (its backend and session options) run in this process, one caller:
    answers against the CPU's, batch-1 p50 and inferences/s at each batch size."""
    assert served.config is not None
    session = OnnxRuntimeBackend().load(ModelArtifact(path=served.path),
                                        session_options(served.config))
    served.inprocess_providers = list(session.providers)
    for request, want in parity:
        got = session.run(request)
        served.inprocess_parity += [compare(f"{name}[{len(value)}]", got[name], value)
                                    for name, value in want.items()]
    for batch in BATCHES:
        times = timed_runs(session, random_inputs(reference, batch, rng), duration_s)
        served.inprocess_rate[batch] = batch * len(times) / sum(times)
        if batch == 1:
            served.inprocess_p50_ms = statistics.median(times) * 1e3
    session.close()


async def ask(url: str, model: str, requests: Sequence[TensorDict]) -> list[TensorDict]:
    """Answers of ``model`` to each request, over V2 HTTP with binary tensors."""
    target = open_target(f"v2-binary+{url}", model=model)
    await target.open()
    try:
        return [target.decode(await target.call(target.encode(r))) for r in requests]
    finally:
        await target.close()


def check_server(served: Served, server: KilnProcess, expected_provider: str,
                 expected_kind: str, parity: list[tuple[TensorDict, TensorDict]]) -> None:
    """Providers in the log, kind in the config endpoint, answers against the CPU's."""
    for line in server.log().splitlines():
        if (m := LOADED.search(line)) and f"/{served.name}/" in m.group(1):
            served.server_providers = [p.strip() for p in m.group(2).split(",")]
    if served.server_providers[:1] != [expected_provider]:
        served.failures.append(f"server log: providers {served.server_providers or 'not logged'},"
                               f" not {expected_provider} first")
    config = httpx.get(f"{server.base}/v2/models/{served.name}/config", timeout=10).json()
    served.config_kind = ",".join(g.get("kind", "?") for g in config.get("instance_group", []))
    if served.config_kind != f"KIND_{expected_kind.upper()}":
        served.failures.append(f"config endpoint: instance_group kind {served.config_kind}")
    answers = asyncio.run(ask(server.base, served.name, [request for request, _ in parity]))
    for (_, want), got in zip(parity, answers, strict=True):
        for name, value in want.items():
            served.parity.append(compare(f"{name}[{len(value)}]", got[name], value))
    if not all(ok for *_, ok in served.parity):
        served.failures.append("parity with the CPU failed")


def measure_server(served: Served, server: KilnProcess, duration_s: float) -> None:
    """kiln.bench against the server: concurrency 1 and 16, batch-1 V2 binary requests."""
    stats = f"{server.base}/v2/models/{served.name}/stats"
    before = httpx.get(stats, timeout=10).json()["model_stats"][0]
    report = run(f"v2-binary+{server.base}", BenchOptions(
        model=served.name, concurrency=(1, CONCURRENCY), duration_s=duration_s, warmup_s=1.0,
        server_pid=server.process.pid))
    served.kiln_c1, served.kiln_c16 = report.targets[0].points
    after = httpx.get(stats, timeout=10).json()["model_stats"][0]
    executions = after["execution_count"] - before["execution_count"]
    served.mean_batch = (after["inference_count"] - before["inference_count"]) / max(executions, 1)
    for point in (served.kiln_c1, served.kiln_c16):
        if point.errors:
            served.failures.append(f"c={point.concurrency}: errors {point.errors} "
                                   f"({point.first_error})")


def gpu_memory_mib(pid: int) -> str:
    """GPU memory NVML reports for ``pid`` (best effort: 'n/a' where NVML cannot tell)."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        used = [p.usedGpuMemory for i in range(pynvml.nvmlDeviceGetCount())
                for p in pynvml.nvmlDeviceGetComputeRunningProcesses(
                    pynvml.nvmlDeviceGetHandleByIndex(i)) if p.pid == pid]
        return f"{sum(u or 0 for u in used) / 2**20:.0f} MiB" if used else "none listed"
    except Exception as exc:
        return f"n/a ({type(exc).__name__})"


def gpu_name() -> str:
    """The GPUs NVML sees (best effort)."""
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                 for i in range(pynvml.nvmlDeviceGetCount())]
        return ", ".join(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except Exception as exc:
        return f"n/a ({type(exc).__name__})"


def ratio(a: float, b: float) -> str:
    return f"{a / b:6.2f}" if b and np.isfinite(a) and np.isfinite(b) else "   n/a"


def report(models: list[Served], provider: str, gpu_memory: str, describe: str) -> None:
    short = provider.removesuffix("ExecutionProvider")
    print(f"\n== kiln over HTTP (V2 binary, batch-1 requests, dynamic batching) vs in-process "
          f"ONNX Runtime {short}, {describe}")
    for m in models:
        c1, c16 = m.kiln_c1, m.kiln_c16
        if c1 is None or c16 is None or c1.latency_ms is None:
            print(f"{m.name}: not measured")
            continue
        best = max(m.inprocess_rate, key=lambda b: m.inprocess_rate[b])
        print(f"\n{m.name}: server providers {', '.join(m.server_providers)}; config "
              f"instance_group {m.config_kind}; in-process providers "
              f"{', '.join(m.inprocess_providers)}")
        print("  in-process " + short + " inferences/s by batch: " + ", ".join(
            f"b{b} {r:,.0f}" for b, r in m.inprocess_rate.items()))
        rows = [
            ("throughput c=16 / in-process best batch", f"{c16.inferences_per_s:10,.0f} inf/s",
             f"{m.inprocess_rate[best]:10,.0f} inf/s (b{best})",
             ratio(c16.inferences_per_s, m.inprocess_rate[best])),
            ("throughput c=16 / in-process batch 16", f"{c16.inferences_per_s:10,.0f} inf/s",
             f"{m.inprocess_rate[16]:10,.0f} inf/s (b16)",
             ratio(c16.inferences_per_s, m.inprocess_rate[16])),
            ("p50 c=1 / in-process batch-1 p50", f"{c1.latency_ms.p50:10.3f} ms",
             f"{m.inprocess_p50_ms:10.3f} ms (b1)",
             ratio(c1.latency_ms.p50, m.inprocess_p50_ms)),
        ]
        print(f"  {'':42} {'kiln':>16} {'in-process':>24} {'ratio':>7}")
        for label, kiln_value, base, value in rows:
            print(f"  {label:42} {kiln_value:>16} {base:>24} {value:>7}")
        print(f"  kiln c=16: p50 {c16.latency_ms.p50:.3f} ms, p99 {c16.latency_ms.p99:.3f} ms, "  # type: ignore[union-attr]
              f"mean batch executed {m.mean_batch:.1f}, load generator "
              f"{c16.client.cores:.2f} cores{' (SATURATED)' if c16.client.saturated else ''}, "
              f"server {c16.server_cores or float('nan'):.2f} cores; c=1 p99 "
              f"{c1.latency_ms.p99:.3f} ms")
    print(f"\nGPU memory held by the kiln server process (NVML): {gpu_memory}")
    print("\n== parity against in-process CPU (|d| <= 1e-3 (|cpu| + max|cpu|); integer "
          "outputs: count of differing elements)")
    for m in models:
        for source, rows in (("kiln HTTP", m.parity), (f"in-proc {short}", m.inprocess_parity)):
            for name, worst, rel, ok in rows:
                print(f"  {m.name:7} {source:13} {name:18} max|d| {worst:9.2e}  "
                      f"max|d|/max|cpu| {rel:9.2e}  {'ok' if ok else 'MISMATCH'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds per measured point (default 3)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="MLP layer widths (default 1024,4096,4096,1024)")
    parser.add_argument("--cpu", action="store_true",
                        help="plumbing dry run: KIND_CPU models on the CPU provider; no GPU check")
    args = parser.parse_args(argv)
    if not args.cpu:
        ensure_library_path()
    import onnxruntime as ort

    provider, kind = (CPU, "cpu") if args.cpu else (CUDA, "gpu")
    sizes = tuple(int(s) for s in args.sizes.split(","))
    describe = f"MLP {'-'.join(map(str, sizes))}, {args.duration:g} s per point"
    print(f"kiln {kiln.__version__}, onnxruntime {ort.__version__} from "
          f"{Path(ort.__file__).parent}, providers {', '.join(ort.get_available_providers())}; "
          f"GPU {gpu_name()}; {os.cpu_count()} cores", flush=True)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        models = build_repository(repo, sizes, kind)
        if not args.cpu and (problem := cuda_problem(models[0].path)):
            print(f"FAIL: CUDA is not usable here: {problem}", flush=True)
            return 2
        parity: dict[str, list[tuple[TensorDict, TensorDict]]] = {}
        for served in models:
            reference = ort.InferenceSession(str(served.path), providers=[CPU])
            requests = [random_inputs(reference, b, rng) for b in PARITY_BATCHES]
            names = [o.name for o in reference.get_outputs()]
            parity[served.name] = [(r, dict(zip(names, reference.run(None, r), strict=True)))
                                   for r in requests]
            print(f"in-process {served.name} ...", flush=True)
            measure_in_process(served, reference, parity[served.name], args.duration, rng)
        env = {"PYTHONPATH": os.pathsep.join(
            [str(Path(kiln.__file__).parents[1]), str(ROOT), os.environ.get("PYTHONPATH", "")])}
        print("starting kiln serve ...", flush=True)
        started = time.perf_counter()
        with kiln_serve(repo, timeout_s=180, env=env, log_dir=Path(tmp)) as server:
            print(f"kiln serve ready in {time.perf_counter() - started:.1f} s", flush=True)
            for served in models:
                check_server(served, server, provider, kind, parity[served.name])
                print(f"kiln {served.name} ...", flush=True)
                measure_server(served, server, args.duration)
            gpu_memory = gpu_memory_mib(server.process.pid) if not args.cpu else "n/a (--cpu)"
            log = server.log()
        print("\n== server log, model loading lines")
        for line in log.splitlines():
            if LOADED.search(line) or "not available" in line or "model loaded" in line:
                print("  " + line.strip()[:300])
    report(models, provider, gpu_memory, describe)
    failures = [f"{m.name}: {f}" for m in models for f in m.failures]
    parity_ok = all(ok for m in models for *_, ok in m.parity)
    providers_ok = all(m.server_providers[:1] == [provider] for m in models)
    print(f"\nPARITY {'PASS' if parity_ok else 'FAIL'} (rtol {RTOL:g}, kiln over HTTP vs CPU)")
    print(f"PROVIDER {'PASS' if providers_ok else 'FAIL'}: kiln served with "
          + "; ".join(f"{m.name} {', '.join(m.server_providers) or '?'}" for m in models))
    for failure in failures:
        print(f"FAIL: {failure}")
    if args.cpu:
        print("(--cpu: a plumbing dry run on the CPU provider, not the GPU check)")
    print("RESULT " + ("PASS" if not failures else "FAIL"))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
