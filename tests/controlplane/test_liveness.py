"""Registration records and liveness snapshots of sessions.

Registrations arriving together share a transaction; liveness snapshots write what changed at once and
unchanged sessions only now and then.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from controlplane.domain.agents import Capability, Registration
from controlplane.domain.tasks import TaskRef
from controlplane.link.registry import SessionRegistry
from controlplane.link.session import AgentSession, SessionState
from controlplane.services.agents import LIVENESS_REFRESH, AgentService
from controlplane.store.unit_of_work import Store

pytestmark = pytest.mark.timeout(60)


class _NoDrains:
    async def drain_instance(self, **_kwargs: object) -> None:
        raise AssertionError("not used")


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def agents(store: Store) -> AsyncIterator[tuple[AgentService, SessionRegistry, _Clock]]:
    clock, registry = _Clock(), SessionRegistry()
    service = AgentService(store, registry, _NoDrains(), replica_id="r1", default_drain_timeout=5.0, clock=clock)
    async with service:
        yield service, registry, clock


async def _connect(service: AgentService, registry: SessionRegistry, instance_id: str) -> AgentSession:
    registration = Registration("worker", "1", instance_id, (Capability("cap.a"),), {}, max_concurrency=4)
    session = AgentSession(uuid.uuid4().hex, registration, replica_id="r1")
    await service.record_connect(registration, session_id=session.session_id)
    registry.add(session)
    session.state = SessionState.ACTIVE
    return session


async def _stored(store: Store, instance_id: str) -> tuple[str, int, float, float]:
    async with store.reader() as uow:
        row = await uow.agents.get_instance(instance_id)
    assert row is not None
    return row.session_id, row.in_flight, row.load, row.last_seen_time


async def test_only_changed_sessions_are_written_and_the_rest_refresh_later(
    store: Store, agents: tuple[AgentService, SessionRegistry, _Clock]
) -> None:
    service, registry, clock = agents
    busy = await _connect(service, registry, "busy-1")
    quiet = await _connect(service, registry, "quiet-1")

    assert await service.record_liveness() == 2, "the first snapshot writes every session"
    assert await service.record_liveness() == 0, "nothing changed: nothing written"

    busy.load = 0.75
    busy.reserve(TaskRef("t1", 1), 0.0)
    busy.touch()
    assert await service.record_liveness() == 1
    assert (await _stored(store, "busy-1"))[1:3] == (1, 0.75)

    clock.now += LIVENESS_REFRESH
    quiet.touch()
    assert await service.record_liveness() == 2, "after the refresh period every session's last-seen is rewritten"
    assert (await _stored(store, "quiet-1"))[3] == pytest.approx(quiet.last_seen_wall, abs=1e-3)


async def test_a_snapshot_never_overwrites_a_newer_session_of_the_instance(
    store: Store, agents: tuple[AgentService, SessionRegistry, _Clock]
) -> None:
    service, registry, _ = agents
    old = await _connect(service, registry, "moved-1")
    newer = Registration("worker", "1", "moved-1", (Capability("cap.a"),), {}, max_concurrency=4)
    await service.record_connect(newer, session_id="elsewhere")  # reconnected to another replica
    old.load = 0.5
    assert await service.record_liveness() == 1
    session_id, _, load, _ = await _stored(store, "moved-1")
    assert (session_id, load) == ("elsewhere", 0.0)


async def test_registrations_arriving_together_share_a_transaction(
    store: Store, agents: tuple[AgentService, SessionRegistry, _Clock]
) -> None:
    service, _, _ = agents
    registrations = [
        Registration(f"worker-{i % 3}", "1", f"crowd-{i}", (Capability("cap.a"),), {"n": str(i)}, max_concurrency=2)
        for i in range(60)
    ]
    owning = await asyncio.gather(
        *(service.record_connect(r, session_id=f"session-{r.instance_id}") for r in registrations)
    )
    assert owning == [False] * 60, "fresh instances own no tasks"
    assert service.connect_batcher.flushes < 60, "concurrent registrations were written together"
    async with store.reader() as uow:
        for registration in registrations:
            row = await uow.agents.get_instance(registration.instance_id)
            assert row is not None
            assert (row.session_id, row.labels) == (f"session-{registration.instance_id}", registration.labels)
        assert {a.name for a in await uow.agents.list_agents(limit=10, after_name=None)} == {
            "worker-0",
            "worker-1",
            "worker-2",
        }


async def test_the_later_of_two_registrations_of_one_instance_wins_within_a_batch(
    store: Store, agents: tuple[AgentService, SessionRegistry, _Clock]
) -> None:
    service, _, _ = agents
    first = Registration("worker", "1", "twice-1", (Capability("cap.a"),), {}, max_concurrency=1)
    second = Registration("worker", "2", "twice-1", (Capability("cap.b"),), {}, max_concurrency=3)
    await asyncio.gather(
        service.record_connect(first, session_id="older"), service.record_connect(second, session_id="newer")
    )
    async with store.reader() as uow:
        row = await uow.agents.get_instance("twice-1")
        agent = await uow.agents.get_agent("worker")
    assert row is not None and agent is not None
    assert (row.session_id, row.version, row.max_concurrency, row.capabilities) == ("newer", "2", 3, ["cap.b"])
    assert agent.version == "2"
