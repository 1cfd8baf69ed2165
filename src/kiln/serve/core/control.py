"""Model control: the repository API's operations, for every transport.

Triton's model repository extension (index, load, unload) on the registry. It changes what
is served, so it answers only when the server enables it (``--allow-repository-api``), and
load and unload only in ``explicit`` control mode (as Triton). HTTP and gRPC adapters decode
their requests into these calls and encode what they return::

    control = ModelControl(registry, mode="explicit", enabled=True)
    await control.load("digits", {"config": '{"max_batch_size": 8}'})
    rows = await control.index(ready_only=False)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from kiln.errors import ConfigError, InvalidArgument, NotFound, PermissionDenied
from kiln.proto import model_config_pb2
from kiln.repository.config import ModelConfig, parse_config
from kiln.repository.layout import check_model_name
from kiln.repository.pbtxt import pbtxt_to_dict
from kiln.serve.core.registry import ModelRegistry
from kiln.serve.messages import State

#: Keys only Triton's ModelConfig JSON has (kiln's config names them differently).
_TRITON_KEYS = frozenset({"input", "output", "instance_group", "model_warmup"})
_UNSUPPORTED = frozenset({"sequence_batching", "ensemble_scheduling"})


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One row of the repository index: a model (``version`` empty) or one of its versions."""

    name: str
    version: str = ""
    state: str = ""
    reason: str = ""


class ModelControl:
    """Index, load and unload, with the checks every transport needs."""

    def __init__(self, registry: ModelRegistry, *, mode: str, enabled: bool) -> None:
        self.registry = registry
        self.mode = mode
        self.enabled = enabled

    def _allow(self, operation: str) -> None:
        if not self.enabled:
            raise PermissionDenied(
                f"the repository API ({operation}) is off; start kiln serve with "
                "--allow-repository-api true to enable it")

    def _allow_change(self, operation: str) -> None:
        self._allow(operation)
        if self.mode != "explicit":
            raise InvalidArgument(
                f"cannot {operation} models in model control mode '{self.mode}'; start kiln "
                "serve with --model-control-mode explicit to load and unload through the API")

    async def index(self, *, ready_only: bool = False) -> list[IndexRow]:
        """Every model in the repository or the registry, one row per known version."""
        self._allow("index")
        on_disk = await asyncio.to_thread(self.registry.repository.list)
        rows: list[IndexRow] = []
        for name in sorted(set(on_disk) | set(self.registry.names())):
            rows += self._rows(name)
        if ready_only:
            rows = [r for r in rows if r.state == State.READY.value]
        return rows

    def _rows(self, name: str) -> list[IndexRow]:
        try:
            entry = self.registry.entry(name)
        except NotFound:
            return [IndexRow(name)]  # in the repository, never loaded (Triton shows the name)
        rows = [IndexRow(name, str(s.version), s.state.value, s.reason)
                for s in sorted(entry.status.values(), key=lambda s: s.version)]
        if entry.reason or not rows:
            rows.insert(0, IndexRow(name, "", State.UNAVAILABLE.value, entry.reason))
        return rows

    async def load(self, name: str, parameters: Mapping[str, object] | None = None) -> None:
        """Load or reload ``name``. The ``config`` parameter (JSON) replaces its folder's config
        until the next load. Raises with each version's reason when one of them fails."""
        self._allow_change("load")
        check_model_name(name)
        config = _parameters(parameters, allowed=("config",)).get("config")
        if config is not None and not isinstance(config, str):
            raise InvalidArgument("parameter 'config' must be a string holding the config JSON")
        override = parse_override(name, config) if config is not None else None
        failures = await self.registry.load(name, explicit=True, config=override)
        if failures:
            serving = self.registry.entry(name).ready_versions()
            still = (f"; serving version(s) {', '.join(map(str, serving))}" if serving
                     else "; nothing of it serves")
            raise InvalidArgument(f"failed to load model '{name}': {'; '.join(failures)}{still}")

    async def unload(self, name: str, parameters: Mapping[str, object] | None = None) -> None:
        """Stop serving ``name`` once its in-flight requests have finished."""
        self._allow_change("unload")
        check_model_name(name)
        _parameters(parameters, allowed=("unload_dependents",))  # no ensembles: nothing to do
        await self.registry.unload(name)


def _parameters(parameters: Mapping[str, object] | None, *,
                allowed: tuple[str, ...]) -> Mapping[str, object]:
    for key in parameters or {}:
        if key.startswith("file:"):
            raise InvalidArgument(
                f"parameter '{key[:80]}': kiln does not accept model files through the API; "
                "put the files in the model repository and load the model by name")
        if key not in allowed:
            raise InvalidArgument(f"unknown parameter '{key[:80]}'; this call takes "
                                  f"{', '.join(allowed)}")
    return parameters or {}


def parse_override(name: str, text: str) -> ModelConfig:
    """A config override in JSON: kiln's config.yaml fields, or Triton's ModelConfig JSON
    (recognised by its ``input``/``output``/``instance_group`` fields)."""
    source = f"config override of model '{name}'"
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{source}: expected a JSON object of config fields")
    if unsupported := sorted(_UNSUPPORTED & raw.keys()):
        raise InvalidArgument(f"{source}: field '{unsupported[0]}': kiln does not support it")
    if _TRITON_KEYS & raw.keys():
        message = model_config_pb2.ModelConfig()
        try:
            json_format.ParseDict(raw, message, ignore_unknown_fields=True)
        except (json_format.Error, ValueError, TypeError) as exc:
            raise InvalidArgument(f"{source}: not a valid Triton ModelConfig: {exc}") from None
        raw = pbtxt_to_dict(message, Path(source))
    config = parse_config(raw, source=source)
    if config.name is not None and config.name != name:
        raise ConfigError(f"{source}: field 'name' is '{config.name}', not '{name}'")
    return config

