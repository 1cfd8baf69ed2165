"""Settings come from the CLI (Triton's flag names), KILN_* variables and a YAML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.cli.main import build_parser
from kiln.cli.serve import settings_values
from kiln.errors import ConfigError
from kiln.serve.settings import ServerSettings, bundled_repository


def _settings(argv: list[str]) -> ServerSettings:
    return ServerSettings.build(**settings_values(build_parser().parse_args(["serve", *argv])))


def test_defaults_are_safe_and_triton_like(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings([])
    assert settings.model_repository == [bundled_repository()]
    assert (settings.http_port, settings.grpc_port, settings.metrics_port) == (8000, 8001, 8002)
    assert {settings.http_address, settings.grpc_address, settings.metrics_address} == {
        "127.0.0.1"}
    assert settings.max_request_bytes == 64 << 20


def test_a_triton_launch_line_parses(tmp_path: Path) -> None:
    settings = _settings([f"--model-repository={tmp_path}", "--http-port=9000",
                          "--grpc-port", "9001", "--metrics-port=9002",
                          "--model-control-mode=explicit", "--load-model=a", "--load-model=b",
                          "--strict-readiness=false", "--exit-timeout-secs=5",
                          "--log-verbose=1"])
    assert settings.model_repository == [tmp_path]
    assert settings.http_port == 9000 and settings.grpc_port == 9001
    assert settings.model_control_mode == "explicit" and settings.load_model == ["a", "b"]
    assert settings.strict_readiness is False and settings.exit_timeout_secs == 5
    assert settings.log_verbose == 1


def test_environment_and_file_with_precedence(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "kiln.yaml"
    config.write_text("http-port: 7000\ngrpc_port: 7001\nlog_verbose: 2\n")
    monkeypatch.setenv("KILN_GRPC_PORT", "7101")
    settings = _settings([f"--config-file={config}", "--log-verbose=0"])
    assert settings.http_port == 7000  # file
    assert settings.grpc_port == 7101  # environment beats file
    assert settings.log_verbose == 0  # command line beats both


def test_invalid_settings_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_HTTP_PORT", "99999")
    with pytest.raises(ConfigError, match="http_port"):
        _settings([])
    with pytest.raises(SystemExit):
        _settings(["--strict-readiness=maybe"])
