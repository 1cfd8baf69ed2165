"""Bounds every codec enforces before it allocates anything."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeLimits:
    #: Largest tensor rank accepted.
    max_rank: int = 32
    #: Most elements one tensor may declare.
    max_elements: int = 1 << 31
    #: Deepest nesting of a JSON ``data`` array.
    max_json_depth: int = 32
