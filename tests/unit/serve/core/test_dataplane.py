"""The data plane on its own, with the echo test backend plugged in through a ``BackendTable``:
one call decodes, sheds, validates, runs and counts every request, whatever its protocol."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from kiln.errors import InvalidArgument, NotFound, Overloaded, Unavailable
from kiln.repository import ModelRepository
from kiln.runtime import BackendTable
from kiln.runtime.testing import EchoBackend
from kiln.serve.core.dataplane import UNKNOWN, DataPlane
from kiln.serve.core.registry import ModelRegistry
from kiln.serve.messages import InferenceRequest, RequestedOutput, State
from kiln.tensors import DataType, Signature, TensorSpec

X = TensorSpec("x", DataType.FP32, (-1, 4))


def _echo_repo(repo: Path, name: str = "echo", versions: tuple[int, ...] = (1,),
               config: str = "") -> None:
    for version in versions:
        folder = repo / name / str(version)
        folder.mkdir(parents=True)
        (folder / "model.echo").write_bytes(b"echo")
    (repo / name / "config.yaml").write_text("backend: echo\n" + config)


def _run(repo: Path, scenario: Callable[[DataPlane, EchoBackend], Awaitable[None]]) -> None:
    backend = EchoBackend([X])

    async def main() -> None:
        registry = ModelRegistry(ModelRepository([repo]), BackendTable({"echo": lambda: backend}),
                                 drain_timeout_s=5)
        for name in registry.repository.list():
            await registry.load(name)
        try:
            await scenario(DataPlane(registry), backend)
        finally:
            await registry.close()

    asyncio.run(main())


def _decode(signature: Signature, *, rows: int = 1, name: str = "echo",
            calls: list[Signature] | None = None) -> InferenceRequest:
    """What a codec does: build the request, knowing the version's signature."""
    if calls is not None:
        calls.append(signature)
    return InferenceRequest(model_name=name, inputs={"x": np.ones((rows, 4), np.float32)})


def _stats(plane: DataPlane, name: str = "echo") -> dict[str, dict[str, int]]:
    (stats,) = plane.statistics(name)
    return stats["inference_stats"]


def test_one_call_decodes_with_the_signature_runs_and_counts(repo: Path) -> None:
    _echo_repo(repo, versions=(1, 2), config="version_policy: {all: true}\n"
                                             "labels: {stable: 1}\n")

    async def scenario(plane: DataPlane, backend: EchoBackend) -> None:
        calls: list[Signature] = []
        seen: list[InferenceRequest] = []
        request, response = await plane.infer(
            "echo", "stable", functools.partial(_decode, rows=3, calls=calls),
            on_decoded=seen.append)
        assert calls == [Signature(inputs=(X,), outputs=(TensorSpec("x_out", X.datatype,
                                                                    X.shape),),
                                   max_batch_size=64)]
        assert seen == [request]
        assert response.model_version == "1" and response.outputs["x_out"].shape == (3, 4)
        _, newest = await plane.infer("echo", None, _decode)
        assert newest.model_version == "2"
        (one, two) = plane.statistics("echo")
        assert (one["version"], one["inference_stats"]["success"]["count"],
                one["inference_count"]) == ("1", 1, 3)
        assert two["inference_stats"]["success"]["count"] == 1

    _run(repo, scenario)


def test_a_full_queue_refuses_before_decoding(repo: Path) -> None:
    _echo_repo(repo, config="max_batch_size: 1\ninstances: {count: 1}\n"
                            "dynamic_batching: {max_queue_size: 1}\n"
                            "optimization: {inline_max_us: 0}\n")

    async def scenario(plane: DataPlane, backend: EchoBackend) -> None:
        backend.sessions[-1].delay_s = 0.3
        calls: list[Signature] = []
        decode = functools.partial(_decode, calls=calls)
        running = asyncio.create_task(plane.infer("echo", None, decode))
        await asyncio.sleep(0.05)  # the first request runs; the second one waits
        waiting = asyncio.create_task(plane.infer("echo", None, decode))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded, match="queue of model 'echo' is full"):
            await plane.infer("echo", None, decode)
        await asyncio.gather(running, waiting)
        assert len(calls) == 2  # the refused request was never decoded
        stats = _stats(plane)
        assert stats["success"]["count"] == 2 and stats["fail"]["count"] == 1
        (counted,) = plane.versions()
        assert counted.stats.failures == {"overloaded": 1}

    _run(repo, scenario)


