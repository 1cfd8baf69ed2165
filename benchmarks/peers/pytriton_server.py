"""Serve one ONNX model through PyTriton (a real Triton Inference Server) for the benchmark.

Runs in the peers' own virtualenv (``bash benchmarks/peers/setup.sh``), never in kiln's:

    LD_LIBRARY_PATH=$(python3 -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))") \\
    benchmarks/peers/.venv/bin/python benchmarks/peers/pytriton_server.py MODEL.onnx \\
        --name tiny --http-port 8000 --grpc-port 8001 --metrics-port 8002 \\
        --workspace /tmp/pytriton-workspace

``LD_LIBRARY_PATH`` puts the interpreter's own libpython first: PyTriton's Python-backend
stub links libpython3.x.so and may otherwise load the system's next to pyenv's stdlib.

Triton answers KServe V2 over HTTP (JSON and binary tensors) and gRPC; PyTriton's Python
backend hands each batch to ``infer`` in this process, which runs ONNX Runtime with the same
settings as kiln and the in-process limit: ``--intra-op-threads`` (1 for the small models),
inter-op 1, sequential execution, all graph optimisations, CPU only.

Dynamic batching: max batch 32 and 1 ms max queue delay, the setting of the published peer
measurements (shared serving-performance findings), where PyTriton without a batcher stalled
at about 500 inf/s on the tiny MLP from c = 8 on; 1 ms is short next to PyTriton's own 2-4 ms
per request at c = 1, and 32 covers most of the connections in flight. The other Triton
settings (HTTP threads, gRPC pools, metrics) stay as shipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
from ort_session import session
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

MAX_BATCH = 32
MAX_QUEUE_DELAY_US = 1000

#: ONNX Runtime's element type names to numpy, for the tensors the benchmark models use.
ORT_TYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def tensors(args: list[ort.NodeArg]) -> list[Tensor]:
    """Triton tensor specs from ONNX ones, without the batch dimension. Triton needs at least
    one dimension besides the batch: a tensor of shape [batch] is served as [batch, 1]."""
    return [Tensor(name=a.name, dtype=ORT_TYPES[a.type],
                   shape=tuple(d if isinstance(d, int) else -1 for d in a.shape[1:]) or (1,))
            for a in args]


def serve(args: argparse.Namespace) -> None:
    model = session(args.model, args.intra_op_threads)
    outputs = [o.name for o in model.get_outputs()]

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        results = model.run(outputs, inputs)
        return {name: r.reshape(len(r), -1) if r.ndim == 1 else r
                for name, r in zip(outputs, results, strict=True)}

    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port,
                          grpc_address="127.0.0.1", grpc_port=args.grpc_port,
                          metrics_address="127.0.0.1", metrics_port=args.metrics_port)
    # NOTE: 0.7.0 puts statistics and model config behind a generated access token; the
    # benchmark reads neither, but a client such as perf_analyzer needs them open.
    security = TritonSecurityConfig(restricted_endpoints=[])
    with Triton(config=config, workspace=args.workspace, security_config=security) as triton:
        triton.bind(model_name=args.name, infer_func=infer,
                    inputs=tensors(model.get_inputs()), outputs=tensors(model.get_outputs()),
                    config=ModelConfig(max_batch_size=MAX_BATCH, batcher=DynamicBatcher(
                        max_queue_delay_microseconds=MAX_QUEUE_DELAY_US)))
        triton.serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the ONNX file")
    parser.add_argument("--name", required=True, help="the model name in the V2 URLs")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--intra-op-threads", type=int, default=1)
    # NOTE: PyTriton's default workspace is under ~/.cache/pytriton; the benchmark gives a
    # path under its own temporary folder (PyTriton creates it, so it must not exist yet).
    parser.add_argument("--workspace", type=Path, required=True,
                        help="a folder for Triton's model store and sockets, not existing yet")
    serve(parser.parse_args())


if __name__ == "__main__":
    main()
