"""The models the serving benchmarks run, each with its kiln config and in-process settings."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tests.models import mlp_model, save

from kiln.serve.settings import bundled_repository
from kiln.tensors import TensorDict

#: Exported models kept between benchmark runs (git-ignored).
CACHE = Path(__file__).resolve().parent / ".cache"


@dataclass
class BenchModel:
    name: str
    #: Writes the model (and its config) into a repository folder.
    build: Callable[[Path], None]
    #: Inputs of a request with ``batch`` rows.
    inputs: Callable[[int], TensorDict]
    #: ONNX Runtime intra-op threads, the same in-process and in kiln.
    intra_op_threads: int = 1
    #: Tiny models measure the serving path: server and generator get a core each.
    overhead_dominated: bool = True
    path: Path = field(default=Path())


def _tiny() -> BenchModel:
    model = BenchModel("tiny", lambda repo: None, lambda b: {
        "input": np.random.default_rng(0).standard_normal((b, 64)).astype(np.float32)})

    def build(repo: Path) -> None:
        model.path = save(mlp_model(), repo, "tiny",
                          config="optimization: {intra_op_threads: 1}\n")

    model.build = build
    return model


def _digits() -> BenchModel:
    from kiln.examples.digits import INPUT

    model = BenchModel("digits", lambda repo: None, lambda b: {
        INPUT: np.random.default_rng(0).random((b, 64)).astype(np.float32)})

    def build(repo: Path) -> None:
        folder = repo / "digits" / "1"
        folder.mkdir(parents=True)
        model.path = folder / "model.onnx"
        shutil.copy(bundled_repository() / "digits" / "1" / "model.onnx", model.path)
        (repo / "digits" / "config.yaml").write_text("optimization: {intra_op_threads: 1}\n")

    model.build = build
    return model


def _minilm() -> BenchModel:
    """MiniLM-L6 sentence embeddings at sequence length 128 (needs kiln-ml[torch])."""
    from kiln.convert.minilm import export_minilm

    seq = 128

    def inputs(batch: int) -> TensorDict:
        ids = np.random.default_rng(0).integers(1000, 20000, (batch, seq), dtype=np.int64)
        return {"input_ids": ids, "attention_mask": np.ones((batch, seq), np.int64),
                "token_type_ids": np.zeros((batch, seq), np.int64)}

    model = BenchModel("minilm", lambda repo: None, inputs, intra_op_threads=2,
                       overhead_dominated=False)

    def build(repo: Path) -> None:
        cached = CACHE / "minilm" / "1" / "model.onnx"
        if not cached.exists():  # the export takes a minute: keep it between runs
            export_minilm(CACHE)
        folder = repo / "minilm" / "1"
        folder.mkdir(parents=True)
        model.path = folder / "model.onnx"
        shutil.copy(cached, model.path)
        (repo / "minilm" / "config.yaml").write_text(
            "optimization: {intra_op_threads: 2}\nmax_batch_size: 16\n")

    model.build = build
    return model


MODELS: dict[str, Callable[[], BenchModel]] = {"tiny": _tiny, "digits": _digits,
                                               "minilm": _minilm}
