"""Retention: what has outlived its time is deleted — ended tasks (with their events and attempts) and
audit entries. Each batch is its own short transaction; a pass goes on until nothing old is left."""

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
    tasks: int
    audit_entries: int


class Retention:
    def __init__(
        self,
        store: Store,
        *,
        task_retention: float,
        audit_retention: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Retentions in seconds; 0 keeps everything of that kind."""
        self._store = store
        self._task_retention = task_retention
        self._audit_retention = audit_retention
        self._clock = clock

    async def purge(self) -> Purged:
        now = self._clock()
        purged = Purged(
            tasks=await self._drain(self._task_retention, now, _ended_tasks),
            audit_entries=await self._drain(self._audit_retention, now, _audit_entries),
        )
        if purged.tasks or purged.audit_entries:
            logger.info("retention: deleted %d ended tasks and %d audit entries", purged.tasks, purged.audit_entries)
        return purged

    async def _drain(self, retention: float, now: float, batch: Callable[[UnitOfWork, float], Awaitable[int]]) -> int:
        if retention <= 0:
            return 0
        cutoff = now - retention
        total = 0
        while True:
            async with self._store.transaction() as uow:
                deleted = await batch(uow, cutoff)
            total += deleted
            if deleted < BATCH:
                return total


async def _ended_tasks(uow: UnitOfWork, cutoff: float) -> int:
    return await uow.tasks.purge_ended(ended_before=cutoff, limit=BATCH)


async def _audit_entries(uow: UnitOfWork, cutoff: float) -> int:
    return await uow.audit.purge_before(cutoff, limit=BATCH)
