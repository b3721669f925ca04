"""The orphan sweep: active tasks of this replica whose session is gone go back to the queue."""

from __future__ import annotations

import time

import pytest

from controlplane.domain.tasks import TaskState
from controlplane.services.recovery import RecoveryService
from controlplane.services.transitions import AfterCommit, Transition
from controlplane.store.unit_of_work import Store
from tests.support.tasks import actors, new_task

pytestmark = pytest.mark.timeout(60)


class _Effects:
    def __init__(self) -> None:
        self.changed: set[str] = set()

    async def after_commit(self, after: AfterCommit) -> None:
        self.changed |= after.changed


async def _assign(store: Store, sessions: list[str], *, now: float) -> list[str]:
    """Queue one task per session and assign each to its session on replica r1 at `now`."""
    queued = [new_task(now=now - 1) for _ in sessions]
    async with store.hot_transaction() as hot:
        await hot.tasks.insert(queued, actors=actors(queued))
    transition = Transition(now=now, actor="test")
    async with store.hot_transaction() as hot:
        claimed = {c.id: c for c in await hot.tasks.claim_queued("cap.a", now=now, limit=len(queued))}
        for task, session_id in zip(queued, sessions, strict=True):
            transition.assign(
                claimed[task.id], session_id=session_id, agent_name="w", instance_id=f"i-{session_id}", replica_id="r1"
            )
        await hot.tasks.write(transition.writes)
    return [t.id for t in queued]


async def _state(store: Store, task_id: str) -> TaskState:
    async with store.reader() as uow:
        task = await uow.tasks.get(task_id)
    assert task is not None
    return task.state


async def test_only_old_tasks_on_sessions_that_are_gone_are_requeued(store: Store) -> None:
    now = time.time()
    old_live, old_gone = await _assign(store, ["s-live", "s-gone"], now=now - 60)
    [recent_gone] = await _assign(store, ["s-gone-recently"], now=now)
    effects = _Effects()
    recovery = RecoveryService(store, effects, replica_id="r1", clock=lambda: now)

    assert await recovery.requeue_orphans(["s-live"], older_than=now - 30) == 1

    assert effects.changed == {old_gone}
    assert await _state(store, old_gone) is TaskState.QUEUED, "lost attempt, retried"
    assert await _state(store, old_live) is TaskState.ASSIGNED
    assert await _state(store, recent_gone) is TaskState.ASSIGNED, "within the lease: the agent may come back"
    assert await recovery.requeue_orphans(["s-live"], older_than=now - 30) == 0, "nothing left to sweep"


async def test_another_replicas_tasks_are_not_this_replicas_orphans(store: Store) -> None:
    now = time.time()
    [task_id] = await _assign(store, ["s-elsewhere"], now=now - 60)
    recovery = RecoveryService(store, _Effects(), replica_id="r2", clock=lambda: now)
    assert await recovery.requeue_orphans([], older_than=now - 30) == 0
    assert await _state(store, task_id) is TaskState.ASSIGNED
