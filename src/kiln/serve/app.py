"""The composition root: the one place that wires concrete classes into a running server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
import uvicorn

from kiln.errors import ConfigError, KilnError
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.control import ModelControl
from kiln.serve.dataplane import DataPlane
from kiln.serve.poller import RepositoryPoller
from kiln.serve.protocols.http_app import HttpApp
from kiln.serve.protocols.repository_http import repository_routes
from kiln.serve.protocols.tfserving_http import tfserving_routes
from kiln.serve.protocols.v2_grpc import V2GrpcService
from kiln.serve.protocols.v2_http import v2_routes
from kiln.serve.registry import ModelRegistry
from kiln.serve.repository import ModelRepository
from kiln.serve.settings import ServerSettings

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
        self.settings = settings
        self.repository = ModelRepository(settings.model_repository)
        poll = settings.model_control_mode == "poll"
        self.registry = ModelRegistry(self.repository, require_marker=poll,
                                      drain_timeout_s=settings.exit_timeout_secs)
        self.plane = DataPlane(self.registry, strict_readiness=settings.strict_readiness)
        self.control = ModelControl(self.registry, mode=settings.model_control_mode,
                                    enabled=settings.allow_repository_api)
        self.poller = (RepositoryPoller(self.registry, interval_s=settings.repository_poll_secs)
                       if poll else None)
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
        if self.poller is not None:
            self.poller.start()

    async def _load_initial_models(self) -> None:
        s = self.settings
        names = self.repository.list()
        if s.model_control_mode == "explicit" and "*" not in s.load_model:
            if missing := [n for n in s.load_model if n not in names]:
                raise ConfigError(f"--load-model {', '.join(missing)}: not in the model "
                                  f"repository (it holds: {', '.join(names) or 'nothing'})")
            names = s.load_model
        for name in names:
            # A failure is recorded in the registry with its reason; other models still serve.
            with contextlib.suppress(KilnError):
                await self.registry.load(name)
        log.info("models: %s", ", ".join(
            f"{n} {self.registry.entry(n).ready_versions()}" for n in self.registry.names()
        ) or "none")

    def http_app(self) -> HttpApp:
        """The ASGI app of every HTTP protocol (KServe V2, TF Serving REST) on the data plane."""
        routes = (v2_routes(self.plane, self.limits())
                  + tfserving_routes(self.plane, self.limits())
                  + repository_routes(self.control))
        return HttpApp(routes, max_request_bytes=self.settings.max_request_bytes)

    async def _start_http(self) -> None:
        s = self.settings
        config = uvicorn.Config(
            self.http_app(), host=s.http_address, port=s.http_port, http="httptools", loop="none",
            lifespan="off", access_log=False, log_config=None, server_header=False,
            date_header=False, timeout_keep_alive=30, limit_concurrency=s.http_max_connections,
            timeout_graceful_shutdown=max(s.exit_timeout_secs, 1),
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
                log.info("HTTP (KServe V2, TF Serving REST) listening on %s:%d", host, port)

    async def _start_grpc(self) -> None:
        s = self.settings
        size = s.grpc_max_message_bytes
        # NOTE: SO_REUSEPORT off, so a port already in use fails here instead of sharing it.
        self._grpc = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
            ("grpc.so_reuseport", 0),
        ])
        self._grpc.add_generic_rpc_handlers([V2GrpcService(
            self.plane, self.limits(), control=self.control).handler()])
        host = f"[{s.grpc_address}]" if ":" in s.grpc_address else s.grpc_address
        try:
            port = self._grpc.add_insecure_port(f"{host}:{s.grpc_port}")
        except RuntimeError:
            raise KilnError(f"cannot listen on {s.grpc_address}:{s.grpc_port} for gRPC") from None
        await self._grpc.start()
        self.addresses.append(BoundAddress("grpc", s.grpc_address, port))
        log.info("gRPC (KServe V2) listening on %s:%d", s.grpc_address, port)

    async def stop(self) -> None:
        """Graceful shutdown: readiness goes false and new requests are refused (503 /
        UNAVAILABLE) at once; requests in flight finish, for at most ``exit_timeout_secs``;
        then the listeners close and the models are unloaded."""
        self.plane.accepting = False
        if self.poller is not None:
            await self.poller.stop()
        if not await self.plane.drain(self.settings.exit_timeout_secs):
            log.warning("requests still in flight after %.1f s (--exit-timeout-secs); "
                        "stopping anyway", self.settings.exit_timeout_secs)
        if self._grpc is not None:
            await self._grpc.stop(1.0)
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        await self.registry.close()
