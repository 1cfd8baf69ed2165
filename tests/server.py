"""Start a real ``kiln serve`` process on free loopback ports and wait until it answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class KilnProcess:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    scheme: str = "http"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


@contextmanager
def kiln_serve(repo: Path | None, *args: str, ready: bool = True, timeout_s: float = 60,
               env: dict[str, str] | None = None, log_dir: Path | None = None,
               command_prefix: list[str] | None = None,
               client: dict[str, Any] | None = None) -> Iterator[KilnProcess]:
    """Run ``kiln serve`` until the block ends; waits for live (and ready, unless told not to).

    ``client`` holds httpx options for the readiness check (e.g. ``verify`` and ``cert`` for
    a server started with TLS, which also makes ``base`` an https URL)."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    log_path = log_dir / f"kiln-serve-{http_port}.log"
    command = [*(command_prefix or []), sys.executable, "-m", "kiln.cli.main", "serve",
               "--http-port", str(http_port), "--grpc-port", str(grpc_port),
               "--metrics-port", str(metrics_port), *args]
    if repo is not None:
        command.insert(len(command_prefix or []) + 4, str(repo))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})})
    server = KilnProcess(process, http_port, grpc_port, metrics_port, log_path,
                         "https" if client else "http")
    try:
        _wait(server, "/v2/health/ready" if ready else "/v2/health/live", timeout_s,
              client or {})
        yield server
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    """SIGTERM (a graceful stop), then SIGKILL after ``timeout_s``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait(server: KilnProcess, path: str, timeout_s: float, client: dict[str, Any]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"kiln serve exited early:\n{server.log()}")
        try:
            if httpx.get(server.base + path, timeout=1, **client).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"kiln serve did not answer {path} within {timeout_s} s:\n{server.log()}")
