"""The composition root: the one place that wires concrete classes into a running server."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from kiln.errors import ConfigError, KilnError
from kiln.repository import ModelRepository
from kiln.repository.files import ArtifactPolicy
from kiln.repository.model_keys import KeyRing
from kiln.runtime import BackendTable
from kiln.serve.codecs.limits import DecodeLimits
from kiln.serve.core.control import ModelControl
from kiln.serve.core.dataplane import DataPlane
from kiln.serve.core.poller import RepositoryPoller
from kiln.serve.core.registry import ModelRegistry
from kiln.serve.observability.logcontrol import LogControl
from kiln.serve.observability.metrics import build_registry
from kiln.serve.observability.requestlog import RequestObserver, Tracer
from kiln.serve.observability.tracing import build_tracer
from kiln.serve.protocols.grpc_auth import AccessInterceptor
from kiln.serve.protocols.http_app import HttpApp
from kiln.serve.protocols.http_listener import HttpListener
from kiln.serve.protocols.http_server import ConnectionLimits
from kiln.serve.protocols.observability_http import logging_routes, metrics_routes
from kiln.serve.protocols.repository_http import repository_routes
from kiln.serve.protocols.tfserving_http import tfserving_routes
from kiln.serve.protocols.v2_grpc import V2GrpcService
from kiln.serve.protocols.v2_http import v2_routes
from kiln.serve.security.auth import AccessControl, check_exposure
from kiln.serve.security.tls import TlsFiles
from kiln.serve.settings import ServerSettings

log = logging.getLogger("kiln.serve")

#: Seconds an idle keep-alive HTTP connection stays open.
KEEP_ALIVE_S = 30.0


@dataclass(frozen=True, slots=True)
class BoundAddress:
    protocol: str
    host: str
    port: int


@dataclass(slots=True)
class _Http:
    """One HTTP listener and what it serves."""

    listener: HttpListener
    protocol: str
    addresses: list[tuple[str, int]]


class KilnServer:
    """A running kiln server: ``await start()``, then ``await stop()``.

        server = KilnServer(ServerSettings.build(model_repository=[path], http_port=0))
        await server.start()
        ...
        await server.stop()

    ``backends`` is the table of backends model configs may name (default: kiln's own).
    """

    def __init__(self, settings: ServerSettings, *, backends: BackendTable | None = None) -> None:
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
        poll = s.model_control_mode == "poll"
        self.registry = ModelRegistry(self.repository, backends or BackendTable(),
                                      require_marker=poll, drain_timeout_s=s.exit_timeout_secs,
                                      histograms=s.allow_metrics)
        self.plane = DataPlane(self.registry, strict_readiness=s.strict_readiness)
        self.control = ModelControl(self.registry, mode=s.model_control_mode,
                                    enabled=s.allow_repository_api)
        self.poller = (RepositoryPoller(self.registry, interval_s=s.repository_poll_secs)
                       if poll else None)
        self.log_control = LogControl(verbose=s.log_verbose, fmt=s.log_format)
        self.addresses: list[BoundAddress] = []
        self._http: list[_Http] = []
        self._grpc: grpc.aio.Server | None = None
        self._tracer: Tracer | None = None

    def limits(self) -> DecodeLimits:
        s = self.settings
        return DecodeLimits(max_rank=s.max_tensor_rank, max_elements=s.max_tensor_elements,
                            max_json_depth=s.max_json_depth)

    async def start(self) -> None:
        """Bind every listener (a port in use fails here, before any model loads), load the
        models, then serve: gRPC and metrics first, so once HTTP answers ready, every
        listener is up."""
        s = self.settings
        self._tracer = build_tracer(s.trace_exporter)
        self._bind()
        await self._load_initial_models()
        if self._grpc is not None:
            await self._grpc.start()
            grpc_address = self.addresses[0]
            log.info("gRPC%s (KServe V2) listening on %s:%d%s", " with TLS" if self.tls else "",
                     grpc_address.host, grpc_address.port, self._auth_note())
        for http in self._http:
            await http.listener.start()
            for host, port in http.addresses:
                self.addresses.append(BoundAddress(http.protocol, host, port))
                log.info("%s listening on %s:%d%s", http.protocol, host, port,
                         self._auth_note())
        if self.poller is not None:
            self.poller.start()
        if s.address_file is not None:
            _write_addresses(s.address_file, self.addresses)

    def _bind(self) -> None:
        s = self.settings
        if s.allow_grpc:
            self._bind_grpc()
        limits = ConnectionLimits(header_timeout_s=s.http_header_timeout_s,
                                  body_timeout_s=s.http_body_timeout_s, keep_alive_s=KEEP_ALIVE_S)
        if s.allow_metrics:
            app = HttpApp(metrics_routes(build_registry(self.plane)), max_request_bytes=1 << 16,
                          access=self.access)
            self._bind_http(HttpListener(app, limits=limits), s.metrics_address, s.metrics_port,
                            "metrics", "--metrics-port")
        if s.allow_http:
            limits = dataclasses.replace(limits, max_connections=s.http_max_connections)
            self._bind_http(HttpListener(self.http_app(), limits=limits, ssl=self._ssl),
                            s.http_address, s.http_port,
                            f"HTTP{'S' if self.tls else ''} (KServe V2, TF Serving REST)",
                            "--http-port")

    def _bind_http(self, listener: HttpListener, host: str, port: int, protocol: str,
                   option: str) -> None:
        try:
            addresses = listener.bind(host, port)
        except OSError as exc:
            raise KilnError(_cannot_listen(protocol, host, port, option, exc)) from None
        self._http.append(_Http(listener, protocol, addresses))

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
        """The app of the HTTP port: KServe V2, TF Serving REST, repository and logging."""
        routes = [*v2_routes(self.plane, self.limits()),
                  *tfserving_routes(self.plane, self.limits()),
                  *repository_routes(self.control),
                  *logging_routes(self.log_control)]
        return HttpApp(routes, max_request_bytes=self.settings.max_request_bytes,
                       access=self.access, observer=RequestObserver(tracer=self._tracer))

    def _bind_grpc(self) -> None:
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
            raise KilnError(_cannot_listen("gRPC", s.grpc_address, s.grpc_port, "--grpc-port",
                                           None)) from None
        self.addresses.append(BoundAddress("grpc", s.grpc_address, port))

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
        for http in self._http:
            await http.listener.close(timeout_s=1.0)
        await self.registry.close()
        if self._tracer is not None:
            self._tracer.shutdown()


def _cannot_listen(protocol: str, host: str, port: int, option: str,
                   exc: OSError | None) -> str:
    why = ("the address is already in use" if exc is None or exc.errno == errno.EADDRINUSE
           else (exc.strerror or str(exc)))
    return (f"cannot listen on {host}:{port} for {protocol}: {why}; stop what uses it or "
            f"choose another port with {option}")


def _write_addresses(path: Path, addresses: list[BoundAddress]) -> None:
    """``{"http": port, "grpc": port, "metrics": port}``, written atomically once every
    listener is up (for supervisors and tests that start kiln on port 0)."""
    ports: dict[str, int] = {}
    for address in addresses:
        key = ("grpc" if address.protocol == "grpc" else
               "metrics" if address.protocol == "metrics" else "http")
        ports.setdefault(key, address.port)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.write_text(json.dumps(ports))
    os.replace(temp, path)
