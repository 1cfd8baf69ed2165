"""``kiln keygen``: create a master key for models encrypted at rest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "keygen", help="create a model encryption key file (for 'kiln encrypt')",
        description="Write a new random AES-256 master key to FILE (mode 0600; never "
        "overwrites). Keep it outside the model repository.")
    parser.add_argument("key_file", type=Path, metavar="FILE")


def run(args: argparse.Namespace) -> int:
    from kiln.repository.model_keys import write_key_file

    try:
        key_id = write_key_file(args.key_file)
    except OSError as exc:
        print(f"kiln keygen: cannot create {args.key_file}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"model key {key_id} written to {args.key_file}")
    return 0
