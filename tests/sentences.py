"""Real English sentences from the documentation of installed Python modules (no downloads).

The standard library's docstrings give a few thousand distinct sentences of varied length;
``sentences(count, offset)`` returns the same ones every time, so calibration and evaluation
sets cut from different offsets never overlap.
"""

from __future__ import annotations

import importlib
import inspect
import re
from functools import cache

_MODULES = ("collections", "json", "inspect", "pathlib", "argparse", "asyncio", "logging",
            "typing", "functools", "itertools", "re", "os", "subprocess", "email",
            "http.client", "urllib.request", "decimal", "fractions", "statistics", "datetime",
            "threading", "unittest", "zipfile", "tarfile", "csv", "sqlite3", "string",
            "textwrap", "difflib", "heapq", "shutil", "tempfile", "socket", "ssl", "pickle",
            "copy", "enum", "dataclasses", "contextlib", "abc")
_SPLIT = re.compile(r"(?<=[.!?])\s+")


@cache
def _all() -> tuple[str, ...]:
    found: dict[str, None] = {}
    for name in _MODULES:
        module = importlib.import_module(name)
        members = [v for _, v in inspect.getmembers(module)
                   if inspect.isclass(v) or inspect.isfunction(v)]
        for item in (module, *members):
            for text in _SPLIT.split(" ".join((inspect.getdoc(item) or "").split())):
                if 30 <= len(text) <= 300 and text[0].isupper() and ">>>" not in text:
                    found.setdefault(text)
    return tuple(found)


def sentences(count: int, offset: int = 0) -> list[str]:
    """``count`` distinct sentences starting at ``offset`` (about 1,900 exist)."""
    chosen = list(_all()[offset:offset + count])
    if len(chosen) < count:
        raise ValueError(f"only {len(_all())} sentences are available")
    return chosen
