"""Closed-loop KServe V2 gRPC load (raw tensors) from one process; prints JSON results.

    python benchmarks/grpc_load.py ADDRESS MODEL INPUTS.npz CONCURRENCY SECONDS
"""

from __future__ import annotations

import asyncio
import sys
import time

import grpc
import numpy as np
import orjson

from kiln.proto import grpc_service_pb2 as pb
from kiln.serve.codecs.binary import encode_tensor
from kiln.tensors import DataType

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def request(model: str, path: str) -> bytes:
    message = pb.ModelInferRequest(model_name=model)
    with np.load(path) as arrays:
        for name in arrays.files:
            value = arrays[name]
            datatype = DataType.from_numpy(value.dtype)
            message.inputs.add(name=name, datatype=datatype.v2, shape=list(value.shape))
            message.raw_input_contents.append(encode_tensor(value, datatype))
    return message.SerializeToString()


async def main(address: str, model: str, path: str, concurrency: int, seconds: float) -> None:
    body = request(model, path)
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(METHOD, request_serializer=None,
                                   response_deserializer=None)
        await call(body)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while (start := time.perf_counter()) < deadline:
                try:
                    await call(body)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1e3
    print(orjson.dumps({"requests": len(latencies) - errors, "seconds": elapsed,
                        "errors": errors, "p50_ms": float(np.percentile(ms, 50)),
                        "p99_ms": float(np.percentile(ms, 99))}).decode())


if __name__ == "__main__":
    address, model, path, concurrency, seconds = sys.argv[1:6]
    asyncio.run(main(address, model, path, int(concurrency), float(seconds)))
