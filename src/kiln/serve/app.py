"""The composition root: the one place that wires concrete classes into a running server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
import uvicorn

from kiln.errors import KilnError
from kiln.serve.auth import AccessControl, check_exposure
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.dataplane import DataPlane
from kiln.serve.protocols.grpc_auth import AccessInterceptor
from kiln.serve.protocols.http_app import HttpApp
from kiln.serve.protocols.http_limits import limited_protocol
from kiln.serve.protocols.tfserving_http import tfserving_routes
from kiln.serve.protocols.v2_grpc import V2GrpcService
from kiln.serve.protocols.v2_http import v2_routes
from kiln.serve.registry import ModelRegistry
from kiln.serve.repository import ModelRepository
from kiln.serve.repository.artifacts import ArtifactPolicy
from kiln.serve.repository.model_keys import KeyRing
from kiln.serve.settings import ServerSettings
from kiln.serve.tls import TlsFiles

log = logging.getLogger("kiln.serve")


@dataclass(frozen=True, slots=True)
class BoundAddress:
    protocol: str
    host: str
    port: int


class KilnServer:
    """A running kiln server: ``await start()``, then ``await stop()``.

        server = KilnServer(ServerSettings.build(model_repository=[path], http_port=0))
        await server.start()
        ...
        await server.stop()
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = s = settings
        self.access = AccessControl(s.keys_file) if s.keys_file is not None else None
        check_exposure([(name, host, port) for name, on, host, port in (
            ("HTTP", s.allow_http, s.http_address, s.http_port),
            ("gRPC", s.allow_grpc, s.grpc_address, s.grpc_port),
            ("metrics", s.allow_metrics, s.metrics_address, s.metrics_port)) if on],
            auth=self.access is not None, insecure=s.insecure)
        self.tls = TlsFiles.from_settings(s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file)
        self._ssl = self.tls.ssl_context() if self.tls else None  # bad TLS files fail here
        keys = KeyRing.load(s.model_key_file,
                            s.model_key.get_secret_value() if s.model_key else None)
        self.repository = ModelRepository(s.model_repository, policy=ArtifactPolicy(
            keys=keys, require_manifest=s.require_manifest))
        self.registry = ModelRegistry(self.repository)
        self.plane = DataPlane(self.registry, strict_readiness=settings.strict_readiness)
        self.addresses: list[BoundAddress] = []
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._grpc: grpc.aio.Server | None = None

    def limits(self) -> DecodeLimits:
        s = self.settings
        return DecodeLimits(max_rank=s.max_tensor_rank, max_elements=s.max_tensor_elements,
                            max_json_depth=s.max_json_depth)

    async def start(self) -> None:
        await self._load_initial_models()
        # gRPC first: once HTTP answers ready, every listener is up.
        if self.settings.allow_grpc:
            await self._start_grpc()
        if self.settings.allow_http:
            await self._start_http()

    async def _load_initial_models(self) -> None:
        s = self.settings
        if s.model_control_mode == "explicit":
            names = self.repository.list() if "*" in s.load_model else s.load_model
        else:
            names = self.repository.list()
        for name in names:
            # A failure is recorded in the registry with its reason; other models still serve.
            with contextlib.suppress(KilnError):
                await self.registry.load(name)
        log.info("models: %s", ", ".join(
            f"{n} {self.registry.entry(n).ready_versions()}" for n in self.registry.names()
        ) or "none")

    def http_app(self) -> HttpApp:
        """The HTTP listener's application: KServe V2 and TF Serving routes."""
        routes = v2_routes(self.plane, self.limits()) + tfserving_routes(self.plane, self.limits())
        return HttpApp(routes, max_request_bytes=self.settings.max_request_bytes,
                       access=self.access)

    async def _start_http(self) -> None:
        s = self.settings
        protocol = limited_protocol(header_timeout_s=s.http_header_timeout_s,
                                    body_timeout_s=s.http_body_timeout_s)
        config = uvicorn.Config(
            self.http_app(), host=s.http_address, port=s.http_port, http=protocol, loop="none",
            lifespan="off", access_log=False, log_config=None, server_header=False,
            date_header=False, timeout_keep_alive=30, limit_concurrency=s.http_max_connections,
            ssl_context_factory=(lambda *_: self._ssl) if self._ssl else None,
        )
        self._http = uvicorn.Server(config)
        # NOTE: ``Server.serve`` would install uvicorn's own signal handlers; the CLI owns
        # signals, so run the same start-up/main-loop/shut-down sequence without them.
        self._http_task = asyncio.create_task(self._http._serve())
        while not self._http.started:
            if self._http_task.done():
                raise KilnError(f"cannot listen on {s.http_address}:{s.http_port} for HTTP")
            await asyncio.sleep(0.005)
        for server in self._http.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                self.addresses.append(BoundAddress("http", host, port))
                log.info("HTTP%s (KServe V2, TF Serving REST) listening on %s:%d%s",
                         "S" if self.tls else "", host, port, self._auth_note())

    async def _start_grpc(self) -> None:
        s = self.settings
        size = s.grpc_max_message_bytes
        # NOTE: SO_REUSEPORT off, so a port already in use fails here instead of sharing it.
        self._grpc = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
            ("grpc.so_reuseport", 0), ("grpc.max_concurrent_streams", 1024),
        ], interceptors=[AccessInterceptor(self.access)] if self.access else None)
        self._grpc.add_generic_rpc_handlers([V2GrpcService(self.plane, self.limits()).handler()])
        host = f"[{s.grpc_address}]" if ":" in s.grpc_address else s.grpc_address
        try:
            address = f"{host}:{s.grpc_port}"
            port = (self._grpc.add_secure_port(address, self.tls.grpc_credentials()) if self.tls
                    else self._grpc.add_insecure_port(address))
        except RuntimeError:
            raise KilnError(f"cannot listen on {s.grpc_address}:{s.grpc_port} for gRPC") from None
        await self._grpc.start()
        self.addresses.append(BoundAddress("grpc", s.grpc_address, port))
        log.info("gRPC%s (KServe V2) listening on %s:%d%s", " with TLS" if self.tls else "",
                 s.grpc_address, port, self._auth_note())

    def _auth_note(self) -> str:
        if self.access is None:
            return ""
        mutual = ", client certificates required" if self.tls and self.tls.client_ca_file else ""
        return f" (API keys from {self.access.keys_file}{mutual})"

    async def stop(self) -> None:
        self.plane.accepting = False
        if self._grpc is not None:
            await self._grpc.stop(self.settings.exit_timeout_secs)
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        await self.registry.close()
