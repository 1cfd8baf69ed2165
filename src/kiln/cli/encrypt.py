"""``kiln encrypt``: encrypt a model file for storage at rest (``model.onnx.kiln-enc``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kiln.errors import KilnError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "encrypt", help="encrypt a model file with a key from 'kiln keygen'",
        description="Encrypt MODEL into MODEL.kiln-enc (AES-256-GCM). 'kiln serve "
        "--model-key-file KEY' decrypts it in memory when it loads. If a manifest.json "
        "beside the output lists MODEL, its entry is replaced by the encrypted file's.")
    parser.add_argument("model", type=Path, metavar="MODEL")
    parser.add_argument("--key-file", type=Path, required=True, metavar="KEY",
                        help="model key file; its first key encrypts")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="where to write (default: MODEL.kiln-enc)")
    parser.add_argument("--bind", metavar="MODEL/VERSION",
                        help="refuse to load the file anywhere but this model version")
    parser.add_argument("--chunk-bytes", type=int, default=4 << 20, help="bytes per chunk")


def run(args: argparse.Namespace) -> int:
    from kiln.repository.encryption import SUFFIX, encrypt_file
    from kiln.repository.manifest import MANIFEST_NAME
    from kiln.repository.model_keys import KeyRing
    from kiln.repository.write import replace_file_entry

    output: Path = args.output or args.model.with_name(args.model.name + SUFFIX)
    try:
        keys = KeyRing.load([args.key_file])
        if keys is None:
            raise KilnError(f"{args.key_file} holds no key")
        if not 1024 <= args.chunk_bytes <= 1 << 28:
            raise KilnError("--chunk-bytes must be between 1024 and 268435456")
        encrypt_file(args.model, output, keys, binding=args.bind or "",
                     chunk_size=args.chunk_bytes)
        manifest = output.parent / MANIFEST_NAME
        if replace_file_entry(manifest, args.model.name, output):
            print(f"{manifest}: entry {args.model.name} replaced by {output.name} and its "
                  "sha256", file=sys.stderr)
    except (KilnError, OSError) as exc:
        message = exc.message if isinstance(exc, KilnError) else str(exc)
        print(f"kiln encrypt: {message}", file=sys.stderr)
        return 1
    print(f"{output} written with model key {keys.primary}; remove {args.model.name} from "
          "the model repository (a version holding both is refused)")
    return 0
