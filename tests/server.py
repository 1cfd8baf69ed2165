"""Start a real ``kiln serve`` process on free loopback ports and wait until it answers.

The server binds port 0 and reports the ports it got in ``--address-file`` once every
listener is up, so no port is chosen here and handed over later (which another process
could take in between).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def unused_port() -> int:
    """A loopback port nothing listens on now. Another process could take it before it is
    used: only for clients that must fail to connect, and for peer servers that cannot
    report the port they bound."""
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
    log_dir = Path(tempfile.mkdtemp(prefix="kiln-serve-", dir=log_dir))
    log_path, address_file = log_dir / "serve.log", log_dir / "addresses.json"
    command = [*(command_prefix or []), sys.executable, "-m", "kiln.cli.main", "serve",
               "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
               "--address-file", str(address_file), *args]
    if repo is not None:
        command.insert(len(command_prefix or []) + 4, str(repo))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})})
    try:
        ports = _wait_for_ports(process, address_file, log_path, timeout_s)
        server = KilnProcess(process, ports.get("http", 0), ports.get("grpc", 0),
                             ports.get("metrics", 0), log_path, "https" if client else "http")
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


def _wait_for_ports(process: subprocess.Popen[bytes], address_file: Path, log_path: Path,
                    timeout_s: float) -> dict[str, int]:
    """The ports the server reports once every listener is up."""
    deadline = time.monotonic() + timeout_s
    while not address_file.exists():
        if process.poll() is not None:
            raise RuntimeError(f"kiln serve exited early:\n{log_path.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"kiln serve did not start listening within {timeout_s} s:\n"
                               f"{log_path.read_text(errors='replace')}")
        time.sleep(0.02)
    ports: dict[str, int] = json.loads(address_file.read_text())
    return ports


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
