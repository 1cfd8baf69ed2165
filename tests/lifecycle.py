"""Helpers for the model lifecycle tests: publishing versions and asking the server."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import onnx

X = [[1.0, 2.0, 3.0, 4.0]]


def infer_body() -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                        "data": [v for row in X for v in row]}]}


def offset_of(response: httpx.Response) -> float:
    """The offset a version of ``offset_model`` added (its first output value minus x)."""
    return float(response.json()["outputs"][0]["data"][0]) - X[0][0]


def publish(repo: Path, name: str, version: int, model: onnx.ModelProto, *,
            how: str = "rename") -> Path:
    """Publish a version as the publish protocol says: ``rename`` (staged folder with a READY
    marker renamed into place), ``marker`` (in place, READY last) or ``manifest``."""
    data = model.SerializeToString()
    final = repo / name / str(version)
    folder = repo / name / f".staging-{version}" if how == "rename" else final
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(data)
    if how == "manifest":
        write_manifest(folder, data)
    else:
        (folder / "READY").touch()
    if how == "rename":
        folder.rename(final)
    return final


def write_manifest(folder: Path, data: bytes, filename: str = "model.onnx") -> None:
    digest = hashlib.sha256(data).hexdigest()
    manifest = {"format": "kiln-manifest/1",
                "files": {filename: {"sha256": digest, "bytes": len(data)}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def index(base: str) -> list[dict[str, str]]:
    response = httpx.post(f"{base}/v2/repository/index", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def row(base: str, name: str, version: int) -> dict[str, str] | None:
    return next((r for r in index(base)
                 if r["name"] == name and r.get("version") == str(version)), None)


def wait_for(condition: Callable[[], object], timeout_s: float = 20,
             what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class Traffic:
    """Clients sending a steady stream of requests to one model, one thread each."""

    url: str
    threads: int = 2
    answers: list[tuple[int, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        for i in range(self.threads):
            worker = threading.Thread(target=self._send, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def _send(self, worker: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url, json=infer_body())
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text}")
                    continue
                self.answers.append((worker, offset_of(response)))

    def offsets(self) -> list[float]:
        return [offset for _, offset in self.answers]

    def latest(self) -> float | None:
        return self.answers[-1][1] if self.answers else None

    def switched_once(self, old: float, new: float) -> bool:
        """Every client saw ``old`` answers, then only ``new`` ones (nothing else)."""
        for worker in range(self.threads):
            seen = [o for w, o in self.answers if w == worker]
            if not seen or seen[-1] != new or set(seen) - {old, new}:
                return False
            if old in seen[seen.index(new):]:
                return False
        return True
