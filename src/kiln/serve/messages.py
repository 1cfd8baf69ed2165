"""Transport-neutral inference requests and responses, as the data plane sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kiln.tensors import TensorDict

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


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: TensorDict
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
