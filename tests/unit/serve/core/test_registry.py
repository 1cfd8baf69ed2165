"""The registry on real model files: version policy, labels, failed loads and reloads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from kiln.errors import NotFound, Unavailable
from kiln.repository import ModelRepository
from kiln.runtime import BackendTable
from kiln.serve.core.registry import ModelRegistry
from kiln.serve.messages import State
from tests.lifecycle import publish
from tests.models import offset_model

X = np.ones((1, 4), np.float32)


def _registry(repo: Path, **kwargs: bool) -> ModelRegistry:
    return ModelRegistry(ModelRepository([repo]), BackendTable(), **kwargs)


def _offset(registry: ModelRegistry, version: str | None = None) -> float:
    model = registry.get("offset", version)
    return float(model.session.run({"x": X})["y"][0, 0]) - 1.0


def test_latest_two_with_labels(repo: Path) -> None:
    for version in (1, 2, 3):
        publish(repo, "offset", version, offset_model(float(version)))
    (repo / "offset" / "config.yaml").write_text(
        "version_policy: {latest: 2}\nlabels: {stable: 2, old: 1}\n")

    async def scenario() -> None:
        registry = _registry(repo)
        assert await registry.load("offset") == []
        assert registry.entry("offset").ready_versions() == [2, 3]
        assert _offset(registry) == 3.0 and _offset(registry, "stable") == 2.0
        with pytest.raises(NotFound, match="no version 1"):
            registry.get("offset", "old")
        with pytest.raises(NotFound, match="no version or label '١'"):
            registry.get("offset", "١")  # an Arabic-Indic digit is not a version number
        await registry.close()

    asyncio.run(scenario())


def test_a_failed_reload_keeps_the_earlier_load_serving(repo: Path) -> None:
    publish(repo, "offset", 1, offset_model(1.0))

    async def scenario() -> None:
        registry = _registry(repo)
        await registry.load("offset")
        (repo / "offset" / "config.yaml").write_text(
            "max_batch_size: 8\ninputs: [{name: nope, datatype: FP32, dims: [4]}]\n")
        failures = await registry.load("offset")
        assert len(failures) == 1 and failures[0].startswith("version 1: ")
        status = registry.entry("offset").status[1]
        assert status.state is State.READY and status.reason.startswith("reload failed")
        assert _offset(registry) == 1.0
        assert registry.all_ready()
        await registry.close()

    asyncio.run(scenario())


def test_unpublished_versions_wait_where_a_marker_is_required(repo: Path) -> None:
    publish(repo, "offset", 1, offset_model(1.0))
    (repo / "offset" / "2").mkdir()
    (repo / "offset" / "2" / "model.onnx").write_bytes(offset_model(2.0).SerializeToString())

    async def scenario() -> None:
        strict, loose = _registry(repo, require_marker=True), _registry(repo)
        await strict.load("offset")
        await loose.load("offset")
        assert _offset(strict) == 1.0 and _offset(loose) == 2.0
        waiting = strict.entry("offset").status[2]
        assert waiting.state is State.UNAVAILABLE and "not published" in waiting.reason
        with pytest.raises(Unavailable, match="version 2 is UNAVAILABLE: 2: not published"):
            strict.get("offset", "2")
        await strict.close()
        await loose.close()

    asyncio.run(scenario())
