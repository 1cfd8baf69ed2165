"""Looking inside a model while it runs: any intermediate tensor exposed as an extra output.

SmoothQuant needs the activations that enter each MatMul; the accuracy-aware search needs
every quantized node's output in the FP32 and the quantized model, to rank the nodes by the
error they add.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.tensors import TensorDict

if TYPE_CHECKING:
    import onnx


def exposing(model: onnx.ModelProto, names: Sequence[str]) -> bytes:
    """``model`` serialized with ``names`` added to its outputs (types left to the runtime)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))
    return bytes(copy.SerializeToString())


def session(model: bytes | str, *, threads: int = 1) -> Any:
    """A plain ONNX Runtime session (intra-op ``threads``, no spinning) for measuring."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def collect(model: onnx.ModelProto, names: Sequence[str],
            samples: Iterable[TensorDict]) -> dict[str, list[np.ndarray]]:
    """Run ``model`` on each sample; each of the tensors ``names`` maps to its values, one
    per sample."""
    gathered: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for values in _runs(model, names, samples):
        for name, value in values.items():
            gathered[name].append(value)
    return gathered


def fold(model: onnx.ModelProto, names: Sequence[str], samples: Iterable[TensorDict], *,
         reduce: Callable[[np.ndarray], np.ndarray],
         combine: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` on each sample; each of the tensors ``names`` maps to its values reduced
    and folded over the samples (e.g. a running max)."""
    folded: dict[str, np.ndarray] = {}
    for values in _runs(model, names, samples):
        for name, value in values.items():
            reduced = reduce(value)
            previous = folded.get(name)
            folded[name] = reduced if previous is None else combine(previous, reduced)
    return folded


def _runs(model: onnx.ModelProto, names: Sequence[str],
          samples: Iterable[TensorDict]) -> Iterator[TensorDict]:
    runner = session(exposing(model, names))
    feeds = {i.name for i in runner.get_inputs()}
    for sample in samples:
        values = runner.run(list(names), {k: v for k, v in sample.items() if k in feeds})
        yield dict(zip(names, values, strict=True))
