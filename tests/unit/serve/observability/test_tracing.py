"""Tracing's optional extra: off builds nothing, missing says what to install."""

from __future__ import annotations

import sys

import pytest

from kiln.errors import ConfigError
from kiln.serve.observability.tracing import build_tracer


def test_tracing_off_builds_nothing() -> None:
    assert build_tracer("none") is None


def test_tracing_without_the_otel_extra_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ConfigError, match=r"pip install 'kiln-ml\[otel\]'"):
        build_tracer("console")


def test_tracing_with_the_extra_makes_a_tracer_that_shuts_down() -> None:
    tracer = build_tracer("console")
    assert tracer is not None
    tracer.shutdown()
