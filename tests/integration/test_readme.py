"""The README's commands and examples stay true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import yaml

from kiln.repository.config import ModelConfig
from tests.server import KilnProcess

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    serve, test = blocks[0].strip(), blocks[1].strip()
    assert serve.endswith("kiln serve") and test.endswith("scripts/check")
    ci = (README.parent / ".ci" / "run").read_text()
    assert test in ci
    check = (README.parent / "scripts" / "check").read_text()
    for step in ("ruff", "mypy", "lint-imports", "pytest"):
        assert step in check


def test_curl_example_gives_the_answer_shown(example_server: KilnProcess) -> None:
    text = README.read_text()
    block = re.search(r"```bash\n(curl .*?)```", text, re.S).group(1)  # type: ignore[union-attr]
    body = re.search(r"-d '(.*?)'", block, re.S).group(1)  # type: ignore[union-attr]
    shown = re.search(r"# (\{.*\})", block).group(1)  # type: ignore[union-attr]
    response = httpx.post(f"{example_server.base}/v2/models/digits/infer", content=body)
    assert response.status_code == 200
    assert response.json() == orjson.loads(shown)


def test_kiln_version_runs() -> None:
    kiln = Path(sys.executable).parent / "kiln"  # the console script pip installed
    out = subprocess.run([str(kiln), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("kiln ")


def test_config_examples_are_valid_configs() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert blocks
    for block in blocks:
        if "max_batch_size" in block:
            config = ModelConfig.model_validate(yaml.safe_load(block))
            assert config.dynamic_batching is not None
