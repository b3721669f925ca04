"""Getting tasks back from agents and replicas that went away, and from deadlines that passed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from controlplane.clock import wall_clock
from controlplane.domain import lifecycle
from controlplane.domain.tasks import AttemptOutcome, TaskRef, TaskState
from controlplane.lifecycle import run_to_completion
from controlplane.services.effects import Effects
from controlplane.services.transitions import Transition
from controlplane.store.schema import tasks
from controlplane.store.tasks import LiveTask
from controlplane.store.unit_of_work import Store

logger = logging.getLogger(__name__)

SWEEP_BATCH = 500


@dataclass(frozen=True, slots=True)
class Rebound:
    kept: list[TaskRef]
    stale: list[TaskRef]


class RecoveryService:
    def __init__(
        self, store: Store, effects: Effects, *, replica_id: str, clock: Callable[[], float] = wall_clock
    ) -> None:
        self._store = store
        self._effects = effects
        self._replica_id = replica_id
        self._clock = clock

    async def rebind_instance(
        self, *, instance_id: str, session_id: str, held: Sequence[TaskRef], owns_active: bool, actor: str
    ) -> Rebound:
        """A (re)connected instance: keep the attempts it still holds, lose the ones it no longer has.

        `owns_active`: whether the store had assigned or running tasks of this instance when it registered.
        """
        if not held and not owns_active:
            return Rebound([], [])  # the common case, a fresh agent: nothing to keep, nothing to lose
        return await run_to_completion(self._rebind(instance_id, session_id, held, actor))

    async def _rebind(self, instance_id: str, session_id: str, held: Sequence[TaskRef], actor: str) -> Rebound:
        transition = Transition(now=self._clock(), actor=actor)
        kept: list[TaskRef] = []
        stale: list[TaskRef] = []
        async with self._store.transaction() as uow:
            active = await uow.tasks.active_ids_of_instance(instance_id)
            live = await uow.tasks.lock_live({*active, *(ref.task_id for ref in held)})
            held_ids = set()
            for ref in held:
                task = live.get(ref.task_id)
                if task is not None and transition.rebind(
                    task, ref, session_id=session_id, replica_id=self._replica_id
                ):
                    kept.append(ref)
                    held_ids.add(ref.task_id)
                else:
                    stale.append(ref)
            for task_id in active:
                task = live.get(task_id)
                if task is not None and task_id not in held_ids and task.agent_instance_id == instance_id:
                    transition.lose(task, lifecycle.agent_forgot_error(instance_id))
            await uow.tasks.write(transition.writes)
        await self._effects.after_commit(transition.after)
        return Rebound(kept, stale)

    async def requeue_session(self, session_id: str, instance_id: str, *, actor: str) -> int:
        """The session is gone and its lease has expired: its attempts are lost."""
        transition = Transition(now=self._clock(), actor=actor)
        async with self._store.transaction() as uow:
            ids = await uow.tasks.active_ids_of_session(session_id)
            live = await uow.tasks.lock_live(ids)
            for task in live.values():
                if task.session_id == session_id:
                    transition.lose(task, lifecycle.lease_lost_error(instance_id))
            await uow.tasks.write(transition.writes)
        await self._effects.after_commit(transition.after)
        if transition.after.changed:
            logger.info("session %s lost: %d task(s) re-queued or ended", session_id, len(transition.after.changed))
        return len(transition.after.changed)

    async def ended_attempts(self, refs: Sequence[TaskRef]) -> dict[TaskRef, tuple[str, str]]:
        """Which of these attempts the store has ended (the task ended, moved on to another attempt, or is gone),
        each with the agent link's reason code ("cancelled", "timed_out" or "not_held") and, for a cancelled
        task, the canceller's words (as the first cancel carried them)."""
        async with self._store.reader() as uow:
            current = await uow.tasks.attempts_of([ref.task_id for ref in refs])
        ended: dict[TaskRef, tuple[str, str]] = {}
        for ref in refs:
            state, attempt, cancel_reason = current.get(ref.task_id, (None, 0, ""))
            if state is TaskState.CANCELLED:
                ended[ref] = ("cancelled", cancel_reason)
            elif state is TaskState.TIMED_OUT:
                ended[ref] = ("timed_out", "")
            elif state is None or state.is_terminal or state is TaskState.QUEUED or attempt != ref.attempt:
                ended[ref] = ("not_held", "")
        return ended

    async def requeue_orphans(self, live_sessions: Sequence[str], *, older_than: float) -> int:
        """Active tasks of this replica on no live session (a session that closed mid-assignment)."""
        now = self._clock()
        # Which sessions hold such tasks is a short list (an index-only read); the live ones can be many.
        async with self._store.reader() as uow:
            holding = await uow.tasks.sessions_holding_active(self._replica_id, updated_before=older_than)
        orphaned = sorted(holding - set(live_sessions))
        if not orphaned:
            return 0
        condition = sa.and_(
            tasks.c.state.in_([int(TaskState.ASSIGNED), int(TaskState.RUNNING)]),
            tasks.c.replica_id == self._replica_id,
            tasks.c.update_time < older_than,
            tasks.c.session_id.in_(orphaned),
        )
        transition = Transition(now=now, actor=f"replica/{self._replica_id}")
        async with self._store.transaction() as uow:
            for task in await uow.tasks.lock_live_where(condition, limit=SWEEP_BATCH):
                transition.lose(task, lifecycle.lease_lost_error(task.agent_instance_id))
            await uow.tasks.write(transition.writes)
        await self._effects.after_commit(transition.after)
        return len(transition.after.changed)

    async def reap_replicas(self, *, lease_timeout: float) -> int:
        """Replicas silent for longer than the lease: their tasks are lost, their instances disconnected."""
        now = self._clock()
        total = 0
        async with self._store.reader() as uow:
            dead = await uow.replicas.silent_since(now - lease_timeout, exclude=self._replica_id)
        for replica_id in dead:
            while True:
                transition = Transition(now=self._clock(), actor=f"replica/{self._replica_id}")
                condition = sa.and_(
                    tasks.c.state.in_([int(TaskState.ASSIGNED), int(TaskState.RUNNING)]),
                    tasks.c.replica_id == replica_id,
                )
                async with self._store.transaction() as uow:
                    batch = await uow.tasks.lock_live_where(condition, limit=SWEEP_BATCH)
                    for task in batch:
                        transition.lose(task, lifecycle.lease_lost_error(task.agent_instance_id))
                    await uow.tasks.write(transition.writes)
                    if len(batch) < SWEEP_BATCH:
                        await uow.agents.disconnect_replica(replica_id, now=now)
                        await uow.replicas.remove(replica_id)
                await self._effects.after_commit(transition.after)
                total += len(batch)
                if len(batch) < SWEEP_BATCH:
                    break
            logger.warning("replica %s went silent; recovered %d task(s)", replica_id, total)
        return total

    async def time_out(self) -> int:
        """Apply passed deadlines: overall (schedule-to-close), schedule-to-start, and attempt (start-to-close)."""
        now = self._clock()
        async with self._store.hot_transaction(single_statement=True) as hot:
            if not await hot.tasks.deadline_passed(now):
                return 0  # the usual answer, for the price of one autocommitted statement
        active = [int(TaskState.ASSIGNED), int(TaskState.RUNNING)]
        transition = Transition(now=now, actor="system/timeouts")
        async with self._store.transaction() as uow:
            due: dict[str, LiveTask] = {}
            for condition in (
                sa.and_(tasks.c.state.in_([*active, int(TaskState.QUEUED)]), tasks.c.deadline <= now),
                sa.and_(tasks.c.state == int(TaskState.QUEUED), tasks.c.start_deadline <= now),
                sa.and_(tasks.c.state.in_(active), tasks.c.attempt_deadline <= now),
            ):
                for task in await uow.tasks.lock_live_where(condition, limit=SWEEP_BATCH):
                    due.setdefault(task.id, task)  # one object per task, however many deadlines passed
            for task in due.values():
                if task.deadline is not None and task.deadline <= now:
                    transition.time_out(task, lifecycle.schedule_to_close_error(task.timeouts.schedule_to_close))
                elif task.state is TaskState.QUEUED:
                    transition.time_out(task, lifecycle.schedule_to_start_error(task.timeouts.schedule_to_start))
                else:
                    error = lifecycle.attempt_timeout_error(task.timeouts.start_to_close)
                    transition.fail_attempt(task, error, AttemptOutcome.TIMED_OUT)
            await uow.tasks.write(transition.writes)
        await self._effects.after_commit(transition.after)
        return len(transition.after.changed)

    async def heartbeat_timeouts(self, refs: Sequence[TaskRef]) -> int:
        """Attempts whose agent stopped reporting progress/heartbeats within their heartbeat timeout."""
        if not refs:
            return 0
        transition = Transition(now=self._clock(), actor="system/timeouts")
        async with self._store.transaction() as uow:
            live = await uow.tasks.lock_live(ref.task_id for ref in refs)
            for ref in refs:
                task = live.get(ref.task_id)
                if task is not None and transition.is_current(task, ref):
                    error = lifecycle.heartbeat_timeout_error(task.timeouts.heartbeat)
                    transition.fail_attempt(task, error, AttemptOutcome.TIMED_OUT)
            await uow.tasks.write(transition.writes)
        await self._effects.after_commit(transition.after)
        return len(transition.after.changed)
