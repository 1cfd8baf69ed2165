"""``kiln serve``: serve a model repository. Accepts Triton's names for shared options, so a
``tritonserver`` launch line works with ``tritonserver`` replaced by ``kiln serve``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from pathlib import Path
from typing import Any

from kiln.errors import KilnError


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


#: (flags, settings field, argparse keyword arguments). Triton's spelling comes first.
_OPTIONS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--model-repository", "--model-store"), "model_repository",
     {"action": "append", "type": Path, "metavar": "DIR"}),
    (("--config-file",), "config_file", {"type": Path, "metavar": "YAML"}),
    (("--http-address",), "http_address", {}),
    (("--http-port",), "http_port", {"type": int}),
    (("--allow-http",), "allow_http", {"type": _bool}),
    (("--grpc-address",), "grpc_address", {}),
    (("--grpc-port",), "grpc_port", {"type": int}),
    (("--allow-grpc",), "allow_grpc", {"type": _bool}),
    (("--grpc-max-message-bytes",), "grpc_max_message_bytes", {"type": int}),
    (("--metrics-address",), "metrics_address", {}),
    (("--metrics-port",), "metrics_port", {"type": int}),
    (("--allow-metrics",), "allow_metrics", {"type": _bool}),
    (("--model-control-mode",), "model_control_mode", {"choices": ["none", "poll", "explicit"]}),
    (("--load-model",), "load_model", {"action": "append", "metavar": "NAME"}),
    (("--repository-poll-secs",), "repository_poll_secs", {"type": float}),
    (("--strict-readiness",), "strict_readiness", {"type": _bool}),
    (("--exit-timeout-secs",), "exit_timeout_secs", {"type": float}),
    (("--allow-repository-api",), "allow_repository_api", {"type": _bool}),
    (("--http-max-input-size", "--max-request-bytes"), "max_request_bytes", {"type": int}),
    (("--keys-file",), "keys_file", {"type": Path, "metavar": "YAML"}),
    (("--insecure",), "insecure", {"action": "store_true"}),
    (("--tls-cert-file",), "tls_cert_file", {"type": Path, "metavar": "PEM"}),
    (("--tls-key-file",), "tls_key_file", {"type": Path, "metavar": "PEM"}),
    (("--tls-client-ca-file",), "tls_client_ca_file", {"type": Path, "metavar": "PEM"}),
    (("--model-key-file",), "model_key_file", {"action": "append", "type": Path}),
    (("--require-manifest",), "require_manifest", {"type": _bool}),
    (("--http-header-timeout-s",), "http_header_timeout_s", {"type": float}),
    (("--http-body-timeout-s",), "http_body_timeout_s", {"type": float}),
    (("--log-verbose",), "log_verbose", {"type": int}),
    (("--log-format",), "log_format", {"choices": ["text", "json"]}),
    (("--trace-exporter",), "trace_exporter", {"choices": ["none", "console", "otlp"]}),
]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve a model repository over KServe V2 (HTTP and gRPC)",
        description="Serve the models in a repository (default: the bundled examples). "
        "Every option can also be set as KILN_<OPTION> or in --config-file.")
    parser.add_argument("repository", nargs="*", type=Path,
                        help="model repository folder(s); same as --model-repository")
    for flags, field, kwargs in _OPTIONS:
        parser.add_argument(*flags, dest=field, default=None, **kwargs)


def settings_values(args: argparse.Namespace) -> dict[str, Any]:
    """Only the options given on the command line, so env and file fill the rest."""
    values = {field: getattr(args, field) for _, field, _ in _OPTIONS
              if getattr(args, field) is not None}
    repositories = list(args.repository) + list(values.pop("model_repository", []) or [])
    if repositories:
        values["model_repository"] = repositories
    return values


def run(args: argparse.Namespace) -> int:
    from kiln.cli.logs import configure_logging
    from kiln.serve.settings import ServerSettings

    try:
        settings = ServerSettings.build(**settings_values(args))
    except KilnError as exc:
        print(f"kiln serve: {exc.message}", file=sys.stderr)
        return 2
    configure_logging(verbose=settings.log_verbose, fmt=settings.log_format)
    try:
        _run_loop(_serve(settings))
    except KilnError as exc:
        print(f"kiln serve: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _run_loop(main: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is missing on Windows
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _serve(settings: Any) -> None:
    from kiln.serve.app import KilnServer

    server = KilnServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        # The models and everything loaded so far live until exit: keep them out of the
        # garbage collector's scans, whose pauses would otherwise show in the latency tail.
        gc.freeze()
        await stop.wait()
    finally:
        await server.stop()
