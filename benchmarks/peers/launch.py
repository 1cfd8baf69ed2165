"""Start a peer server from the peers' virtualenv and wait until its model answers.

Each peer serves the benchmark's ONNX file with the same ONNX Runtime settings as kiln
(``ort_session.py``), pinned like kiln, and is stopped with its whole process tree.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from tests.server import unused_port

from benchmarks.common import Server, process_tree

HERE = Path(__file__).resolve().parent
BIN = HERE / ".venv" / "bin"
SETUP = "bash benchmarks/peers/setup.sh"
#: Dynamic batching for every peer: see pytriton_server.py's docstring.
MAX_BATCH, MAX_DELAY_MS = 32, 1
#: A file in the peers' virtualenv that each peer needs.
NEEDS = {"pytriton": "python", "torchserve": "torchserve"}


def require_peers(peer: str) -> None:
    """Exit with the setup command when ``peer`` is not installed in the peers' virtualenv."""
    if not (BIN / NEEDS[peer]).exists():
        sys.exit(f"the {peer}-* targets need {BIN / NEEDS[peer]}; install the peers with: "
                 f"{SETUP}")


def _pin(pin_cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(pin_cpu)] if pin_cpu is not None else []


@contextlib.contextmanager
def _serve(command: list[str], *, env: dict[str, str], cwd: Path, ready: Callable[[], bool],
           timeout_s: float) -> Iterator[int]:
    """Run ``command`` (logging to ``cwd``) until the block ends; yields its pid once
    ``ready()`` is true. Stops the whole tree: TorchServe's CLI does not stop its Java."""
    log_path = cwd / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                   env={**os.environ, **env})
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not become ready:\n"
                                   f"{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.2)
        yield process.pid
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    tree = process_tree(process.pid)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    time.sleep(1)
    for pid in tree:  # Java usually needs SIGKILL after SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _answers(url: str, check: Callable[[httpx.Response], bool] = lambda r: True) -> bool:
    try:
        response = httpx.get(url, timeout=1)
    except httpx.TransportError:
        return False
    return response.status_code == 200 and check(response)


def _library_path() -> str:
    """The venv interpreter's libpython folder first: PyTriton's Python-backend stub links
    libpython3.x.so and would otherwise load the system's, next to another stdlib."""
    libdir = subprocess.run(
        [str(BIN / "python"), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True, text=True, check=True).stdout.strip()
    return os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)


@contextlib.contextmanager
def pytriton_server(model_path: Path, name: str, *, intra_op_threads: int, work: Path,
                    pin_cpu: int | None, timeout_s: float = 180) -> Iterator[Server]:
    """Serve ``model_path`` as ``name`` through PyTriton until the block ends."""
    require_peers("pytriton")
    folder = work / "pytriton"
    folder.mkdir(parents=True)
    server = Server(pid=0, http_port=unused_port(), grpc_port=unused_port())
    command = [*_pin(pin_cpu), str(BIN / "python"), str(HERE / "pytriton_server.py"),
               str(model_path), "--name", name, "--http-port", str(server.http_port),
               "--grpc-port", str(server.grpc_port), "--metrics-port", str(unused_port()),
               "--intra-op-threads", str(intra_op_threads),
               "--workspace", str(folder / "workspace")]
    # NOTE: Triton's /v2/health/ready is 200 before PyTriton binds the model: wait for it.
    ready = f"http://127.0.0.1:{server.http_port}/v2/models/{name}/ready"
    with _serve(command, env={"LD_LIBRARY_PATH": _library_path()}, cwd=folder,
                ready=lambda: _answers(ready), timeout_s=timeout_s) as pid:
        server.pid = pid
        yield server


def _torchserve_archive(model_path: Path, name: str, intra_op_threads: int,
                        folder: Path) -> Path:
    """A model archive with the ONNX file, the V2 handler and TorchServe's batching."""
    config = folder / "model-config.yaml"
    config.write_text(f"minWorkers: 1\nmaxWorkers: 1\nbatchSize: {MAX_BATCH}\n"
                      f"maxBatchDelay: {MAX_DELAY_MS}\n"
                      f"handler:\n  intra_op_threads: {intra_op_threads}\n")
    store = folder / "model-store"
    store.mkdir()
    subprocess.run([str(BIN / "torch-model-archiver"), "--model-name", name, "--version", "1",
                    "--serialized-file", str(model_path),
                    "--handler", str(HERE / "torchserve_handler.py"),
                    "--extra-files", str(HERE / "ort_session.py"),
                    "--config-file", str(config), "--export-path", str(store)], check=True)
    return store


@contextlib.contextmanager
def torchserve_server(model_path: Path, name: str, *, intra_op_threads: int, work: Path,
                      pin_cpu: int | None, timeout_s: float = 180) -> Iterator[Server]:
    """Serve ``model_path`` as ``name`` through TorchServe (V2 JSON over HTTP) until the
    block ends. Token auth off; access and metrics logs as shipped."""
    require_peers("torchserve")
    folder = work / "torchserve"
    folder.mkdir(parents=True)
    store = _torchserve_archive(model_path, name, intra_op_threads, folder)
    server = Server(pid=0, http_port=unused_port(), grpc_port=unused_port())
    management = unused_port()
    (folder / "config.properties").write_text("\n".join([
        f"inference_address=http://127.0.0.1:{server.http_port}",
        f"management_address=http://127.0.0.1:{management}",
        f"metrics_address=http://127.0.0.1:{unused_port()}",
        f"grpc_inference_port={server.grpc_port}", f"grpc_management_port={unused_port()}",
        f"model_store={store}", f"load_models={name}.mar",
        "disable_token_authorization=true", "install_py_dep_per_model=false", ""]))
    command = [*_pin(pin_cpu), str(BIN / "torchserve"), "--start", "--foreground", "--ncs",
               "--ts-config", str(folder / "config.properties"), "--model-store", str(store),
               "--disable-token-auth"]
    ready = f"http://127.0.0.1:{management}/models/{name}"
    # NOTE: TorchServe writes its pid file to $TMPDIR; one per instance avoids clashes.
    with _serve(command, env={"TMPDIR": str(folder)}, cwd=folder, timeout_s=timeout_s,
                ready=lambda: _answers(ready, lambda r: any(
                    w["status"] == "READY" for w in r.json()[0]["workers"]))) as pid:
        server.pid = pid
        yield server
