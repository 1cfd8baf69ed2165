"""GPU metrics where there is no GPU: absent, not an error."""

from __future__ import annotations

import sys

import pytest

from kiln.serve.observability.metrics import gpu_collector


def test_without_nvml_there_is_no_gpu_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes ``import pynvml`` fail
    assert gpu_collector() is None
