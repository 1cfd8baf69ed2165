"""Encrypted and manifest-checked models on a real ``kiln serve``: identical answers to the
plain model, damaged files refused with their reason while the others serve, and no
plaintext ever written to disk."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from kiln.repository.encryption import SUFFIX, encrypt_file, read_header
from kiln.repository.model_keys import KeyRing, write_key_file
from tests.models import mlp_model, save
from tests.server import KilnProcess, kiln_serve

SIZES = (64, 512, 512, 10)


def kiln(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "kiln.cli.main", *args], capture_output=True,
                          text=True, check=True)
    return done.stdout + done.stderr


def seal(repo: Path, name: str, key: Path, *, bind: str = "") -> Path:
    """``repo/name/1/model.onnx`` -> ``model.onnx.kiln-enc``; the plaintext is removed."""
    plain = repo / name / "1" / "model.onnx"
    sealed = plain.with_name(plain.name + SUFFIX)
    encrypt_file(plain, sealed, KeyRing.load([key]), binding=bind,  # type: ignore[arg-type]
                 chunk_size=1 << 16)
    plain.unlink()
    return sealed


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


class Scanner:
    """Looks for the plaintext model in every file under some folders until stopped."""

    def __init__(self, needle: bytes, folders: list[Path]) -> None:
        self.needle, self.folders = needle, folders
        self.hits: set[str] = set()
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scanner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.scan()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.scan()
            self._stop.wait(0.002)

    def scan(self) -> None:
        self.scans += 1
        for folder in self.folders:
            for root, _, files in os.walk(folder):
                for name in files:
                    try:
                        if self.needle in Path(root, name).read_bytes():
                            self.hits.add(str(Path(root, name)))
                    except OSError:
                        pass  # gone between listing and reading


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("sealed")
    repo, temp = base / "repo", base / "tmp"
    temp.mkdir()
    key, other_key = base / "model.key", base / "other.key"
    kiln("keygen", str(key))
    write_key_file(other_key)
    model = mlp_model(SIZES, seed=3)
    plaintext = model.SerializeToString()
    for name in ("plain", "sealed", "flipped", "truncated", "wrongkey", "swapped", "misplaced",
                 "badmanifest"):
        save(model, repo, name)
    sealed = repo / "sealed" / "1" / "model.onnx"
    kiln("encrypt", str(sealed), "--key-file", str(key), "--bind", "sealed/1")
    sealed.unlink()
    _flip(seal(repo, "flipped", key), 50_000)
    truncated = seal(repo, "truncated", key)
    truncated.write_bytes(truncated.read_bytes()[:-1000])
    seal(repo, "wrongkey", other_key)
    swapped = seal(repo, "swapped", key)  # gets the header of another encryption of it
    shutil.copy(repo / "plain" / "1" / "model.onnx", base / "donor.onnx")
    encrypt_file(base / "donor.onnx", base / "donor.enc", KeyRing.load([key]),  # type: ignore[arg-type]
                 chunk_size=1 << 16)
    donor = (base / "donor.enc").read_bytes()
    size = len(read_header(io.BytesIO(donor).read).raw)
    swapped.write_bytes(donor[:size] + swapped.read_bytes()[size:])
    shutil.move(seal(repo, "misplaced", key, bind="sealed/1"),
                repo / "misplaced" / "1" / "model.onnx.kiln-enc")
    folder = repo / "badmanifest" / "1"
    (folder / "manifest.json").write_text(json.dumps({"files": {"model.onnx": {
        "sha256": hashlib.sha256(plaintext + b"x").hexdigest()}}}))
    before = {p: p.stat().st_mtime_ns for p in repo.rglob("*")}
    with Scanner(plaintext[-4096:], [repo, temp, Path("/dev/shm")]) as scanner, \
            kiln_serve(repo, "--model-key-file", str(key), ready=False, log_dir=base,
                       env={"TMPDIR": str(temp)}) as server:
        httpx.get(server.base + "/v2/health/live")
        yield {"server": server, "scanner": scanner, "repo": repo, "before": before,
               "key": key, "temp": temp}


def _infer(server: KilnProcess, model: str, x: np.ndarray) -> np.ndarray:
    with httpclient.InferenceServerClient(server.http_url) as client:
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        result = client.infer(model, [tensor])
        return result.as_numpy("output")


def test_encrypted_model_answers_bit_identically(setup: dict[str, Any]) -> None:
    x = np.random.default_rng(1).standard_normal((8, SIZES[0])).astype(np.float32)
    plain, sealed = _infer(setup["server"], "plain", x), _infer(setup["server"], "sealed", x)
    assert plain.tobytes() == sealed.tobytes()
    assert "sealed/1/model.onnx.kiln-enc" in setup["server"].log()


@pytest.mark.parametrize(("model", "reason"), [
    ("flipped", "failed authentication"),
    ("truncated", "truncated or was altered"),
    ("wrongkey", "which is not among the configured model keys"),
    ("swapped", "failed authentication"),
    ("misplaced", "encrypted for sealed/1, not misplaced/1"),
    ("badmanifest", "model.onnx does not match manifest.json"),
])
def test_damaged_models_are_refused_with_the_reason(setup: dict[str, Any], model: str,
                                                    reason: str) -> None:
    server = setup["server"]
    response = httpx.post(f"{server.base}/v2/models/{model}/versions/1/infer", json={
        "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]})
    assert response.status_code == 503
    assert reason in response.json()["error"]
    assert f"model {model} version 1 failed to load" in server.log()
    assert httpx.get(f"{server.base}/v2/models/{model}/ready").status_code == 503
    assert _infer(server, "plain", np.zeros((1, 64), np.float32)).shape == (1, 10)


def test_no_plaintext_on_disk_and_no_key_in_the_log(setup: dict[str, Any]) -> None:
    scanner: Scanner = setup["scanner"]
    scanner.scan()
    assert scanner.scans > 10
    assert all(h.startswith(str(setup["repo"] / "plain")) or "badmanifest" in h
               for h in scanner.hits), scanner.hits
    after = {p: p.stat().st_mtime_ns for p in setup["repo"].rglob("*")}
    assert after == setup["before"]  # nothing written into the repository
    line = setup["key"].read_text().splitlines()[-1]
    log = setup["server"].log()
    assert line.split(":")[2] not in log and line not in log
