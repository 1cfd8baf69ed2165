"""Where a loaded model runs: inline on the event loop only when its largest batch is cheap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kiln.serve.model import ModelVersion
from kiln.serve.repository import ModelRepository
from tests.models import mlp_model, save


@pytest.mark.parametrize(("config", "inline"), [
    ("max_batch_size: 4\n", True),
    ("max_batch_size: 4\noptimization: {inline_max_us: 0}\n", False),
    # A 2048-wide MLP at batch 64 takes milliseconds: never on the event loop.
    (None, False),
])
def test_inline_only_below_the_threshold(repo: Path, config: str | None, inline: bool) -> None:
    model = mlp_model((8, 16, 4)) if config else mlp_model((512, 2048, 2048, 10))
    save(model, repo, "m", config=config or "optimization: {intra_op_threads: 1}\n")
    version = ModelVersion.load(ModelRepository([repo]).find("m"), 1)
    try:
        assert version.batcher.policy.inline is inline
    finally:
        asyncio.run(version.close())
