"""The loaded models and their versions: load, unload, and which version serves a request.

A model's new versions are loaded before the ones they replace are unloaded, so there is
always a version serving while a swap happens; a version that fails to load leaves the
serving ones in place and records the reason.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from kiln.errors import KilnError, NotFound, Unavailable
from kiln.serve.model import ModelVersion
from kiln.serve.repository.config import VersionPolicy
from kiln.serve.repository.layout import ModelRepository, ModelSource

log = logging.getLogger("kiln.serve.registry")


class State(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True)
class VersionStatus:
    version: int
    state: State
    reason: str = ""


@dataclass(slots=True)
class ModelEntry:
    """Everything the registry knows about one model name."""

    name: str
    source: ModelSource | None = None
    loaded: dict[int, ModelVersion] = field(default_factory=dict)
    status: dict[int, VersionStatus] = field(default_factory=dict)
    #: A failure that concerns the model as a whole (bad config, no versions).
    reason: str = ""

    def ready_versions(self) -> list[int]:
        return sorted(v for v, s in self.status.items()
                      if s.state is State.READY and v in self.loaded)


def select_versions(policy: VersionPolicy, available: Iterable[int]) -> list[int]:
    """The on-disk versions a version policy serves (Triton semantics; default latest 1)."""
    versions = sorted(available)
    if policy.all:
        return versions
    if policy.specific is not None:
        return [v for v in versions if v in set(policy.specific)]
    return versions[-(policy.latest or 1):]


class ModelRegistry:
    """Holds loaded model versions; the data plane asks it which version serves a request."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository
        self._models: dict[str, ModelEntry] = {}
        self._lock = asyncio.Lock()

    def names(self) -> list[str]:
        return sorted(self._models)

    def entry(self, name: str) -> ModelEntry:
        try:
            return self._models[name]
        except KeyError:
            raise NotFound(f"unknown model '{name[:128]}'") from None

    async def load(self, name: str) -> ModelEntry:
        """(Re)load ``name`` from the repository per its version policy; never raises for a bad
        version, but records why it failed. Raises when the model itself cannot be read."""
        async with self._lock:
            entry = self._models.setdefault(name, ModelEntry(name))
            try:
                source = await asyncio.to_thread(self.repository.find, name)
            except KilnError as exc:
                entry.reason = exc.message
                log.error("model %s cannot be read: %s", name, exc.message)
                raise
            entry.source, entry.reason = source, ""
            wanted = select_versions(source.config.version_policy, source.versions)
            if not wanted:
                entry.reason = "no version folder (a positive integer name) holds a model"
                log.error("model %s: %s", name, entry.reason)
            for version in wanted:
                await self._load_version(entry, source, version)
            for version in [v for v in entry.loaded if v not in wanted]:
                await self._unload_version(entry, version)
            return entry

    async def _load_version(self, entry: ModelEntry, source: ModelSource, version: int) -> None:
        entry.status[version] = VersionStatus(version, State.LOADING)
        try:
            loaded = await asyncio.to_thread(ModelVersion.load, source, version)
        except Exception as exc:  # a broken model must never take the server down
            reason = exc.message if isinstance(exc, KilnError) else f"{type(exc).__name__}: {exc}"
            entry.status[version] = VersionStatus(version, State.UNAVAILABLE, reason)
            log.error("model %s version %d failed to load: %s", entry.name, version, reason)
            return
        previous = entry.loaded.get(version)
        entry.loaded[version] = loaded
        entry.status[version] = VersionStatus(version, State.READY)
        if previous is not None:
            await asyncio.to_thread(previous.close)

    async def _unload_version(self, entry: ModelEntry, version: int) -> None:
        entry.status[version] = VersionStatus(version, State.UNLOADING)
        loaded = entry.loaded.pop(version)
        await asyncio.to_thread(loaded.close)
        del entry.status[version]

    async def unload(self, name: str) -> None:
        async with self._lock:
            entry = self.entry(name)
            for version in list(entry.loaded):
                await self._unload_version(entry, version)
            del self._models[name]

    async def close(self) -> None:
        for name in self.names():
            await self.unload(name)

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """The version serving a request: a number, a label, or ``None`` for the newest ready."""
        entry = self.entry(name)
        if version is None or version == "":
            ready = entry.ready_versions()
            if not ready:
                raise Unavailable(f"model '{name}' has no ready version"
                                  + (f": {entry.reason}" if entry.reason else ""))
            return entry.loaded[ready[-1]]
        number = self._resolve(entry, version)
        status = entry.status.get(number)
        if status is None:
            raise NotFound(f"model '{name}' has no version {number}")
        if status.state is not State.READY or number not in entry.loaded:
            detail = f": {status.reason}" if status.reason else ""
            raise Unavailable(f"model '{name}' version {number} is {status.state.value}{detail}")
        return entry.loaded[number]

    def resolve(self, name: str, version: str) -> int:
        """The version number ``version`` names: itself when numeric, else its label's target."""
        return self._resolve(self.entry(name), version)

    @staticmethod
    def _resolve(entry: ModelEntry, version: str) -> int:
        if version.isdigit():
            return int(version)
        labels = entry.source.config.labels if entry.source else {}
        if version in labels:
            return labels[version]
        raise NotFound(f"model '{entry.name}' has no version or label '{version[:64]}'")

    def is_ready(self, name: str, version: str | None = None) -> bool:
        try:
            self.get(name, version)
        except KilnError:
            return False
        return True

    def all_ready(self) -> bool:
        """Every model that should be loaded has every wanted version ready."""
        return all(
            not e.reason and e.status and all(s.state is State.READY for s in e.status.values())
            for e in self._models.values()
        )
