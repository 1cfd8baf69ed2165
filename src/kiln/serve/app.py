"""The composition root: the one place that wires concrete classes into a running server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
import uvicorn

from kiln.errors import ConfigError, KilnError
from kiln.serve.auth import AccessControl, check_exposure
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.control import ModelControl
from kiln.serve.dataplane import DataPlane
from kiln.serve.logcontrol import LogControl
from kiln.serve.metrics import build_registry
from kiln.serve.poller import RepositoryPoller
from kiln.serve.protocols.grpc_auth import AccessInterceptor
from kiln.serve.protocols.http_app import HttpApp
from kiln.serve.protocols.http_server import http_connection
from kiln.serve.protocols.observability_http import logging_routes, metrics_routes
from kiln.serve.protocols.repository_http import repository_routes
from kiln.serve.protocols.tfserving_http import tfserving_routes
from kiln.serve.protocols.v2_grpc import V2GrpcService
from kiln.serve.protocols.v2_http import v2_routes
from kiln.serve.registry import ModelRegistry
from kiln.serve.repository import ModelRepository
from kiln.serve.repository.artifacts import ArtifactPolicy
from kiln.serve.repository.model_keys import KeyRing
from kiln.serve.requestlog import RequestObserver
from kiln.serve.settings import ServerSettings
from kiln.serve.tls import TlsFiles
from kiln.serve.tracing import RequestTracer, build_tracer

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
        poll = settings.model_control_mode == "poll"
        self.registry = ModelRegistry(self.repository, require_marker=poll,
                                      drain_timeout_s=settings.exit_timeout_secs,
                                      histograms=settings.allow_metrics)
        self.plane = DataPlane(self.registry, strict_readiness=settings.strict_readiness)
        self.control = ModelControl(self.registry, mode=settings.model_control_mode,
                                    enabled=settings.allow_repository_api)
        self.poller = (RepositoryPoller(self.registry, interval_s=settings.repository_poll_secs)
                       if poll else None)
        self.log_control = LogControl(verbose=settings.log_verbose, fmt=settings.log_format)
        self.addresses: list[BoundAddress] = []
        self._http: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
        self._grpc: grpc.aio.Server | None = None
        self._tracer: RequestTracer | None = None

    def limits(self) -> DecodeLimits:
        s = self.settings
        return DecodeLimits(max_rank=s.max_tensor_rank, max_elements=s.max_tensor_elements,
                            max_json_depth=s.max_json_depth)

    async def start(self) -> None:
        s = self.settings
        self._tracer = build_tracer(s.trace_exporter)
        await self._load_initial_models()
        # gRPC and metrics first: once HTTP answers ready, every listener is up.
        if s.allow_grpc:
            await self._start_grpc()
        if s.allow_metrics:
            app = HttpApp(metrics_routes(build_registry(self.plane)), max_request_bytes=1 << 16,
                          access=self.access)
            await self._serve_http(app, s.metrics_address, s.metrics_port, "metrics")
        if s.allow_http:
            await self._serve_http(self.http_app(), s.http_address, s.http_port,
                                   f"HTTP{'S' if self.tls else ''} (KServe V2, TF Serving REST)",
                                   max_connections=s.http_max_connections, tls=True)
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
        """The ASGI app of the HTTP port: KServe V2, TF Serving REST, repository and logging."""
        routes = [*v2_routes(self.plane, self.limits()),
                  *tfserving_routes(self.plane, self.limits()),
                  *repository_routes(self.control),
                  *logging_routes(self.log_control)]
        return HttpApp(routes, max_request_bytes=self.settings.max_request_bytes,
                       access=self.access, observer=RequestObserver(tracer=self._tracer))

    async def _serve_http(self, app: HttpApp, host: str, port: int, protocol: str, *,
                          max_connections: int | None = None, tls: bool = False) -> None:
        s = self.settings
        ssl = self._ssl if tls else None
        config = uvicorn.Config(
            app, host=host, port=port, loop="none",
            http=http_connection(header_timeout_s=s.http_header_timeout_s,
                                body_timeout_s=s.http_body_timeout_s),
            lifespan="off", access_log=False, log_config=None, server_header=False,
            date_header=False, timeout_keep_alive=30, limit_concurrency=max_connections,
            timeout_graceful_shutdown=max(s.exit_timeout_secs, 1),
            ssl_context_factory=(lambda *_: ssl) if ssl else None,
        )
        server = uvicorn.Server(config)
        # NOTE: ``Server.serve`` would install uvicorn's own signal handlers; the CLI owns
        # signals, so run the same start-up/main-loop/shut-down sequence without them.
        task = asyncio.create_task(server._serve())
        self._http.append((server, task))
        while not server.started:
            if task.done():
                raise KilnError(f"cannot listen on {host}:{port} for {protocol}")
            await asyncio.sleep(0.005)
        for listener in server.servers:
            for sock in listener.sockets:
                bound_host, bound_port = sock.getsockname()[:2]
                self.addresses.append(BoundAddress(protocol, bound_host, bound_port))
                log.info("%s listening on %s:%d%s", protocol, bound_host, bound_port,
                         self._auth_note())

    async def _start_grpc(self) -> None:
        s = self.settings
        size = s.grpc_max_message_bytes
        # NOTE: SO_REUSEPORT off, so a port already in use fails here instead of sharing it.
        self._grpc = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
            ("grpc.so_reuseport", 0), ("grpc.max_concurrent_streams", 1024),
        ], interceptors=[AccessInterceptor(self.access)] if self.access else None)
        service = V2GrpcService(self.plane, self.limits(), control=self.control,
                                observer=RequestObserver(tracer=self._tracer))
        self._grpc.add_generic_rpc_handlers([service.handler()])
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
        for server, _ in self._http:
            server.should_exit = True
        for _, task in self._http:
            await task
        await self.registry.close()
        if self._tracer is not None:
            self._tracer.shutdown()
