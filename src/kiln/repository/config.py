"""The model configuration schema (``config.yaml``), validated by pydantic.

Every field is optional: what a config leaves out is inferred from the model file
(see ``kiln.repository.autocomplete``). Triton's ``config.pbtxt`` is read into the same
schema by ``kiln.repository.pbtxt``.

    max_batch_size: 32
    dynamic_batching: {max_queue_delay_us: 500}
    instances: {count: 2}
    version_policy: {latest: 2}
    labels: {stable: 1, canary: 2}
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from kiln.errors import ConfigError
from kiln.tensors import DataType

_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")

NonNegative = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorConfig(_Strict):
    """One input or output. ``dims`` leave out the batch dimension when batching is on."""

    name: str
    datatype: DataType
    dims: list[int]
    #: An input the model can run without.
    optional: bool = False

    @field_validator("datatype", mode="before")
    @classmethod
    def _datatype(cls, value: Any) -> Any:
        return DataType.from_any(value) if isinstance(value, str) else value

    @field_serializer("datatype")
    def _datatype_name(self, datatype: DataType) -> str:
        return datatype.v2

    @field_validator("dims")
    @classmethod
    def _dims(cls, dims: list[int]) -> list[int]:
        if any(d < -1 for d in dims):
            raise ValueError("dims must be -1 (any size) or a non-negative size")
        return dims


class DynamicBatchingConfig(_Strict):
    """Merge requests into batches of up to ``max_batch_size`` samples (on by default for
    models with a batch dimension; ``enabled: false`` runs each request alone)."""

    enabled: bool = True
    #: How long the first request of a batch may wait for more, in microseconds.
    max_queue_delay_us: NonNegative = 0
    #: Batch sizes to prefer when more requests wait than fit one batch.
    preferred_batch_sizes: list[Positive] = []
    #: Requests that may wait at once; beyond it they are refused at once
    #: (0 = 2 x max_batch_size x instances, at least 64).
    max_queue_size: NonNegative = 0
    #: Refuse a request at once when the rows waiting would take longer than this to run,
    #: in microseconds (kiln's own; 0 = no such bound). Unset: the time that
    #: ``max_queue_size`` single-row requests take at the speed measured at warm-up, so the
    #: bound only bites when the model runs slower than it did then (e.g. under overload).
    #: Needs inputs of fixed size besides the batch (warm-up timing is not known otherwise).
    max_queue_wait_us: NonNegative | None = None
    #: Queue time after which a request is refused (0 = no limit), in microseconds.
    default_timeout_us: NonNegative = 0
    #: Number of priority levels (0 = one queue); level 1 is served first.
    priority_levels: NonNegative = 0
    #: Level for requests that name no ``priority`` (0 = the middle level).
    default_priority_level: NonNegative = 0


class InstancesConfig(_Strict):
    """How many executions of the model may run at once, and where."""

    count: Positive = 1
    kind: Literal["auto", "cpu", "gpu"] = "auto"
    gpus: list[NonNegative] = []


class VersionPolicy(_Strict):
    """Which versions to serve: the newest ``latest``, ``all``, or ``specific`` ones."""

    latest: Positive | None = None
    all: bool = False
    specific: list[Positive] | None = None

    @model_validator(mode="after")
    def _one_choice(self) -> VersionPolicy:
        chosen = [self.latest is not None, self.all, self.specific is not None]
        if sum(chosen) > 1:
            raise ValueError("choose one of latest, all or specific")
        return self


class OptimizationConfig(_Strict):
    """Runtime settings; ``None`` lets kiln choose from the cores and the instance count."""

    intra_op_threads: NonNegative | None = None
    inter_op_threads: NonNegative | None = None
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    #: Execution providers in order of preference, e.g. [CUDAExecutionProvider].
    execution_providers: list[str] | None = None
    #: Let idle intra-op threads spin. Unset: on, except for models that run on the event
    #: loop (see ``inline_max_us``), beside which spinning threads would take its CPU.
    allow_spinning: bool | None = None
    #: Models whose largest batch runs in less than this (measured at warm-up) run on the
    #: event loop thread: a thread hop would cost more than the model, and the loop is never
    #: held longer than this. 0 = always run on the instance threads.
    inline_max_us: NonNegative = 300


class WarmupConfig(_Strict):
    """Requests run on every instance before the model reports ready."""

    name: str = "warmup"
    batch_size: Positive = 1
    #: Input name -> "zero" or "random"; inputs not named get random data.
    inputs: dict[str, Literal["zero", "random"]] = {}
    count: Positive = 1


class ModelConfig(_Strict):
    """A model's configuration; everything left out is inferred from the model."""

    name: str | None = None
    backend: str | None = None
    platform: str | None = None
    #: The file inside each version folder (default: the backend's, e.g. model.onnx).
    default_model_filename: str | None = None
    #: Largest batch one execution takes; 0 = the model has no batch dimension.
    max_batch_size: NonNegative | None = None
    inputs: list[TensorConfig] | None = None
    outputs: list[TensorConfig] | None = None
    dynamic_batching: DynamicBatchingConfig | None = None
    instances: InstancesConfig = InstancesConfig()
    version_policy: VersionPolicy = VersionPolicy()
    #: Version labels (TF Serving style), e.g. {stable: 1, canary: 2}.
    labels: dict[str, Positive] = {}
    optimization: OptimizationConfig = OptimizationConfig()
    warmup: list[WarmupConfig] = []
    #: Free-form key/values passed to the backend.
    parameters: dict[str, str] = {}

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, int]) -> dict[str, int]:
        for label in labels:
            if not _LABEL.fullmatch(label):
                raise ValueError(f"label '{label[:64]}' must start with a letter and hold only "
                                 "letters, digits, '_', '-' and '.' (a number reads as a version)")
        return labels


def load_yaml_config(path: Path) -> ModelConfig:
    """Read and validate ``config.yaml``; errors name the file, the field and the fix."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields at the top level")
    return parse_config(raw, source=path)


def dump_yaml(config: ModelConfig) -> bytes:
    """``config.yaml`` text: the fields that differ from the defaults."""
    fields = config.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(fields, sort_keys=False).encode()


def parse_config(raw: dict[str, Any], *, source: Path | str) -> ModelConfig:
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, ModelConfig)}") from None


def describe_validation_error(exc: ValidationError, schema: type[BaseModel]) -> str:
    """One line per problem: the dotted field, what is wrong, and a suggestion."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            known = _known_fields(schema, err["loc"][:-1])
            guess = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            hint = f"did you mean '{guess[0]}'?" if guess else f"known fields: {', '.join(known)}"
            lines.append(f"field '{where}' is not a config field; {hint}")
        else:
            lines.append(f"field '{where}': {err['msg']}")
    return "; ".join(lines)


def _known_fields(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    model: Any = schema
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            break
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            inner = getattr(candidate, "__args__", (candidate,))[0]
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                model = inner
                break
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
    return sorted(getattr(model, "model_fields", {}))
