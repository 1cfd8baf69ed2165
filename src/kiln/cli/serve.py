"""``kiln serve``: serve a model repository. Accepts Triton's names for shared options, so a
``tritonserver`` launch line works with ``tritonserver`` replaced by ``kiln serve``.

The options are generated from ``kiln.serve.settings.ServerSettings``: one per field, with
the field's docstring as help, in the field's group.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from kiln.errors import KilnError
from kiln.serve.settings import GROUPS, Cli, ServerSettings

_GROUP_TITLES = {
    "models": "model repository",
    "HTTP": "HTTP (KServe V2 and TF Serving REST)",
    "gRPC": "gRPC (KServe V2)",
    "metrics": "Prometheus metrics",
    "lifecycle": "model lifecycle and shutdown",
    "limits": "request limits",
    "security": "security: API keys, TLS, encrypted models",
    "logging": "logging and tracing",
}


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def options() -> list[tuple[str, Cli, list[str], dict[str, Any]]]:
    """(field, its ``Cli``, flags, argparse keyword arguments) of every setting, in
    declaration order."""
    result = []
    for name, field in ServerSettings.model_fields.items():
        cli = next((m for m in field.metadata if isinstance(m, Cli)), None)
        if cli is None:
            raise TypeError(f"settings field '{name}' has no Cli annotation")
        flags = list(cli.flags) or [f"--{name.replace('_', '-')}"]
        kwargs = _argument(field.annotation, switch=cli.switch)
        default = None if field.default_factory is not None else field.default
        kwargs["help"] = _help(field.description or "", default, kwargs)
        result.append((name, cli, flags, kwargs))
    return result


def _argument(annotation: Any, *, switch: bool) -> dict[str, Any]:
    """argparse keyword arguments for a field's type."""
    if switch:
        return {"action": "store_const", "const": True}
    kind = _unwrap(annotation)
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        return {"action": "append", "type": _scalar(item), "metavar": _metavar(item)}
    if origin is Literal:
        return {"choices": [str(c) for c in typing.get_args(kind)]}
    return {"type": _scalar(kind), "metavar": _metavar(kind)}


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _scalar(kind: Any) -> Any:
    if kind is bool:
        return _bool
    if kind in (int, float, Path):
        return kind
    return str


def _metavar(kind: Any) -> str:
    return {bool: "true|false", int: "N", float: "SECONDS", Path: "PATH"}.get(kind, "TEXT")


def _help(description: str, default: Any, kwargs: dict[str, Any]) -> str:
    text = " ".join(description.split()).replace("%", "%%")
    if kwargs.get("action") == "store_const" or default is None:
        return text
    shown = str(default).lower() if isinstance(default, bool) else default
    return f"{text} [default: {shown}]"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve a model repository over KServe V2 (HTTP and gRPC)",
        description="Serve the models in a repository (default: the bundled examples). "
        "Every option can also be set as KILN_<OPTION> (e.g. KILN_HTTP_PORT=9000) or in "
        "--config-file.")
    parser.add_argument("repository", nargs="*", type=Path,
                        help="model repository folder(s); same as --model-repository")
    groups = {key: parser.add_argument_group(_GROUP_TITLES[key]) for key in GROUPS}
    for name, cli, flags, kwargs in options():
        groups[cli.group].add_argument(*flags, dest=name, default=None, **kwargs)


def settings_values(args: argparse.Namespace) -> dict[str, Any]:
    """Only the options given on the command line, so env and file fill the rest."""
    values = {name: getattr(args, name) for name in ServerSettings.model_fields
              if getattr(args, name) is not None}
    repositories = list(args.repository) + list(values.pop("model_repository", []) or [])
    if repositories:
        values["model_repository"] = repositories
    return values


def run(args: argparse.Namespace) -> int:
    from kiln.cli.logs import configure_logging

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


async def _serve(settings: ServerSettings) -> None:
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
