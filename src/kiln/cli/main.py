"""``kiln``: parse the command line and hand over to one command module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from kiln import __version__

#: Command name -> module with ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = {
    "serve": "kiln.cli.serve",
    "bench": "kiln.cli.bench",
    "convert": "kiln.cli.convert",
    "keys": "kiln.cli.keys",
    "keygen": "kiln.cli.keygen",
    "encrypt": "kiln.cli.encrypt",
    "optimize": "kiln.cli.optimize",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiln", description="Take a trained model to production: convert, optimize, "
        "serve and measure it.")
    parser.add_argument("--version", action="version", version=f"kiln {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    code: int = importlib.import_module(COMMANDS[args.command]).run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
