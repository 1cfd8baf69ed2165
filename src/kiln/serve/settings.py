"""Server settings, typed and built once at the entry point.

Sources, strongest first: keyword arguments (the CLI), ``KILN_*`` environment variables,
the YAML file named by ``config_file`` (or ``KILN_CONFIG_FILE``), then the defaults below.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kiln.errors import ConfigError
from kiln.serve.repository.config import describe_validation_error


def bundled_repository() -> Path:
    """The example model repository shipped inside the package."""
    return Path(str(resources.files("kiln") / "examples" / "model_repository"))


class ServerSettings(BaseSettings):
    """Everything ``kiln serve`` can be told; names follow Triton's flags where they share one."""

    model_config = SettingsConfigDict(env_prefix="KILN_", extra="forbid",
                                      use_attribute_docstrings=True)

    model_repository: list[Path] = Field(default_factory=lambda: [bundled_repository()])
    """Model repository folders (Triton layout)."""
    config_file: Path | None = None
    """A YAML file of these settings."""

    http_address: str = "127.0.0.1"
    """Address the HTTP (V2 + TF Serving REST) listener binds."""
    http_port: int = Field(8000, ge=0, le=65535)
    """HTTP port."""
    allow_http: bool = True
    """Serve HTTP at all."""
    grpc_address: str = "127.0.0.1"
    """Address the gRPC listener binds."""
    grpc_port: int = Field(8001, ge=0, le=65535)
    """gRPC port."""
    allow_grpc: bool = True
    """Serve gRPC (KServe V2, Triton's inference.GRPCInferenceService) at all."""
    grpc_max_message_bytes: int = Field(64 << 20, ge=1024, le=(1 << 31) - 1)
    """Largest gRPC message received or sent, in bytes (protobuf's ceiling is 2 GiB)."""
    metrics_address: str = "127.0.0.1"
    """Address the Prometheus metrics listener binds."""
    metrics_port: int = Field(8002, ge=0, le=65535)
    """Metrics port."""
    allow_metrics: bool = True
    """Serve Prometheus metrics at all (off: no listener, no histograms kept)."""

    model_control_mode: Literal["none", "poll", "explicit"] = "none"
    """none: load every model at start; poll: follow the repository; explicit: API only."""
    load_model: list[str] = []
    """Models to load at start in explicit mode ('*' = all)."""
    repository_poll_secs: float = Field(15.0, gt=0)
    """How often poll mode rescans the repository, in seconds."""
    strict_readiness: bool = True
    """Ready only when every model is ready (else: when the server answers)."""
    exit_timeout_secs: float = Field(30.0, ge=0)
    """How long shutdown (and an unload) waits for in-flight requests, in seconds."""
    allow_repository_api: bool = False
    """Answer the repository API (index, load, unload); it changes what is served, so it is
    off unless enabled (Triton has no such switch)."""

    http_max_connections: int = Field(2048, ge=1)
    """Concurrent HTTP connections and requests; beyond it new ones get 503 at once."""
    max_request_bytes: int = Field(64 << 20, ge=1024)
    """Largest request body, after decompression, in bytes (Triton: --http-max-input-size)."""
    max_json_depth: int = Field(32, ge=2, le=1000)
    """Deepest nesting accepted in a JSON tensor."""
    max_tensor_rank: int = Field(32, ge=1, le=64)
    """Largest tensor rank accepted."""
    max_tensor_elements: int = Field(1 << 31, ge=1)
    """Most elements a request tensor may declare."""

    keys_file: Path | None = None
    """API keys file ('kiln keys create'); when set, every endpoint but health needs a key."""
    insecure: bool = False
    """Allow listening beyond loopback without API keys (anyone reaching the port may call)."""
    tls_cert_file: Path | None = None
    """PEM certificate chain for HTTPS and gRPC over TLS (with tls_key_file)."""
    tls_key_file: Path | None = None
    """PEM private key of tls_cert_file."""
    tls_client_ca_file: Path | None = None
    """PEM CA bundle: clients must present a certificate it signed (mutual TLS)."""
    model_key_file: list[Path] = []
    """Key files ('kiln keygen') that open encrypted models; the first encrypts."""
    model_key: SecretStr | None = None
    """Model key lines, comma-separated, instead of a file (env KILN_MODEL_KEY)."""
    require_manifest: bool = False
    """Refuse model versions without a manifest.json listing their files' SHA-256."""
    http_header_timeout_s: float = Field(10.0, gt=0)
    """Time a client has to send a request's line and headers, in seconds."""
    http_body_timeout_s: float = Field(30.0, gt=0)
    """Longest pause allowed while a request body arrives, in seconds."""

    log_verbose: int = Field(0, ge=0)
    """0 = info; 1 and above = debug (Triton: --log-verbose)."""
    log_format: Literal["text", "json"] = "text"
    """Log line format."""
    trace_exporter: Literal["none", "console", "otlp"] = "none"
    """OpenTelemetry spans per inference request: console = JSON lines on stdout, otlp =
    OTLP/HTTP per the OTEL_EXPORTER_OTLP_* variables (needs the 'otel' extra)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))

    @classmethod
    def build(cls, **values: Any) -> ServerSettings:
        """Settings from the given values, the environment and the config file."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(
                f"invalid server settings: {describe_validation_error(exc, cls)}"
            ) from None


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the YAML settings file named by the stronger sources' ``config_file``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("config_file")
        if not path:
            return {}
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"settings file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"settings file {path}: expected a mapping of setting names")
        return {key.replace("-", "_"): value for key, value in data.items()}
