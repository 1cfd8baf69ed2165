"""The ONNX Runtime session every benchmark point uses: in-process, kiln's peers, and the
settings kiln's own model config gives (``optimization: {intra_op_threads: N}``).

Plain numpy and onnxruntime only: the peers import it in their own virtualenv and
TorchServe's worker from the model archive.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def session(path: Path | str, intra_op_threads: int, *,
            spinning: bool = True) -> ort.InferenceSession:
    """``intra_op_threads`` threads, inter-op 1, sequential, all graph optimisations, CPU;
    ``spinning``: idle intra-op threads spin (ONNX Runtime's default; kiln turns it off)."""
    options = ort.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
