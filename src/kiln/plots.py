"""Helpers for the figures and labels of kiln's reports (``kiln bench``, ``kiln optimize``):
matplotlib figures built directly, never through pyplot's global state, and returned as
inline SVG with text as paths, so a page needs no font or network."""

from __future__ import annotations

import io
from typing import Any

_INSTALL = "the report's plots are drawn with matplotlib: pip install 'kiln-ml[bench]'"


def figure(width: float = 9.0, height: float = 4.5) -> Any:
    """An empty matplotlib figure (raises ``ImportError`` naming the extra without it)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(_INSTALL) from None
    return Figure(figsize=(width, height), layout="constrained")


def svg(figure: Any) -> str:
    """The figure as an ``<svg>`` element (deterministic ids)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "kiln"}):
        figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def size_text(size_bytes: int | None) -> str:
    """A file size for a table: ``1.23 MB``, ``45.6 kB``, ``—`` when unknown."""
    if size_bytes is None:
        return "—"
    return f"{size_bytes / 1e6:.2f} MB" if size_bytes >= 1e5 else f"{size_bytes / 1e3:.1f} kB"
