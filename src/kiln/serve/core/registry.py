"""The loaded models and their versions: load, reload, unload, and which version serves.

``load`` brings one model in line with its folder: versions the policy selects are loaded
(and warmed up) when new or changed, and only once a selected version serves are the others
drained and unloaded, so a swap never leaves a gap and a broken new version leaves the old
one serving. Failures are recorded per version with their reason. A version being replaced
stops receiving requests at once; the requests it already has finish on it before its
session is freed::

    registry = ModelRegistry(ModelRepository([path]), BackendTable(), require_marker=True)
    failures = await registry.load("digits")    # [] or ["version 3: <reason>", ...]
    model = registry.get("digits", "stable")     # a number, a label or None (newest)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kiln.errors import KilnError, NotFound, Unavailable
from kiln.repository.config import ModelConfig, VersionPolicy
from kiln.repository.layout import ModelRepository, ModelSource, check_model_name
from kiln.repository.publish import PublishCheck
from kiln.runtime import BackendTable
from kiln.serve.core.model import ModelVersion
from kiln.serve.messages import State, VersionStatus

log = logging.getLogger("kiln.serve.core.registry")

_NUMBER = re.compile(r"[0-9]{1,18}")


@dataclass(slots=True)
class ModelEntry:
    """Everything the registry knows about one model name."""

    name: str
    source: ModelSource | None = None
    loaded: dict[int, ModelVersion] = field(default_factory=dict)
    status: dict[int, VersionStatus] = field(default_factory=dict)
    #: A failure that concerns the model as a whole (bad config, no versions, unloaded).
    reason: str = ""
    #: Whether the model should be served (False once unloaded through the API).
    wanted: bool = True
    #: A config given with an explicit load, used instead of the folder's.
    override: ModelConfig | None = None
    #: What each version was last loaded from (files and config): unchanged, not reloaded.
    tried: dict[int, tuple[Any, ...] | None] = field(default_factory=dict)

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


def _model_reason(has_versions: bool, serves: bool) -> str:
    if serves:
        return ""
    if not has_versions:
        return "no version folder (a positive integer name) holds a model"
    return "no version can be served; see each version's reason"


def _load_key(config: ModelConfig) -> dict[str, Any]:
    """The parts of a config that need a reload when they change (labels and policy don't)."""
    return config.model_dump(exclude={"labels", "version_policy"})


class ModelRegistry:
    """Holds loaded model versions; the data plane asks it which version serves a request."""

    def __init__(self, repository: ModelRepository, backends: BackendTable, *,
                 require_marker: bool = False, drain_timeout_s: float = 30.0,
                 histograms: bool = False) -> None:
        self.repository = repository
        #: The backends model configs may name (``backend:``); the default one otherwise.
        self.backends = backends
        self.drain_timeout_s = drain_timeout_s
        self._published = PublishCheck(require_marker=require_marker)
        #: Whether loaded versions keep the histograms the metrics exporter reports.
        self.histograms = histograms
        self._models: dict[str, ModelEntry] = {}
        self._lock = asyncio.Lock()

    def names(self) -> list[str]:
        return sorted(self._models)

    def entry(self, name: str) -> ModelEntry:
        try:
            return self._models[name]
        except KeyError:
            raise NotFound(f"unknown model '{name[:128]}'") from None

    async def load(self, name: str, *, explicit: bool = False,
                   config: ModelConfig | None = None) -> list[str]:
        """Bring ``name`` in line with the repository; returns this call's failures.

        ``explicit`` (an operator's request) also retries versions that failed before and
        replaces the config override with ``config`` (``None``: the folder's config).
        Raises only when the model's folder cannot be read.
        """
        check_model_name(name)
        async with self._lock:
            entry = self._models.get(name)
            try:
                source = await asyncio.to_thread(self.repository.find, name)
            except KilnError as exc:
                if entry is not None or not isinstance(exc, NotFound):
                    entry = self._models.setdefault(name, ModelEntry(name))
                    self._note(entry, exc.message)
                raise
            entry = self._models.setdefault(name, ModelEntry(name))
            entry.wanted = True
            if explicit:
                entry.override = config
            if entry.override is not None:
                source = dataclasses.replace(source, config=entry.override)
            return await self._reconcile(entry, source, retry=explicit)

    async def _reconcile(self, entry: ModelEntry, source: ModelSource, *,
                         retry: bool) -> list[str]:
        entry.source = source
        verdicts = await asyncio.to_thread(
            lambda: {v: self._published(source.version_path(v), source.path)
                     for v in source.versions})
        policy = source.config.version_policy
        publishable = {v for v, (_, reason) in verdicts.items() if reason is None}
        # A loaded version whose files changed without being published again keeps serving.
        wanted = select_versions(policy, publishable | (set(entry.loaded) & set(verdicts)))
        failures = self._mark_unpublished(entry, verdicts, select_versions(policy, verdicts))
        for version in wanted:
            if version not in publishable:
                continue
            key = (verdicts[version][0], _load_key(source.config))
            status = entry.status.get(version)
            failed = status is not None and status.reason != ""
            changed = entry.tried.get(version) != key or (retry and failed)
            if changed and (error := await self._load_version(entry, source, version, key)):
                failures.append(f"version {version}: {error}")
        if any(v in entry.loaded for v in wanted):
            await self._unload_versions(entry, [v for v in entry.loaded if v not in wanted])
        for version in [v for v in entry.status if v not in verdicts and v not in entry.loaded]:
            del entry.status[version]
            entry.tried.pop(version, None)
        self._note(entry, _model_reason(bool(verdicts), bool(wanted or entry.loaded)))
        return failures

    @staticmethod
    def _mark_unpublished(entry: ModelEntry, verdicts: dict[int, tuple[Any, str | None]],
                          newest: list[int]) -> list[str]:
        """Record why unpublished versions wait; those the policy would pick are failures."""
        failures = []
        for version, (_, reason) in verdicts.items():
            if reason is not None and version not in entry.loaded:
                if getattr(entry.status.get(version), "reason", None) != reason:
                    log.info("model %s version %d is not loaded: %s", entry.name, version, reason)
                entry.status[version] = VersionStatus(version, State.UNAVAILABLE, reason)
                if version in newest:
                    failures.append(f"version {version}: {reason}")
        return failures

    def _note(self, entry: ModelEntry, reason: str) -> None:
        if reason and reason != entry.reason:
            log.error("model %s: %s", entry.name, reason)
        entry.reason = reason

    async def _load_version(self, entry: ModelEntry, source: ModelSource, version: int,
                            key: tuple[Any, ...] | None) -> str:
        """Load (or reload) one version; returns the reason it failed, or ``""``."""
        previous = entry.loaded.get(version)
        if previous is None:
            entry.status[version] = VersionStatus(version, State.LOADING)
        entry.tried[version] = key
        try:
            loaded = await asyncio.to_thread(self._load, source, version)
        except Exception as exc:  # a broken model must never take the server down
            reason = exc.message if isinstance(exc, KilnError) else f"{type(exc).__name__}: {exc}"
            log.error("model %s version %d failed to load: %s", entry.name, version, reason)
            entry.status[version] = (
                VersionStatus(version, State.UNAVAILABLE, reason) if previous is None else
                VersionStatus(version, State.READY, f"reload failed, the earlier load serves: "
                                                    f"{reason}"))
            return reason
        entry.loaded[version] = loaded
        entry.status[version] = VersionStatus(version, State.READY)
        if previous is not None:
            await self._retire(entry.name, previous)
        return ""

    def _load(self, source: ModelSource, version: int) -> ModelVersion:
        config = source.config
        backend = self.backends.get(config.backend or config.platform)
        return ModelVersion.load(source, version, backend=backend, histograms=self.histograms)

    async def _unload_versions(self, entry: ModelEntry, versions: list[int]) -> None:
        """Stop handing the versions out at once, then let their requests finish."""
        retiring = []
        for version in versions:
            entry.status[version] = VersionStatus(version, State.UNLOADING)
            retiring.append(entry.loaded.pop(version))
        await asyncio.gather(*(self._retire(entry.name, model) for model in retiring))
        for version in versions:
            entry.status.pop(version, None)
            entry.tried.pop(version, None)

    async def _retire(self, name: str, model: ModelVersion) -> None:
        if not await model.drain(self.drain_timeout_s):
            log.warning("model %s version %d: requests still queued or running after %.1f s; "
                        "failing them", name, model.version, self.drain_timeout_s)
        await model.close()
        log.info("model %s version %d unloaded", name, model.version)

    async def unload(self, name: str) -> None:
        """Stop serving ``name``; its in-flight requests finish first. Kept in the index."""
        async with self._lock:
            entry = self.entry(name)
            entry.wanted, entry.override = False, None
            await self._unload_versions(entry, list(entry.loaded))
            entry.status.clear()
            entry.tried.clear()
            entry.reason = "unloaded"

    async def remove(self, name: str) -> None:
        """Unload ``name`` and forget it (its folder left the repository)."""
        await self.unload(name)
        self._models.pop(name, None)

    async def close(self) -> None:
        """Unload everything at once (shutdown drains the data plane before this)."""
        self.drain_timeout_s = 0
        for name in self.names():
            await self.remove(name)

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """The version serving a request: a number, a label, or ``None`` for the newest ready."""
        entry = self.entry(name)
        if not entry.wanted:
            raise NotFound(f"model '{name}' is not loaded ({entry.reason})")
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
        if _NUMBER.fullmatch(version):
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
        """Every model that should be served has a ready version (failed or loading newer
        versions do not count against a model that serves)."""
        return all(e.ready_versions() for e in self._models.values() if e.wanted)
