"""Start a peer server from its own virtualenv and wait until its model answers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from tests.server import free_port

from benchmarks.common import Server

HERE = Path(__file__).resolve().parent
PYTHON = HERE / ".venv" / "bin" / "python"
SETUP = "bash benchmarks/peers/setup.sh"


def require_peers() -> None:
    """Exit with the setup command when the peers' virtualenv is missing."""
    if not PYTHON.exists():
        sys.exit(f"the pytriton-* targets need the peers' virtualenv ({PYTHON}); "
                 f"create it with: {SETUP}")


def _library_path() -> str:
    """The venv interpreter's libpython folder first: PyTriton's Python-backend stub links
    libpython3.x.so and would otherwise load the system's, next to another stdlib."""
    libdir = subprocess.run(
        [str(PYTHON), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True, text=True, check=True).stdout.strip()
    return os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)


@contextlib.contextmanager
def pytriton_server(model_path: Path, name: str, *, intra_op_threads: int, work: Path,
                    pin_cpu: int | None, timeout_s: float = 180) -> Iterator[Server]:
    """Serve ``model_path`` as ``name`` through PyTriton until the block ends."""
    require_peers()
    server = Server(pid=0, http_port=free_port(), grpc_port=free_port())
    command = [*(["taskset", "-c", str(pin_cpu)] if pin_cpu is not None else []),
               str(PYTHON), str(HERE / "pytriton_server.py"), str(model_path), "--name", name,
               "--http-port", str(server.http_port), "--grpc-port", str(server.grpc_port),
               "--metrics-port", str(free_port()), "--intra-op-threads", str(intra_op_threads),
               "--workspace", str(work / "pytriton-workspace")]
    log_path = work / f"pytriton-{server.http_port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "LD_LIBRARY_PATH": _library_path()})
    server.pid = process.pid
    try:
        _wait_ready(process, f"http://127.0.0.1:{server.http_port}/v2/models/{name}/ready",
                    timeout_s, log_path)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen[bytes], url: str, timeout_s: float,
                log_path: Path) -> None:
    # NOTE: Triton's /v2/health/ready is 200 before PyTriton has bound the model, so the
    # wait is on the model's own readiness.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"PyTriton exited early:\n{log_path.read_text(errors='replace')}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"PyTriton did not answer {url} within {timeout_s} s:\n"
                       f"{log_path.read_text(errors='replace')}")
