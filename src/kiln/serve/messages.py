"""What the serving core and the codecs exchange: inference requests and responses, server
and model metadata, version states. Plain data; the layer below both the core and the
codecs, so a codec never imports the core.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from kiln.tensors import TensorDict, TensorSpec

#: Request/response parameters: flat key -> bool | int | float | str.
Parameters = dict[str, Any]


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferenceRequest:
    """Decoded tensors plus what the caller asked for; built by a codec."""

    model_name: str
    inputs: TensorDict
    #: Version number as text, a label, or ``None`` for the default version.
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    #: ``None`` = every output.
    outputs: list[RequestedOutput] | None = None
    #: What the codec needs to encode the answer and the core never reads (e.g. that a TF
    #: Serving request came in row format).
    wire: Any = None


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: TensorDict
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class State(enum.Enum):
    """Where a model version is in its life."""

    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True)
class VersionStatus:
    version: int
    state: State
    reason: str = ""
