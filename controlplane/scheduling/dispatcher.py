"""Places queued tasks on this replica's live sessions.

Woken by doorbells (a submit or retry on any replica, a freed slot, a new session), it claims due
tasks for the capabilities that have room, binds each to a session, commits, and only then sends
the assignments — several per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from controlplane.domain.tasks import TaskRef
from controlplane.lifecycle import Component, TaskOwner
from controlplane.link.messages import AssignmentMsg
from controlplane.link.registry import SessionRegistry
from controlplane.link.session import AgentSession
from controlplane.scheduling.placement import Placer
from controlplane.services.effects import Effects
from controlplane.services.transitions import Transition
from controlplane.store.unit_of_work import Store

logger = logging.getLogger(__name__)

# Claim a few more rows than there are slots, so tasks that no session here can take (label
# selectors, agent names) do not hide placeable ones behind them.
CLAIM_SLACK = 32


class Dispatcher(Component):
    name = "dispatcher"

    def __init__(
        self,
        store: Store,
        registry: SessionRegistry,
        placer: Placer,
        effects: Effects,
        *,
        replica_id: str,
        batch_max: int,
        poll_interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._store = store
        self._registry = registry
        self._placer = placer
        self._effects = effects
        self._replica_id = replica_id
        self._batch_max = batch_max
        self._poll_interval = poll_interval
        self._clock = clock
        self._wake = asyncio.Event()
        self._next_due: float | None = None
        self._tasks = TaskOwner(self.name)
        self.assigned = 0

    async def _start(self) -> None:
        self._tasks.spawn(self._run(), "loop")

    async def _stop(self) -> None:
        await self._tasks.close()

    def wake(self, at: float | None = None) -> None:
        """Dispatch now, or at wall-clock time `at` (a retry's backoff)."""
        if at is None or at <= self._clock():
            self._wake.set()
        elif self._next_due is None or at < self._next_due:
            self._next_due = at
            self._wake.set()  # re-arm the timer

    async def _run(self) -> None:
        while True:
            timeout = self._poll_interval
            if self._next_due is not None:
                timeout = min(timeout, max(0.0, self._next_due - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if self._next_due is not None and self._next_due <= self._clock():
                self._next_due = None
            try:
                await self.dispatch()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("dispatch failed; retrying shortly")
                await asyncio.sleep(min(1.0, self._poll_interval))

    async def dispatch(self) -> int:
        """Place as much queued work as this replica's sessions have room for."""
        total = 0
        while True:
            room = self._registry.capabilities_with_room()
            if not room:
                return total
            limit = min(sum(room.values()), self._batch_max)
            placed, claimed = await self._dispatch_once(room, limit)
            total += placed
            if placed == 0 or claimed < limit + CLAIM_SLACK:
                return total

    async def _dispatch_once(self, room: dict[str, int], limit: int) -> tuple[int, int]:
        transition = Transition(now=self._clock(), actor=f"replica/{self._replica_id}")
        planned: list[tuple[AgentSession, TaskRef, AssignmentMsg]] = []
        async with self._store.transaction() as uow:
            claimed = await uow.tasks.claim_queued(list(room), now=transition.now, limit=limit + CLAIM_SLACK)
            try:
                for task in claimed:
                    if len(planned) >= limit:
                        break
                    session = self._placer.choose(task, self._registry.candidates(task.capability))
                    if session is None:
                        continue
                    attempt = transition.assign(
                        task,
                        session_id=session.session_id,
                        agent_name=session.agent_name,
                        instance_id=session.instance_id,
                        replica_id=self._replica_id,
                    )
                    ref = TaskRef(task.id, attempt)
                    session.reserve(ref, task.heartbeat_timeout)  # before the next choice sees its room
                    deadline = transition.writes.assigned[-1].attempt_deadline
                    message = AssignmentMsg(
                        task_id=task.id,
                        attempt=attempt,
                        capability=task.capability,
                        input=task.input,
                        priority=task.priority,
                        correlation_id=task.correlation_id,
                        metadata=task.metadata,
                        deadline=deadline,
                        heartbeat_timeout=task.heartbeat_timeout,
                        max_attempts=task.max_attempts,
                        traceparent=task.traceparent,
                        tracestate=task.tracestate,
                    )
                    planned.append((session, ref, message))
                await uow.tasks.write(transition.writes)
            except BaseException:
                for session, ref, _ in planned:
                    session.release(ref)
                raise
        # Committed: now the agents may hear about it (each session's writer coalesces them into frames).
        for session, _, message in planned:
            session.send(message)
        self.assigned += len(planned)
        await self._effects.after_commit(transition.after)
        return len(planned), len(claimed)