def test_decode_and_validation_failures_count_for_the_version(repo: Path) -> None:
    _echo_repo(repo)

    async def scenario(plane: DataPlane, backend: EchoBackend) -> None:
        def broken(signature: Signature) -> InferenceRequest:
            raise InvalidArgument("input 'x' is not valid JSON")

        def wrong_output(signature: Signature) -> InferenceRequest:
            request = _decode(signature)
            request.outputs = [RequestedOutput("nope")]
            return request

        with pytest.raises(InvalidArgument, match="not valid JSON"):
            await plane.infer("echo", None, broken)
        with pytest.raises(InvalidArgument, match="has no output 'nope'"):
            await plane.infer("echo", None, wrong_output)
        with pytest.raises(InvalidArgument, match="expects shape"):
            await plane.infer("echo", None, lambda s: InferenceRequest(
                "echo", {"x": np.ones((1, 5), np.float32)}))
        stats = _stats(plane)
        assert stats["fail"]["count"] == 3 and stats["success"]["count"] == 0
        assert plane.versions()[0].stats.failures == {"invalid_argument": 3}

    _run(repo, scenario)


def test_requests_that_reach_no_version_are_counted_with_bounded_labels(repo: Path) -> None:
    _echo_repo(repo)

    async def scenario(plane: DataPlane, backend: EchoBackend) -> None:
        for name, version, error in (("nope", None, NotFound), ("echo", "7", NotFound),
                                     ("x" * 300, None, NotFound)):
            with pytest.raises(error):
                await plane.infer(name, version, _decode)
        assert plane.unresolved_failures == {(UNKNOWN, "not_found"): 2,
                                             ("echo", "not_found"): 1}

    _run(repo, scenario)


def test_drain_refuses_new_requests_and_waits_for_those_in_flight(repo: Path) -> None:
    _echo_repo(repo, config="optimization: {inline_max_us: 0}\n")

    async def scenario(plane: DataPlane, backend: EchoBackend) -> None:
        backend.sessions[-1].delay_s = 0.3
        in_flight = asyncio.create_task(plane.infer("echo", None, _decode))
        await asyncio.sleep(0.05)
        draining = asyncio.create_task(plane.drain(5))
        await asyncio.sleep(0.01)
        assert not plane.ready() and not plane.model_ready("echo")
        with pytest.raises(Unavailable, match="shutting down"):
            await plane.infer("echo", None, _decode)
        assert not draining.done()
        _, response = await in_flight
        assert response.outputs["x_out"].shape == (1, 4)
        assert await draining is True

    _run(repo, scenario)


def test_queries_answer_for_the_selected_version(repo: Path) -> None:
    _echo_repo(repo, versions=(1, 2), config="version_policy: {all: true}\n"
                                             "labels: {canary: 2}\n")
    _echo_repo(repo, name="other")

    async def scenario(plane: DataPlane, backend: EchoBackend) -> None:
        plane.check_model("echo")
        with pytest.raises(NotFound, match="unknown model 'nope'"):
            plane.check_model("nope")
        meta = plane.model_metadata("echo")
        assert (meta.versions, meta.platform) == (("1", "2"), "kiln_echo")
        view = plane.model_config("echo", "canary")
        assert (view.version, view.backend, view.config.backend) == (2, "echo", "echo")
        assert [s.version for s in plane.model_status("echo")] == [1, 2]
        (status,) = plane.model_status("echo", "canary")
        assert (status.version, status.state) == (2, State.READY)
        assert {s["name"] for s in plane.statistics()} == {"echo", "other"}
        assert {s["name"] for s in plane.statistics(models={"other"})} == {"other"}
        assert [(name, s.version) for name, s in plane.model_states()] == [
            ("echo", 1), ("echo", 2), ("other", 1)]

    _run(repo, scenario)
