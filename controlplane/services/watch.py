"""Wakes task watchers when their task gets new events (from this replica or, via NATS, another)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class WatchHub:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    def notify(self, task_ids: Iterable[str]) -> None:
        for task_id in task_ids:
            for event in self._waiters.get(task_id, ()):
                event.set()

    @contextmanager
    def watch(self, task_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters[task_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[task_id]

    def __len__(self) -> int:
        return sum(len(w) for w in self._waiters.values())
