"""Retention on both stores: ended tasks (with their events and attempts), audit entries, channels and agent
instances past their time are deleted, a batch per transaction until none is left; nothing live or recent is touched."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from controlplane.domain.agents import Capability, InstanceStatus, Registration
from controlplane.domain.audit import AuditEntry
from controlplane.domain.tasks import TaskState
from controlplane.ids import lowest_id_at, new_id
from controlplane.services import retention as retention_module
from controlplane.services.retention import Retention
from controlplane.store.agents import Connected
from controlplane.store.schema import agent_instances, audit_events, channels, task_attempts, task_events, tasks
from controlplane.store.unit_of_work import Store
from tests.support.tasks import actors, new_task

pytestmark = pytest.mark.timeout(120)

DAY = 86_400.0


async def _insert(store: Store, count: int, *, key: str = "") -> list[str]:
    created = [new_task(key=f"{key}-{i}" if key else "") for i in range(count)]
    async with store.hot_transaction() as hot:
        await hot.tasks.insert(created, actors=actors(created))
    return [t.id for t in created]


async def _end(store: Store, ids: list[str], *, state: TaskState, at: float) -> None:
    """Mark tasks ended at `at`, each with one attempt (as the plane leaves them)."""
    async with store.transaction() as uow:
        await uow.connection.execute(tasks.update().where(tasks.c.id.in_(ids)).values(state=int(state), end_time=at))
        await uow.connection.execute(
            task_attempts.insert(),
            [
                {
                    "task_id": task_id,
                    "attempt": 1,
                    "agent_name": "a",
                    "agent_instance_id": "i",
                    "session_id": "s",
                    "outcome": 1,
                    "assign_time": at - 1,
                    "end_time": at,
                }
                for task_id in ids
            ],
        )


async def _count(store: Store, table: sa.Table, column: sa.Column[str], ids: list[str]) -> int:
    async with store.reader() as uow:
        return int(await uow.connection.scalar(sa.select(sa.func.count()).select_from(table).where(column.in_(ids))))


def test_lowest_id_at_sorts_below_every_id_made_from_that_moment() -> None:
    before = lowest_id_at(time.time())
    made = new_id()
    assert before < made
    assert made < lowest_id_at(time.time() + 0.01)
    assert len(before) == len(made) == 26


async def test_ended_tasks_past_retention_go_with_their_events_and_attempts(store: Store) -> None:
    now = time.time()
    old_ended = await _insert(store, 3)
    recently_ended = await _insert(store, 2)
    queued = await _insert(store, 2)
    running = await _insert(store, 1)
    await _end(store, old_ended[:2], state=TaskState.SUCCEEDED, at=now + 10)
    await _end(store, old_ended[2:], state=TaskState.DEAD_LETTER, at=now + 10)
    await _end(store, recently_ended, state=TaskState.FAILED, at=now + 100)
    async with store.transaction() as uow:
        await uow.connection.execute(tasks.update().where(tasks.c.id.in_(running)).values(state=int(TaskState.RUNNING)))

    # A week's retention, a week and 50 seconds later: ended at +10 is past it, ended at +100 is not.
    purged = await Retention(store, task_retention=7 * DAY, audit_retention=0, clock=lambda: now + 7 * DAY + 50).purge()

    assert purged.tasks == 3
    assert await _count(store, tasks, tasks.c.id, old_ended) == 0
    assert await _count(store, task_events, task_events.c.task_id, old_ended) == 0
    assert await _count(store, task_attempts, task_attempts.c.task_id, old_ended) == 0
    kept = recently_ended + queued + running
    assert await _count(store, tasks, tasks.c.id, kept) == len(kept)
    assert await _count(store, task_events, task_events.c.task_id, kept) == len(kept)  # their CREATED events
    assert await _count(store, task_attempts, task_attempts.c.task_id, recently_ended) == 2


async def test_a_purged_tasks_idempotency_key_can_be_used_again(store: Store) -> None:
    now = time.time()
    ids = await _insert(store, 1, key="once")
    await _end(store, ids, state=TaskState.SUCCEEDED, at=now)
    await Retention(store, task_retention=DAY, audit_retention=0, clock=lambda: now + 2 * DAY).purge()
    async with store.hot_transaction() as hot:
        assert await hot.tasks.find_by_idempotency_keys(["once-0"]) == {}
    assert len(await _insert(store, 1, key="once")) == 1


async def test_a_pass_deletes_batch_after_batch_until_nothing_old_is_left(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_module, "BATCH", 7)
    now = time.time()
    ids = await _insert(store, 30)
    await _end(store, ids, state=TaskState.CANCELLED, at=now)
    purged = await Retention(store, task_retention=DAY, audit_retention=0, clock=lambda: now + 2 * DAY).purge()
    assert purged.tasks == 30
    assert await _count(store, tasks, tasks.c.id, ids) == 0


async def test_audit_entries_past_retention_are_deleted(store: Store) -> None:
    now = time.time()
    async with store.transaction() as uow:
        await uow.audit.record_many(
            [
                AuditEntry("client/a", "state.put", "old/1", now - 91 * DAY),
                AuditEntry("client/a", "state.put", "old/2", now - 90 * DAY - 1),
                AuditEntry("client/a", "state.put", "new/1", now - 89 * DAY),
                AuditEntry("client/a", "state.put", "new/2", now),
            ]
        )
    purged = await Retention(store, task_retention=0, audit_retention=90 * DAY, clock=lambda: now).purge()
    assert purged.audit_entries == 2
    async with store.reader() as uow:
        left = await uow.connection.scalars(sa.select(audit_events.c.resource).order_by(audit_events.c.id))
        assert list(left) == ["new/1", "new/2"]


async def test_a_zero_retention_keeps_everything(store: Store) -> None:
    now = time.time()
    ids = await _insert(store, 2)
    await _end(store, ids, state=TaskState.SUCCEEDED, at=now - 365 * DAY)
    async with store.transaction() as uow:
        await uow.audit.record_many([AuditEntry("client/a", "state.put", "ancient", now - 365 * DAY)])
        await uow.channels.touch(["ancient"], now=now - 365 * DAY)
    purged = await Retention(store, task_retention=0, audit_retention=0, clock=lambda: now).purge()
    assert (purged.tasks, purged.audit_entries, purged.channels) == (0, 0, 0)
    assert await _count(store, tasks, tasks.c.id, ids) == 2
    assert await _count(store, channels, channels.c.name, ["ancient"]) == 1


async def test_a_channel_use_moves_its_last_use_and_keeps_its_first(store: Store) -> None:
    now = time.time()
    async with store.transaction() as uow:
        await uow.channels.touch(["b", "a", "b"], now=now - 10)  # a name twice in one write is one use
    async with store.transaction() as uow:
        await uow.channels.touch(["a", "c"], now=now)
    async with store.reader() as uow:
        listed = await uow.channels.list_page(limit=10, after_name=None)
    assert [c.name for c in listed] == ["a", "b", "c"]
    first = {c.name: c.create_time for c in listed}
    last = {c.name: c.last_use_time for c in listed}
    assert first == pytest.approx({"a": now - 10, "b": now - 10, "c": now}, abs=1e-3)
    assert last == pytest.approx({"a": now, "b": now - 10, "c": now}, abs=1e-3)


async def test_channels_unused_for_their_retention_are_deleted_and_come_back_when_used(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_module, "BATCH", 4)
    now = time.time()
    unused = [f"reply.{n}" for n in range(10)]
    async with store.transaction() as uow:
        await uow.channels.touch([*unused, "news"], now=now - 8 * DAY)
        await uow.channels.touch(["news"], now=now - 6 * DAY)  # created long ago, used within the week
    purged = await Retention(
        store, task_retention=0, audit_retention=0, channel_retention=7 * DAY, clock=lambda: now
    ).purge()
    assert purged.channels == 10
    assert await _count(store, channels, channels.c.name, unused) == 0
    assert await _count(store, channels, channels.c.name, ["news"]) == 1
    async with store.transaction() as uow:
        await uow.channels.touch(["reply.3"], now=now)
    assert await _count(store, channels, channels.c.name, unused) == 1


async def test_agent_instances_disconnected_for_their_retention_are_deleted(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each agent process is an instance (a new id per start): without retention their rows pile up forever."""
    monkeypatch.setattr(retention_module, "BATCH", 4)
    now = time.time()
    gone_long_ago = [f"old-{n}" for n in range(10)]
    every = [*gone_long_ago, "gone-lately", "connected-long-ago", "back-again"]
    async with store.hot_transaction() as hot:
        await hot.agents.register(
            [Connected(Registration("worker", "1", i, (Capability("cap"),), {}, 1), f"s-{i}") for i in every],
            replica_id="r",
            now=now - 9 * DAY,
        )
    async with store.transaction() as uow:
        for instance_id in [*gone_long_ago, "back-again"]:
            assert await uow.agents.set_status(
                instance_id, f"s-{instance_id}", InstanceStatus.DISCONNECTED, now=now - 8 * DAY, disconnected=True
            )
        assert await uow.agents.set_status(
            "gone-lately", "s-gone-lately", InstanceStatus.DISCONNECTED, now=now - 6 * DAY, disconnected=True
        )
    async with store.hot_transaction() as hot:  # the same instance id registers again: it is connected now
        registration = Registration("worker", "1", "back-again", (Capability("cap"),), {}, 1)
        await hot.agents.register([Connected(registration, "s-new")], replica_id="r", now=now)

    purged = await Retention(
        store, task_retention=0, audit_retention=0, instance_retention=7 * DAY, clock=lambda: now
    ).purge()

    assert purged.instances == 10
    column = agent_instances.c.instance_id
    assert await _count(store, agent_instances, column, gone_long_ago) == 0
    assert await _count(store, agent_instances, column, ["gone-lately", "connected-long-ago", "back-again"]) == 3
    kept = await Retention(store, task_retention=0, audit_retention=0, clock=lambda: now + 30 * DAY).purge()
    assert kept.instances == 0, "0 keeps every instance"
