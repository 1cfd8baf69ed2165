"""Codecs are pure: importing one loads no serving core, runtime, repository, onnx,
cryptography or pydantic (a worker process that only decodes stays small and quick to start;
import-linter checks the same statically)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CODECS = ["binary", "checks", "json_tensors", "limits", "tfserving", "tfserving_examples",
          "v2_grpc", "v2_json"]
FORBIDDEN = ("kiln.serve.core", "kiln.runtime", "kiln.repository", "onnx", "onnxruntime",
             "cryptography", "pydantic", "grpc")


@pytest.mark.parametrize("codec", CODECS)
def test_importing_a_codec_loads_nothing_of_the_core(codec: str) -> None:
    script = (f"import sys, json; import kiln.serve.codecs.{codec}; "
              "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", script], check=True,
                                       capture_output=True, text=True).stdout)
    leaked = [m for m in loaded if m.split(".")[0] in FORBIDDEN
              or any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert leaked == []
