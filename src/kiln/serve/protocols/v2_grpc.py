"""KServe V2 over gRPC: Triton's ``inference.GRPCInferenceService`` on the data plane.

The messages are kiln's own (``kiln.proto``); the service is registered under Triton's wire
name so ``tritonclient.grpc`` and other Open Inference Protocol clients work unchanged.
Every handler decodes, calls the data plane, encodes; failures become gRPC status codes
through ``GRPC_STATUS``, the one table for this transport::

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([V2GrpcService(plane, limits).handler()])
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format

from kiln.errors import ErrorKind, InvalidArgument, KilnError, Unimplemented
from kiln.proto import grpc_service_pb2 as pb
from kiln.repository.pbtxt import config_to_proto
from kiln.serve.codecs import v2_grpc
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.core.control import ModelControl
from kiln.serve.core.dataplane import DataPlane
from kiln.serve.messages import InferenceRequest
from kiln.serve.observability.requestlog import (
    RequestIds,
    RequestObserver,
    RequestRecord,
    usable_id,
)
from kiln.tensors import Signature

log = logging.getLogger("kiln.serve.grpc")

#: The wire name of the service (Triton's), whatever kiln's Python names are.
SERVICE = "inference.GRPCInferenceService"

#: The one table mapping error kinds to gRPC status codes.
GRPC_STATUS: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorKind.UNIMPLEMENTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.OVERLOADED: grpc.StatusCode.UNAVAILABLE,
}

#: Triton methods kiln does not offer (yet), with what the caller can do instead.
UNIMPLEMENTED: dict[str, str] = {
    **dict.fromkeys(
        ("SystemSharedMemoryStatus", "SystemSharedMemoryRegister",
         "SystemSharedMemoryUnregister", "CudaSharedMemoryStatus", "CudaSharedMemoryRegister",
         "CudaSharedMemoryUnregister"),
        "kiln does not support shared-memory tensors; send tensors in raw_input_contents"),
    "TraceSetting": "kiln does not offer the trace extension",
    "LogSettings": "kiln offers the logging extension over HTTP only: GET|POST /v2/logging",
}

#: Requests of one ModelStreamInfer stream in flight at once; the stream stops reading
#: (gRPC flow control pushes back on the client) while this many are unanswered.
STREAM_IN_FLIGHT = 64

Handler = Callable[[Any], Awaitable[Any]]


class V2GrpcService:
    """The V2 gRPC methods over one data plane; ``handler()`` registers them with a server."""

    def __init__(self, plane: DataPlane, limits: DecodeLimits, *,
                 control: ModelControl | None = None,
                 observer: RequestObserver | None = None) -> None:
        self.plane = plane
        self.limits = limits
        self.control = control
        self.observer = observer or RequestObserver()
        self.ids = RequestIds()

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler for ``grpc.aio.Server.add_generic_rpc_handlers``."""
        typed: dict[str, tuple[Handler, type[Any]]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest),
            "ModelConfig": (self.model_config, pb.ModelConfigRequest),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest),
            "ModelStatistics": (self.model_statistics, pb.ModelStatisticsRequest),
            "RepositoryIndex": (self.repository_index, pb.RepositoryIndexRequest),
            "RepositoryModelLoad": (self.repository_load, pb.RepositoryModelLoadRequest),
            "RepositoryModelUnload": (self.repository_unload, pb.RepositoryModelUnloadRequest),
        }
        methods = {name: _unary(name, method, _lenient(request_type))
                   for name, (method, request_type) in typed.items()}
        for name, message in UNIMPLEMENTED.items():
            methods[name] = _unary(name, _refuse(f"{name}: {message}"), None)
        methods["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer, request_deserializer=_lenient(pb.ModelInferRequest),
            response_serializer=_serialize)
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    async def server_live(self, request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.plane.live())

    async def server_ready(self, request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready())

    async def model_ready(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        # Like Triton: an unknown model is simply not ready.
        return pb.ModelReadyResponse(
            ready=self.plane.model_ready(request.name, request.version or None))

    async def server_metadata(self, request: pb.ServerMetadataRequest
                              ) -> pb.ServerMetadataResponse:
        return v2_grpc.encode_server_metadata(self.plane.server_metadata())

    async def model_metadata(self, request: pb.ModelMetadataRequest
                             ) -> pb.ModelMetadataResponse:
        meta = self.plane.model_metadata(request.name, request.version or None)
        return v2_grpc.encode_model_metadata(meta)

    async def model_config(self, request: pb.ModelConfigRequest) -> pb.ModelConfigResponse:
        view = self.plane.model_config(request.name, request.version or None)
        return pb.ModelConfigResponse(config=config_to_proto(
            view.name, view.platform, view.backend, view.config, view.signature))

    async def model_statistics(self, request: pb.ModelStatisticsRequest
                               ) -> pb.ModelStatisticsResponse:
        stats = self.plane.statistics(request.name or None, request.version or None)
        return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())

    def _control(self) -> ModelControl:
        if self.control is None:
            raise Unimplemented("this server was built without model control")
        return self.control

    async def repository_index(self, request: pb.RepositoryIndexRequest
                               ) -> pb.RepositoryIndexResponse:
        rows = await self._control().index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=[
            pb.RepositoryIndexResponse.ModelIndex(name=r.name, version=r.version, state=r.state,
                                                  reason=r.reason) for r in rows])

    async def repository_load(self, request: pb.RepositoryModelLoadRequest
                              ) -> pb.RepositoryModelLoadResponse:
        await self._control().load(request.model_name,
                                   _repository_parameters(request.parameters))
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(self, request: pb.RepositoryModelUnloadRequest
                                ) -> pb.RepositoryModelUnloadResponse:
        await self._control().unload(request.model_name,
                                     _repository_parameters(request.parameters))
        return pb.RepositoryModelUnloadResponse()

    async def model_infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        record = self.observer.begin()
        try:
            response = await self._infer(request, record)
        except Exception as exc:
            code = GRPC_STATUS[exc.kind] \
                if isinstance(exc, KilnError) else grpc.StatusCode.INTERNAL
            self.observer.finish(record, request_id=self._id(request), protocol="grpc",
                                 method="ModelInfer", status=code.name, error=exc)
            raise
        if record is not None:
            self.observer.finish(record, request_id=self._id(request), protocol="grpc",
                                 method="ModelInfer", status="OK")
        return response

    async def _infer(self, request: pb.ModelInferRequest,
                     record: RequestRecord | None) -> pb.ModelInferResponse:
        name, version = request.model_name, request.model_version or None
        if not name:
            raise InvalidArgument("field 'model_name' is required")
        decode = functools.partial(_decode, message=request, limits=self.limits)
        if record is None:
            _, response = await self.plane.infer(name, version, decode)
        else:
            record.model = name
            _, response = await self.plane.infer(name, version, decode, timing=record.timing)
            record.version, record.encoding = response.model_version, time.monotonic_ns()
        return v2_grpc.encode_infer_response(response, raw=bool(request.raw_input_contents))

    def _id(self, request: pb.ModelInferRequest) -> str:
        return usable_id(request.id) or self.ids.new()

    async def model_stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Answer each request of the stream as it completes (several run at once); a failed
        request is answered with ``error_message`` and the stream stays open (as Triton)."""
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_IN_FLIGHT)

        async def answer(request: pb.ModelInferRequest) -> None:
            try:
                answers.put_nowait(await self._stream_answer(request))
            finally:
                slots.release()

        async def read() -> None:
            async with asyncio.TaskGroup() as group:
                async for request in requests:
                    await slots.acquire()
                    group.create_task(answer(request))

        reader = asyncio.create_task(read())
        reader.add_done_callback(lambda _: answers.put_nowait(None))
        try:
            while (item := await answers.get()) is not None:
                yield item
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader  # re-raises a failure to read the stream

    async def _stream_answer(self, request: pb.ModelInferRequest
                             ) -> pb.ModelStreamInferResponse:
        if isinstance(request, MalformedRequest):
            return pb.ModelStreamInferResponse(error_message=request.message)
        try:
            return pb.ModelStreamInferResponse(infer_response=await self.model_infer(request))
        except Exception as exc:
            _, message = grpc_status(exc, "ModelStreamInfer")
            echo = pb.ModelInferResponse(model_name=request.model_name,
                                         model_version=request.model_version, id=request.id)
            return pb.ModelStreamInferResponse(error_message=message, infer_response=echo)


def _decode(signature: Signature, *, message: pb.ModelInferRequest,
            limits: DecodeLimits) -> InferenceRequest:
    return v2_grpc.decode_infer_request(message, limits=limits)


def grpc_status(exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """The status code and message reporting ``exc``; internal faults are logged with an id."""
    if isinstance(exc, KilnError) and exc.kind is not ErrorKind.INTERNAL:
        return GRPC_STATUS[exc.kind], exc.message
    request_id = uuid.uuid4().hex[:16]
    log.error("internal error in %s (request id %s): %s", method, request_id, exc, exc_info=exc)
    message = exc.message if isinstance(exc, KilnError) else "internal error"
    return grpc.StatusCode.INTERNAL, f"{message} (request id {request_id})"


def _unary(name: str, method: Handler,
           deserialize: Callable[[bytes], Any] | None) -> grpc.RpcMethodHandler:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if isinstance(request, MalformedRequest):
                raise InvalidArgument(request.message)
            return await method(request)
        except Exception as exc:
            code, message = grpc_status(exc, name)
            if isinstance(exc, KilnError) and exc.retry_after_s is not None:
                context.set_trailing_metadata(
                    (("retry-after", str(max(1, round(exc.retry_after_s)))),))
            await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=deserialize, response_serializer=_serialize)


def _repository_parameters(parameters: Any) -> dict[str, Any]:
    """A load/unload request's parameters map as plain values."""
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, choice) if choice else None
    return values


class MalformedRequest:
    """Stands for request bytes that do not parse, so the handler (not gRPC, which would say
    UNKNOWN and log a traceback) answers INVALID_ARGUMENT."""

    def __init__(self, message: str) -> None:
        self.message = message


def _lenient(message_type: Any) -> Callable[[bytes], Any]:
    name = message_type.DESCRIPTOR.name

    def deserialize(raw: bytes) -> Any:
        try:
            return message_type.FromString(raw)
        except Exception:  # protobuf's DecodeError, or RecursionError on deep nesting
            return MalformedRequest(f"the request is not a valid {name} protobuf message")

    return deserialize


def _refuse(message: str) -> Handler:
    async def refuse(request: bytes) -> None:
        raise Unimplemented(message)

    return refuse


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data
