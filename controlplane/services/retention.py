"""Retention: what has outlived its time is deleted — expired state entries, ended tasks (with their events
and attempts), audit entries, channels nobody has used for a while and agent instances long disconnected.
Each batch is its own short transaction; a pass goes on until nothing old is left."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from controlplane.store.unit_of_work import Store, UnitOfWork

logger = logging.getLogger(__name__)

BATCH = 500  # rows per transaction (also well under SQLite's limit on bound parameters)


@dataclass(frozen=True)
class Purged:
    state_entries: int
    tasks: int
    audit_entries: int
    channels: int
    instances: int = 0


class Retention:
    def __init__(
        self,
        store: Store,
        *,
        task_retention: float,
        audit_retention: float,
        channel_retention: float = 0.0,
        instance_retention: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Retentions in seconds; 0 keeps everything of that kind. Expired state always goes."""
        self._store = store
        self._task_retention = task_retention
        self._audit_retention = audit_retention
        self._channel_retention = channel_retention
        self._instance_retention = instance_retention
        self._clock = clock

    async def purge(self) -> Purged:
        now = self._clock()
        task_cutoff, audit_cutoff = now - self._task_retention, now - self._audit_retention
        state_entries = await self._drain(lambda uow: uow.state.purge_expired(now=now, limit=BATCH))
        tasks = audit_entries = 0
        if self._task_retention > 0:
            tasks = await self._drain(lambda uow: uow.tasks.purge_ended(ended_before=task_cutoff, limit=BATCH))
        if self._audit_retention > 0:
            audit_entries = await self._drain(lambda uow: uow.audit.purge_before(audit_cutoff, limit=BATCH))
        channels = 0
        if self._channel_retention > 0:
            channel_cutoff = now - self._channel_retention
            channels = await self._drain(lambda uow: uow.channels.purge_unused_since(channel_cutoff, limit=BATCH))
        instances = 0
        if self._instance_retention > 0:
            instance_cutoff = now - self._instance_retention
            instances = await self._drain(
                lambda uow: uow.agents.purge_disconnected_before(instance_cutoff, limit=BATCH)
            )
        if tasks or audit_entries or channels or instances:
            logger.info(
                "retention: deleted %d ended tasks, %d audit entries, %d unused channels and %d agent instances "
                "long disconnected",
                tasks,
                audit_entries,
                channels,
                instances,
            )
        return Purged(state_entries, tasks, audit_entries, channels, instances)

    async def _drain(self, batch: Callable[[UnitOfWork], Awaitable[int]]) -> int:
        """Run `batch` (deleting up to BATCH rows) in transaction after transaction until one deletes fewer."""
        total = 0
        while True:
            async with self._store.transaction() as uow:
                deleted = await batch(uow)
            total += deleted
            if deleted < BATCH:
                return total
