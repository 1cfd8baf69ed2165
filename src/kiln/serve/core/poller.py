"""Poll mode: follow the model repository while serving.

Every ``interval_s`` the poller lists the repository and asks the registry to bring each
model in line with its folder. The registry does the work only where something changed
(a published version appeared or went, a version's files or the config changed), so an
idle poll costs a directory listing and a ``stat`` per file. Models whose folder is gone
are unloaded after their in-flight requests finish::

    poller = RepositoryPoller(registry, interval_s=15)
    poller.start()
    ...
    await poller.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kiln.errors import KilnError
from kiln.serve.core.registry import ModelRegistry

log = logging.getLogger("kiln.serve.core.poller")


class RepositoryPoller:
    """A background task that rescans the repository every ``interval_s`` seconds."""

    def __init__(self, registry: ModelRegistry, *, interval_s: float) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kiln-repository-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.scan()
            except Exception as exc:  # a bad scan must not end polling
                log.error("repository poll failed: %s", exc, exc_info=exc)

    async def scan(self) -> None:
        """One pass: load new and changed models, unload those whose folder is gone."""
        try:
            on_disk = await asyncio.to_thread(self.registry.repository.list)
        except (KilnError, OSError) as exc:
            log.error("cannot list the model repository: %s", exc)
            return
        for name in self.registry.names():
            if name not in on_disk:
                log.info("model %s left the repository; unloading it", name)
                await self.registry.remove(name)
        for name in on_disk:
            # Failures are recorded in the registry with their reason; others still load.
            with contextlib.suppress(KilnError, OSError):  # a folder changing under us
                await self.registry.load(name)
