"""Server settings, typed and built once at the entry point; ``kiln serve``'s options are
generated from them (``kiln.cli.serve``), so every setting is a flag with its help text.

Sources, strongest first: keyword arguments (the CLI), ``KILN_*`` environment variables,
the YAML file named by ``config_file`` (or ``KILN_CONFIG_FILE``), then the defaults below.
Each field's docstring is its help; its ``Cli`` annotation puts it in a group of
``kiln serve --help`` and gives Triton's spelling of its flag where Triton has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kiln.errors import ConfigError
from kiln.repository.config import describe_validation_error

#: The groups of ``kiln serve --help``, in order.
GROUPS = ("models", "HTTP", "gRPC", "metrics", "lifecycle", "limits", "security", "logging")


@dataclass(frozen=True, slots=True)
class Cli:
    """How a setting appears in ``kiln serve``: its ``group`` of the help, its ``flags``
    (default: ``--<field-name>``), and whether it is a ``switch`` (a flag without a value)."""

    group: str
    flags: tuple[str, ...] = ()
    switch: bool = False


def bundled_repository() -> Path:
    """The example model repository shipped inside the package."""
    return Path(str(resources.files("kiln") / "examples" / "model_repository"))


class ServerSettings(BaseSettings):
    """Everything ``kiln serve`` can be told; names follow Triton's flags where they share one."""

    model_config = SettingsConfigDict(env_prefix="KILN_", extra="forbid",
                                      use_attribute_docstrings=True)

    model_repository: Annotated[
        list[Path], Cli("models", flags=("--model-repository", "--model-store"))
    ] = Field(default_factory=lambda: [bundled_repository()])
    """Model repository folder (Triton layout); repeat for several (default: the bundled
    examples)."""
    config_file: Annotated[Path | None, Cli("models")] = None
    """A YAML file of these settings (keys as the option names)."""
    address_file: Annotated[Path | None, Cli("models")] = None
    """Write the bound ports as JSON here once every listener is up ({"http": 8000, ...});
    for supervisors and tests that start kiln on port 0."""

    http_address: Annotated[str, Cli("HTTP")] = "127.0.0.1"
    """Address the HTTP (V2 + TF Serving REST) listener binds."""
    http_port: Annotated[int, Cli("HTTP")] = Field(8000, ge=0, le=65535)
    """HTTP port (0: any free port)."""
    allow_http: Annotated[bool, Cli("HTTP")] = True
    """Serve HTTP at all."""
    http_max_connections: Annotated[int, Cli("HTTP")] = Field(2048, ge=1)
    """Open HTTP connections beyond which new requests get 503 at once."""
    http_header_timeout_s: Annotated[float, Cli("HTTP")] = Field(10.0, gt=0)
    """Time a client has to send a request's line and headers, in seconds."""
    http_body_timeout_s: Annotated[float, Cli("HTTP")] = Field(30.0, gt=0)
    """Longest pause allowed while a request body arrives, in seconds."""

    grpc_address: Annotated[str, Cli("gRPC")] = "127.0.0.1"
    """Address the gRPC listener binds."""
    grpc_port: Annotated[int, Cli("gRPC")] = Field(8001, ge=0, le=65535)
    """gRPC port (0: any free port)."""
    allow_grpc: Annotated[bool, Cli("gRPC")] = True
    """Serve gRPC (KServe V2, Triton's inference.GRPCInferenceService) at all."""
    grpc_max_message_bytes: Annotated[int, Cli("gRPC")] = Field(64 << 20, ge=1024,
                                                                le=(1 << 31) - 1)
    """Largest gRPC message received or sent, in bytes (protobuf's ceiling is 2 GiB)."""

    metrics_address: Annotated[str, Cli("metrics")] = "127.0.0.1"
    """Address the Prometheus metrics listener binds."""
    metrics_port: Annotated[int, Cli("metrics")] = Field(8002, ge=0, le=65535)
    """Metrics port (0: any free port)."""
    allow_metrics: Annotated[bool, Cli("metrics")] = True
    """Serve Prometheus metrics at all (off: no listener, no histograms kept)."""

    model_control_mode: Annotated[Literal["none", "poll", "explicit"], Cli("lifecycle")] = "none"
    """none: load every model at start; poll: follow the repository; explicit: API only."""
    load_model: Annotated[list[str], Cli("lifecycle")] = Field(default_factory=list)
    """A model to load at start in explicit mode ('*' = all); repeat for several."""
    repository_poll_secs: Annotated[float, Cli("lifecycle")] = Field(15.0, gt=0)
    """How often poll mode rescans the repository, in seconds."""
    strict_readiness: Annotated[bool, Cli("lifecycle")] = True
    """Ready only when every model is ready (else: when the server answers)."""
    exit_timeout_secs: Annotated[float, Cli("lifecycle")] = Field(30.0, ge=0)
    """How long shutdown (and an unload) waits for in-flight requests, in seconds."""
    allow_repository_api: Annotated[bool, Cli("lifecycle")] = False
    """Answer the repository API (index, load, unload); it changes what is served, so it is
    off unless enabled (Triton has no such switch)."""

    max_request_bytes: Annotated[
        int, Cli("limits", flags=("--http-max-input-size", "--max-request-bytes"))
    ] = Field(64 << 20, ge=1024)
    """Largest request body, after decompression, in bytes."""
    max_json_depth: Annotated[int, Cli("limits")] = Field(32, ge=2, le=1000)
    """Deepest nesting accepted in a JSON tensor."""
    max_tensor_rank: Annotated[int, Cli("limits")] = Field(32, ge=1, le=64)
    """Largest tensor rank accepted."""
    max_tensor_elements: Annotated[int, Cli("limits")] = Field(1 << 31, ge=1)
    """Most elements a request tensor may declare."""

    keys_file: Annotated[Path | None, Cli("security")] = None
    """API keys file ('kiln keys create'); when set, every endpoint but health needs a key."""
    insecure: Annotated[bool, Cli("security", switch=True)] = False
    """Allow listening beyond loopback without API keys (anyone reaching the port may call)."""
    tls_cert_file: Annotated[Path | None, Cli("security")] = None
    """PEM certificate chain for HTTPS and gRPC over TLS (with --tls-key-file)."""
    tls_key_file: Annotated[Path | None, Cli("security")] = None
    """PEM private key of --tls-cert-file."""
    tls_client_ca_file: Annotated[Path | None, Cli("security")] = None
    """PEM CA bundle: clients must present a certificate it signed (mutual TLS)."""
    model_key_file: Annotated[list[Path], Cli("security")] = Field(default_factory=list)
    """A key file ('kiln keygen') that opens encrypted models; repeat for several, the first
    encrypts."""
    model_key: Annotated[SecretStr | None, Cli("security")] = None
    """Model key lines, comma-separated, instead of a file; prefer the KILN_MODEL_KEY
    variable, as other users of the machine can read a process's arguments."""
    require_manifest: Annotated[bool, Cli("security")] = False
    """Refuse model versions without a manifest.json listing their files' SHA-256."""

    log_verbose: Annotated[int, Cli("logging")] = Field(0, ge=0)
    """0 = info; 1 and above = debug (Triton: --log-verbose)."""
    log_format: Annotated[Literal["text", "json"], Cli("logging")] = "text"
    """Log line format."""
    trace_exporter: Annotated[Literal["none", "console", "otlp"], Cli("logging")] = "none"
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
