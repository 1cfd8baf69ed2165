"""KServe V2 over gRPC (``inference.GRPCInferenceService``, as Triton and kiln serve it)
through ``grpc.aio``. Requests carry ``raw_input_contents`` and are serialized once; the load
loop sends those bytes and does not parse the answers. One HTTP/2 channel multiplexes every
concurrent call."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from kiln.bench.targets import RemoteError, RemoteSpec
from kiln.errors import ErrorKind
from kiln.proto import grpc_service_pb2 as pb
from kiln.serve.codecs.binary import decode_tensor, encode_tensor
from kiln.serve.codecs.v2_grpc import CONTENTS
from kiln.tensors import DataType, Signature, TensorDict, TensorSpec

_SERVICE = "/inference.GRPCInferenceService/"
#: gRPC status -> the error kind the report counts (others: internal).
_STATUS_KINDS: dict[grpc.StatusCode, ErrorKind] = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorKind.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: ErrorKind.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE: ErrorKind.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorKind.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED: ErrorKind.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: ErrorKind.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED: ErrorKind.UNIMPLEMENTED,
}


class V2GrpcTarget:
    """A model behind a KServe V2 gRPC endpoint (kiln, Triton, MLServer, ...)."""

    protocol = "v2-grpc"
    size_bytes = None

    def __init__(self, spec: RemoteSpec) -> None:
        self.address = f"{spec.host}:{spec.port}"
        self.label = f"v2-grpc {self.address}"
        self._model, self._version = spec.model, spec.version or ""
        self._timeout_s = spec.timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._infer: Any = None

    async def open(self) -> Signature:
        # NOTE: an aio channel belongs to the event loop it is made on, so it is made here.
        self._channel = grpc.aio.insecure_channel(self.address, options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
        self._infer = self._channel.unary_unary(_SERVICE + "ModelInfer")
        metadata = self._channel.unary_unary(
            _SERVICE + "ModelMetadata",
            request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString)
        request = pb.ModelMetadataRequest(name=self._model, version=self._version)
        try:
            meta = await metadata(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, f"model '{self._model}' metadata") from None
        return Signature(inputs=tuple(_spec(t) for t in meta.inputs),
                         outputs=tuple(_spec(t) for t in meta.outputs))

    def encode(self, inputs: TensorDict) -> bytes:
        request = pb.ModelInferRequest(model_name=self._model, model_version=self._version)
        for name, array in inputs.items():
            datatype = DataType.from_numpy(array.dtype)
            request.inputs.add(name=name, datatype=datatype.v2, shape=array.shape)
            request.raw_input_contents.append(encode_tensor(array, datatype))
        return request.SerializeToString()

    async def call(self, request: bytes) -> bytes:
        try:
            reply: bytes = await self._infer(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, f"model '{self._model}'") from None
        return reply

    def decode(self, reply: bytes) -> TensorDict:
        response = pb.ModelInferResponse.FromString(reply)
        outputs = {}
        for index, tensor in enumerate(response.outputs):
            datatype, shape = DataType.from_v2(tensor.datatype), tuple(tensor.shape)
            if index < len(response.raw_output_contents):
                outputs[tensor.name] = decode_tensor(
                    response.raw_output_contents[index], datatype, shape,
                    int(np.prod(shape)), what=tensor.name)
            else:  # typed contents
                values = list(getattr(tensor.contents, CONTENTS[datatype][0]))
                dtype = object if datatype is DataType.BYTES else datatype.numpy
                outputs[tensor.name] = np.array(values, dtype=dtype).reshape(shape)
        return outputs

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def _error(self, exc: grpc.aio.AioRpcError, what: str) -> RemoteError | TimeoutError:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return TimeoutError(f"{what}: no answer within {self._timeout_s} s")
        return RemoteError(_STATUS_KINDS.get(exc.code(), ErrorKind.INTERNAL),
                           f"{what}: gRPC {exc.code().name}: {exc.details()}")


def _spec(meta: Any) -> TensorSpec:
    return TensorSpec(meta.name, DataType.from_v2(meta.datatype),
                      tuple(int(d) for d in meta.shape))
