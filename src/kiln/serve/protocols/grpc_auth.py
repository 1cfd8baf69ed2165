"""Access control for gRPC: a server interceptor in front of every method.

``GRPC_METHODS`` gives each method its API group (the same groups, and so the same scopes,
as the HTTP routes: ``kiln.serve.security.auth.GROUP_SCOPES``) and the request field naming the
model, if any. A method missing from the table is refused when access control is on::

    server = grpc.aio.server(interceptors=[AccessInterceptor(access)])

The key and scope are checked before the request message is even parsed; the model a key
may use is checked on the parsed message (for a stream: on each message; the first one
naming a model the key may not use ends the stream with PERMISSION_DENIED).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from kiln.errors import KilnError
from kiln.serve.protocols.v2_grpc import GRPC_STATUS, SERVICE
from kiln.serve.security.auth import AccessControl, check_model
from kiln.serve.security.keys import KeyRecord

_V2 = {
    "ServerLive": ("health", None), "ServerReady": ("health", None),
    "ModelReady": ("health", "name"),
    "ServerMetadata": ("metadata", None), "ModelMetadata": ("metadata", "name"),
    "ModelConfig": ("metadata", "name"),
    "ModelInfer": ("infer", "model_name"), "ModelStreamInfer": ("infer", "model_name"),
    "ModelStatistics": ("statistics", "name"),
    "RepositoryIndex": ("repository", None),
    "RepositoryModelLoad": ("repository", "model_name"),
    "RepositoryModelUnload": ("repository", "model_name"),
    "LogSettings": ("logging", None),
    "TraceSetting": ("trace", "model_name"),
    **dict.fromkeys(
        ("SystemSharedMemoryStatus", "SystemSharedMemoryRegister",
         "SystemSharedMemoryUnregister", "CudaSharedMemoryStatus", "CudaSharedMemoryRegister",
         "CudaSharedMemoryUnregister"), ("shared_memory", None)),
}

#: Full method path -> (API group, request field naming the model or ``None``).
GRPC_METHODS: dict[str, tuple[str, str | None]] = {
    f"/{SERVICE}/{name}": entry for name, entry in _V2.items()
}


class AccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Checks the ``authorization`` metadata (``Bearer <key>``) of every call."""

    def __init__(self, access: AccessControl) -> None:
        self.access = access

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None  # gRPC answers UNIMPLEMENTED
        entry = GRPC_METHODS.get(details.method)
        if entry is None:
            return _deny(handler, grpc.StatusCode.PERMISSION_DENIED,
                         f"method {details.method} has no access rule")
        group, field = entry
        authorization = next((value for key, value in details.invocation_metadata or ()
                              if key == "authorization"), None)
        try:
            record = self.access.authorize(group, authorization)
        except KilnError as exc:
            return _deny(handler, GRPC_STATUS[exc.kind], exc.message)
        if record is None or field is None or record.models is None:
            return handler
        return _checking_model(handler, record, field)


def _deny(handler: grpc.RpcMethodHandler, code: grpc.StatusCode,
          message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that refuses without parsing the request."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


def _checking_model(handler: grpc.RpcMethodHandler, record: KeyRecord,
                    field: str) -> grpc.RpcMethodHandler:
    codecs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            _checked_stream(handler.stream_stream, record, field), **codecs)
    if handler.request_streaming or handler.response_streaming:
        raise KilnError(f"no per-model check for a one-way streaming method ('{field}')")

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            _check(record, request, field)
        except KilnError as exc:
            await context.abort(GRPC_STATUS[exc.kind], exc.message)
        return await handler.unary_unary(request, context)

    return grpc.unary_unary_rpc_method_handler(unary, **codecs)


def _checked_stream(method: Callable[..., AsyncIterator[Any]], record: KeyRecord,
                    field: str) -> Callable[..., AsyncIterator[Any]]:
    async def stream(requests: AsyncIterator[Any],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        denied: list[KilnError] = []

        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                try:
                    _check(record, request, field)
                except KilnError as exc:
                    denied.append(exc)
                    return
                yield request

        async for response in method(checked(), context):
            yield response
        if denied:
            await context.abort(GRPC_STATUS[denied[0].kind], denied[0].message)

    return stream


def _check(record: KeyRecord, request: Any, field: str) -> None:
    model = getattr(request, field, "")  # absent when the request bytes did not parse
    if model:  # an empty name means "no model" (e.g. statistics of every model)
        check_model(record, model)
