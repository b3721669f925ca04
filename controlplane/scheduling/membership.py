"""Agent instances connected to the other replicas, so that consistent hashing picks the same instance for
a routing key whichever replica places the task.

A copy of what the database says (instances connected to live replicas), read when a placement needs it
and the copy is older than `max_age` or another replica announced a new session. A stale copy only
delays or moves a sticky task for that long; it never loses one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from controlplane.clock import wall_clock
from controlplane.domain.agents import RemoteInstance
from controlplane.store.unit_of_work import Store


class RemoteInstances:
    def __init__(
        self,
        store: Store,
        *,
        replica_id: str,
        max_age: float,
        lease_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = wall_clock,
    ) -> None:
        self._store = store
        self._replica_id = replica_id
        self._max_age = max_age
        self._lease_timeout = lease_timeout
        self._clock = clock
        self._wall_clock = wall_clock
        self._by_capability: dict[str, list[RemoteInstance]] = {}
        self._read_at = -math.inf
        self._generation = 0  # bumped by invalidate(): a read that began before it does not count
        self._lock = asyncio.Lock()
        self.reads = 0

    def invalidate(self) -> None:
        """Another replica has a new session: read again before the next sticky placement."""
        self._generation += 1
        self._read_at = -math.inf

    async def serving(self, capability: str) -> list[RemoteInstance]:
        """Instances on other replicas serving `capability` (read first if the copy is too old)."""
        if self._clock() - self._read_at > self._max_age:
            async with self._lock:
                if self._clock() - self._read_at > self._max_age:
                    await self._read()
        return self._by_capability.get(capability, [])

    async def _read(self) -> None:
        started, generation = self._clock(), self._generation
        async with self._store.reader() as uow:
            instances = await uow.agents.connected_elsewhere(
                replica_id=self._replica_id, replicas_seen_since=self._wall_clock() - self._lease_timeout
            )
        by_capability: dict[str, list[RemoteInstance]] = {}
        for instance in instances:
            for capability in instance.capabilities:
                by_capability.setdefault(capability, []).append(instance)
        self._by_capability = by_capability
        self._read_at = started if generation == self._generation else -math.inf
        self.reads += 1
