"""Group commit: concurrent callers' items are flushed together.

A flush starts as soon as nothing else is flushing, so a lone caller is not delayed; while a flush runs,
new items accumulate and go out together in the next one. Items are never split across flushes (a batch
request stays atomic), and `max_items` bounds the size of one flush.

Under concurrent load a flush may wait `linger` for company first: when the previous flush carried more
than one caller's items (others are clearly submitting too), a shallow batch waits until the backlog is
deep or `linger` has passed. A lone caller's flushes never wait (each of its batches holds one item).

Flushes overlap only when the backlog is deep: a further flush starts while others run only once at
least `parallel_weight` is waiting. Small flushes in parallel would each pay a transaction for a handful
of items (and take the CPU the batching was meant to save); big ones in parallel hide the database's
round trips. Batchers that share a `FlushGate` count each other's flushes (the report lanes do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from controlplane.lifecycle import Component, TaskOwner

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class FlushGate:
    """Turns to flush, for the batchers that share it: one at a time, first come first served, unless a
    batcher's backlog is deep enough to overlap (then it goes at once)."""

    def __init__(self, parallel_weight: int) -> None:
        self.parallel_weight = parallel_weight
        self.active = 0
        self._queue: deque[tuple[object, asyncio.Future[None]]] = deque()

    async def enter(self, owner: object, backlog: int) -> None:
        """Wait for a turn; `leave()` when the flush is done."""
        if backlog >= self.parallel_weight or (self.active == 0 and not self._queue):
            self.active += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((owner, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.leave()  # the turn was handed over just as we were cancelled: pass it on
            else:
                self._queue.remove((owner, turn))
            raise

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0:
            self._hand_over(None)

    def deep_backlog(self, owner: object) -> None:
        """`owner` has enough waiting to overlap: its first queued turn starts now."""
        self._hand_over(owner)

    def _hand_over(self, owner: object | None) -> None:
        for entry in self._queue:
            if owner is None or entry[0] is owner:
                self._queue.remove(entry)
                self.active += 1
                entry[1].set_result(None)
                return


class Batcher(Component, Generic[T, R]):
    def __init__(
        self,
        name: str,
        flush: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_items: int,
        weight: Callable[[T], int] = lambda _item: 1,
        concurrency: int = 1,
        gate: FlushGate | None = None,
        max_pending: int = 100_000,
        linger: float = 0.0,
    ) -> None:
        super().__init__()
        self.name = name
        self._flush = flush
        self._max_items = max_items
        self._weight = weight
        self._concurrency = concurrency
        self._gate = gate or FlushGate(parallel_weight=max_items // 4 or 1)
        self._pending: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._pending_weight = 0
        self._max_pending = max_pending
        self._has_items = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._deep = asyncio.Event()  # the backlog reached the gate's parallel weight
        self._linger = linger
        self._last_batch_size = 0
        self._workers = TaskOwner(name)
        self._stopping = False
        self.flushes = 0
        self.items_flushed = 0
        self.flush_seconds = 0.0

    async def _start(self) -> None:
        # One worker flushes whatever is waiting; the others only help with a deep backlog. (Were they
        # all to take shallow batches, each would find the few items left by the last, and a flush of
        # one item makes the next skip its wait for company.)
        for index in range(self._concurrency):
            self._workers.spawn(self._work(helper=index > 0), f"worker-{index}")

    async def _stop(self) -> None:
        # Workers finish what is queued (including flushes in progress), then return.
        self._stopping = True
        self._has_items.set()
        self._deep.set()  # a worker waiting for company goes now
        await self._workers.join(grace=30.0)
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(RuntimeError(f"{self.name} stopped"))

    async def call(self, item: T) -> R:
        """Queue `item` and wait for its result."""
        return await self.enqueue(item)

    def enqueue(self, item: T) -> asyncio.Future[R]:
        """Queue `item`; the future resolves when its flush has committed."""
        if not self.running or self._stopping:
            raise RuntimeError(f"{self.name} is not running")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._pending_weight += self._weight(item)
        if self._pending_weight >= self._max_pending:
            self._has_room.clear()
        self._has_items.set()
        if self._pending_weight >= self._gate.parallel_weight:
            self._deep.set()
            self._gate.deep_backlog(self)
        return future

    async def wait_for_room(self) -> None:
        """Backpressure for producers that do not await their futures."""
        await self._has_room.wait()

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        total = 0
        while self._pending:
            weight = self._weight(self._pending[0][0])
            if batch and total + weight > self._max_items:
                break
            item = self._pending.popleft()
            batch.append(item)
            total += weight
        self._pending_weight -= total
        if self._pending_weight < self._max_pending:
            self._has_room.set()
        if not self._pending:
            self._has_items.clear()
        if self._pending_weight < self._gate.parallel_weight:
            self._deep.clear()
        return batch

    async def _wait_for_company(self) -> None:
        """Under concurrent load, give a shallow batch up to `linger` to grow (see the module doc)."""
        if self._linger <= 0 or self._last_batch_size <= 1 or self._stopping or self._deep.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._linger):
                await self._deep.wait()

    async def _work(self, *, helper: bool) -> None:
        while True:
            if helper:
                await self._deep.wait()
            else:
                await self._has_items.wait()
                await self._wait_for_company()
            await self._gate.enter(self, self._pending_weight)
            batch = self._take()
            if not batch:
                self._gate.leave()
                if self._stopping:
                    self._has_items.set()  # wake the other workers so they exit too
                    self._deep.set()
                    return
                if helper:
                    await asyncio.sleep(0)  # the backlog went to other workers: let them clear `_deep`
                continue
            items = [item for item, _ in batch]
            self._last_batch_size = len(batch)
            started = time.perf_counter()
            try:
                results = await self._flush(items)
            except asyncio.CancelledError:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(RuntimeError(f"{self.name} stopped"))
                raise
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self._gate.leave()
            self.flushes += 1
            self.items_flushed += len(batch)
            self.flush_seconds += time.perf_counter() - started
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
