"""KServe V2 gRPC (``inference.GRPCInferenceService``) through ``grpc.aio`` and the protocol
messages that ship with ``tritonclient[grpc]``. Requests carry ``raw_input_contents`` and are
built once; one HTTP/2 channel multiplexes every concurrent call."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.bench.targets import RemoteSpec
from kiln.errors import (
    InternalError,
    InvalidArgument,
    KilnError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from kiln.serve.codecs.binary import decode_tensor, encode_tensor
from kiln.tensors import DataType, Signature, TensorDict, TensorSpec

_INSTALL = "the gRPC target needs tritonclient[grpc]: pip install 'kiln-ml[bench]'"
#: ``InferTensorContents`` field per datatype, for servers that answer with typed contents.
_CONTENTS = {
    DataType.BOOL: "bool_contents", DataType.INT8: "int_contents",
    DataType.INT16: "int_contents", DataType.INT32: "int_contents",
    DataType.INT64: "int64_contents", DataType.UINT8: "uint_contents",
    DataType.UINT16: "uint_contents", DataType.UINT32: "uint_contents",
    DataType.UINT64: "uint64_contents", DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents", DataType.BYTES: "bytes_contents",
}


def _modules() -> tuple[Any, Any, Any]:
    try:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc
    except ImportError as exc:
        raise Unimplemented(f"{_INSTALL} ({exc})") from None
    return grpc, service_pb2, service_pb2_grpc


class V2GrpcTarget:
    """A model behind a KServe V2 gRPC endpoint (kiln, Triton, MLServer, ...)."""

    protocol = "v2-grpc"
    size_bytes = None

    def __init__(self, spec: RemoteSpec) -> None:
        self._grpc, self._pb, self._stubs = _modules()
        self.address = f"{spec.host}:{spec.port}"
        self.label = f"v2-grpc {self.address}"
        self._model, self._version = spec.model, spec.version or ""
        self._timeout_s = spec.timeout_s
        self._channel: Any = None
        self._stub: Any = None

    async def open(self) -> Signature:
        # NOTE: an aio channel belongs to the event loop it is created on, so it is made here.
        unlimited = [("grpc.max_send_message_length", -1),
                     ("grpc.max_receive_message_length", -1)]
        self._channel = self._grpc.aio.insecure_channel(self.address, options=unlimited)
        self._stub = self._stubs.GRPCInferenceServiceStub(self._channel)
        request = self._pb.ModelMetadataRequest(name=self._model, version=self._version)
        try:
            meta = await self._stub.ModelMetadata(request, timeout=self._timeout_s)
        except self._grpc.aio.AioRpcError as exc:
            raise self._error(exc, f"model '{self._model}' metadata") from None
        return Signature(inputs=tuple(_spec(t) for t in meta.inputs),
                         outputs=tuple(_spec(t) for t in meta.outputs))

    def encode(self, inputs: TensorDict) -> Any:
        request = self._pb.ModelInferRequest(model_name=self._model,
                                             model_version=self._version)
        for name, array in inputs.items():
            datatype = DataType.from_numpy(array.dtype)
            request.inputs.add(name=name, datatype=datatype.v2, shape=array.shape)
            request.raw_input_contents.append(encode_tensor(array, datatype))
        return request

    async def call(self, request: Any) -> Any:
        try:
            return await self._stub.ModelInfer(request, timeout=self._timeout_s)
        except self._grpc.aio.AioRpcError as exc:
            raise self._error(exc, f"model '{self._model}'") from None

    def decode(self, reply: Any) -> TensorDict:
        outputs = {}
        for index, tensor in enumerate(reply.outputs):
            datatype, shape = DataType.from_v2(tensor.datatype), tuple(tensor.shape)
            count = int(np.prod(shape))
            if index < len(reply.raw_output_contents):
                outputs[tensor.name] = decode_tensor(reply.raw_output_contents[index], datatype,
                                                     shape, count, what=tensor.name)
            else:
                values = list(getattr(tensor.contents, _CONTENTS[datatype]))
                dtype = object if datatype is DataType.BYTES else datatype.numpy
                outputs[tensor.name] = np.array(values, dtype=dtype).reshape(shape)
        return outputs

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def _error(self, exc: Any, what: str) -> KilnError | TimeoutError:
        code = self._grpc.StatusCode
        if exc.code() == code.DEADLINE_EXCEEDED:
            return TimeoutError(f"{what}: no answer within {self._timeout_s} s")
        kinds: dict[Any, type[KilnError]] = {
            code.INVALID_ARGUMENT: InvalidArgument, code.NOT_FOUND: NotFound,
            code.UNAVAILABLE: Unavailable, code.RESOURCE_EXHAUSTED: ResourceExhausted,
            code.UNAUTHENTICATED: Unauthenticated, code.PERMISSION_DENIED: PermissionDenied,
            code.UNIMPLEMENTED: Unimplemented,
        }
        kind = kinds.get(exc.code(), InternalError)
        return kind(f"{what}: gRPC {exc.code().name}: {exc.details()}")


def _spec(meta: Any) -> TensorSpec:
    return TensorSpec(meta.name, DataType.from_v2(meta.datatype), tuple(int(d) for d in meta.shape))
