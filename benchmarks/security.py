"""What kiln's security features cost, measured side by side in one run.

    python benchmarks/security.py

1. Serving: the tiny MLP over HTTP JSON (wrk, c = 1 and 16) on four servers started from the
   same repository: plain, API keys, TLS, TLS + API keys. Rounds alternate the servers;
   medians of inferences/s and of server CPU per inference, with ratios to plain.
2. Loading: reading a model version through the admission pipeline (plain, with a
   manifest, encrypted), medians of repeated reads, and the decryption rate.
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.credentials import make_certs, make_keys
from tests.models import mlp_model

from benchmarks.common import kiln_server, run_wrk, v2_bodies
from benchmarks.models import MODELS
from kiln.repository.encryption import encrypt_file
from kiln.repository.files import ArtifactPolicy, VersionFolder
from kiln.repository.manifest import sha256_file
from kiln.repository.model_keys import KeyRing, new_key_line
from kiln.runtime import SessionOptions
from kiln.runtime.onnx import OnnxRuntimeBackend


def serving(args: argparse.Namespace, work: Path) -> None:
    model = MODELS["tiny"]()
    model.build(work / "repo")
    body, _, _ = v2_bodies(model.name, model.inputs(1))
    certs = make_certs(work)
    token = make_keys(work / "keys.yaml", (["infer"], None))[0]
    tls = ["--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key)]
    client = {"verify": ssl.create_default_context(cafile=str(certs.ca))}
    variants = {"plain": ([], None), "keys": (["--keys-file", str(work / "keys.yaml")], None),
                "tls": (tls, client),
                "tls+keys": ([*tls, "--keys-file", str(work / "keys.yaml")], client)}
    with ExitStack() as stack:
        servers = {name: stack.enter_context(kiln_server(work / "repo", *extra, pin_cpu=0,
                                                         client=cl))
                   for name, (extra, cl) in variants.items()}
        for c in args.concurrency:
            results: dict[str, list[tuple[float, float]]] = {n: [] for n in servers}
            for r in range(args.rounds):
                for name in (list(servers) if r % 2 == 0 else list(servers)[::-1]):
                    server = servers[name]
                    scheme = "https" if "tls" in name else "http"
                    headers = {"Authorization": f"Bearer {token}"} if "keys" in name else {}
                    result = run_wrk(f"{scheme}://127.0.0.1:{server.http_port}/v2/models/tiny/infer",
                                     body, c, args.duration, server.pid, pin_cpu=1,
                                     extra_headers=headers)
                    assert result.errors == 0, name
                    results[name].append((result.inf_per_s, result.server_us_per_inf))
            base = statistics.median(x for x, _ in results["plain"])
            base_cpu = statistics.median(y for _, y in results["plain"])
            for name, values in results.items():
                rate = statistics.median(x for x, _ in values)
                cpu = statistics.median(y for _, y in values)
                print(f"serving c={c:<3} {name:9} {rate:9.0f} inf/s (x{rate / base:5.3f})  "
                      f"server {cpu:6.1f} us/inf (x{cpu / base_cpu:5.3f})", flush=True)


def _median_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def loading(args: argparse.Namespace, work: Path) -> None:
    keys = KeyRing.load([], new_key_line())
    assert keys is not None
    folders = {name: work / name / "1" for name in ("plain", "manifest", "encrypted")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    data = mlp_model((args.width, args.width, args.width, 10)).SerializeToString()
    (folders["plain"] / "model.onnx").write_bytes(data)
    (folders["manifest"] / "model.onnx").write_bytes(data)
    digest, size = sha256_file(folders["manifest"] / "model.onnx")
    (folders["manifest"] / "manifest.json").write_text(
        f'{{"files": {{"model.onnx": {{"sha256": "{digest}", "bytes": {size}}}}}}}')
    encrypt_file(folders["plain"] / "model.onnx", folders["encrypted"] / "model.onnx.kiln-enc",
                 keys)
    policy, backend = ArtifactPolicy(keys=keys), OnnxRuntimeBackend()

    def admit(folder: Path, name: str) -> object:
        files = VersionFolder(folder, binding=name, policy=policy)
        return backend.admit(files, "model.onnx", SessionOptions())

    ms = {name: _median_ms(lambda f=folder, n=name: admit(f, n), args.repeats)
          for name, folder in folders.items()}
    mb = len(data) / 1e6
    for name, value in ms.items():
        print(f"loading {mb:6.1f} MB {name:9} {value:8.1f} ms  (x{value / ms['plain']:5.2f})")
    print(f"decryption adds {ms['encrypted'] - ms['plain']:.1f} ms: "
          f"{mb / max(ms['encrypted'] - ms['plain'], 1e-6) * 1e3:.0f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per point")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=int, default=2048, help="hidden size of the loaded MLP")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        loading(args, Path(tmp) / "load")
        serving(args, Path(tmp))


if __name__ == "__main__":
    main()
