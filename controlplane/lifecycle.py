"""Lifecycles: a status enum, idempotent start/stop, `async with`, and owned background tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from enum import Enum
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")
_uninterruptible: set[asyncio.Task[Any]] = set()

logger = logging.getLogger(__name__)


class Status(Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class Component:
    """Base for long-lived parts: subclasses implement `_start` and `_stop`; `stop()` may be called twice."""

    name: str = "component"

    def __init__(self) -> None:
        self.status = Status.NEW

    async def start(self) -> None:
        if self.status is not Status.NEW:
            raise RuntimeError(f"{self.name} cannot start from status {self.status.value}")
        self.status = Status.STARTING
        try:
            await self._start()
        except BaseException:
            self.status = Status.STOPPED
            await self._stop()
            raise
        self.status = Status.RUNNING

    async def stop(self) -> None:
        if self.status in (Status.STOPPED, Status.NEW):
            self.status = Status.STOPPED
            return
        self.status = Status.STOPPED
        await self._stop()

    @property
    def running(self) -> bool:
        return self.status is Status.RUNNING

    async def _start(self) -> None:
        return None

    async def _stop(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class TaskOwner:
    """Owns background asyncio tasks: keeps references, logs crashes, cancels and awaits them on close."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("background task %s crashed", task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, grace: float = 5.0) -> None:
        """Cancel every task and wait (up to `grace` seconds) for them to finish."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        self._tasks.clear()

    async def join(self, grace: float) -> None:
        """Wait for the tasks to end by themselves; cancel whatever is left after `grace` seconds."""
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                logger.warning(
                    "%s: %d task(s) did not finish within %.1fs; cancelling", self._owner, len(pending), grace
                )
        await self.close()


async def run_to_completion(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` so that cancelling the caller does not interrupt it half-way.

    The caller still sees its cancellation; the work finishes (commit and after-commit effects included)
    in a task kept referenced until done.
    """
    task = asyncio.ensure_future(coroutine)
    _uninterruptible.add(task)
    task.add_done_callback(_uninterruptible.discard)
    return await asyncio.shield(task)


async def settle(grace: float) -> int:
    """Wait up to `grace` seconds for this loop's `run_to_completion` work (commits under way) to end.

    For shutdown, before the database closes. Returns how many are still running after the wait."""
    loop = asyncio.get_running_loop()
    running = [task for task in _uninterruptible if task.get_loop() is loop]
    if not running:
        return 0
    _, pending = await asyncio.wait(running, timeout=grace)
    if pending:
        logger.warning("%d unit(s) of work still running after %.1fs; stopping anyway", len(pending), grace)
    return len(pending)
