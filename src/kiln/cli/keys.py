"""``kiln keys create|list|revoke``: manage the API keys file ``kiln serve --keys-file`` reads.

A new key is printed once and never stored: the file keeps only its salted hash.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from kiln.errors import KilnError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "keys", help="create, list and revoke API keys for 'kiln serve --keys-file'",
        description="Manage API keys. Scopes: infer, metadata, metrics, admin (admin "
        "implies all). The keys file defaults to $KILN_KEYS_FILE.")
    commands = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = commands.add_parser("create", help="make a key and print it (shown only once)")
    create.add_argument("--scope", action="append", required=True, dest="scopes",
                        choices=["infer", "metadata", "metrics", "admin"],
                        help="a scope the key carries (repeat for several)")
    create.add_argument("--model", action="append", dest="models", metavar="NAME",
                        help="limit the key to this model (repeat; default: every model)")
    create.add_argument("--name", default="", help="a note saying who or what uses the key")
    commands.add_parser("list", help="list keys (ids, scopes, models; never secrets)")
    revoke = commands.add_parser("revoke", help="delete a key by id")
    revoke.add_argument("key_id", metavar="ID")
    for sub in commands.choices.values():
        sub.add_argument("--keys-file", type=Path, default=os.environ.get("KILN_KEYS_FILE"),
                         required="KILN_KEYS_FILE" not in os.environ, metavar="YAML")


def run(args: argparse.Namespace) -> int:
    from kiln.serve.security import keys as store

    try:
        current = store.load_or_empty(args.keys_file)
        if args.keys_command == "create":
            token, record = store.new_key(scopes=args.scopes, models=args.models,
                                          name=args.name)
            store.save_keys(args.keys_file, current.model_copy(
                update={"keys": [*current.keys, record]}))
            print(token)
            print(f"key {record.id} added to {args.keys_file}; it is shown only now",
                  file=sys.stderr)
        elif args.keys_command == "list":
            for k in current.keys:
                models = ",".join(k.models) if k.models is not None else "*"
                print(f"{k.id}  scopes={','.join(k.scopes)}  models={models}  "
                      f"created={k.created}  {k.name}")
        else:
            kept = [k for k in current.keys if k.id != args.key_id]
            if len(kept) == len(current.keys):
                raise KilnError(f"no key with id {args.key_id} in {args.keys_file}")
            store.save_keys(args.keys_file, current.model_copy(update={"keys": kept}))
            print(f"key {args.key_id} revoked", file=sys.stderr)
    except KilnError as exc:
        print(f"kiln keys: {exc.message}", file=sys.stderr)
        return 1
    return 0
