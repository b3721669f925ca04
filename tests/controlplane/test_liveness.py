"""Session liveness snapshots: what changed is written at once, unchanged sessions only now and then."""

from __future__ import annotations

import uuid

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


async def test_only_changed_sessions_are_written_and_the_rest_refresh_later(store: Store) -> None:
    clock, registry = _Clock(), SessionRegistry()
    service = AgentService(store, registry, _NoDrains(), replica_id="r1", default_drain_timeout=5.0, clock=clock)
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


async def test_a_snapshot_never_overwrites_a_newer_session_of_the_instance(store: Store) -> None:
    clock, registry = _Clock(), SessionRegistry()
    service = AgentService(store, registry, _NoDrains(), replica_id="r1", default_drain_timeout=5.0, clock=clock)
    old = await _connect(service, registry, "moved-1")
    newer = Registration("worker", "1", "moved-1", (Capability("cap.a"),), {}, max_concurrency=4)
    await service.record_connect(newer, session_id="elsewhere")  # reconnected to another replica
    old.load = 0.5
    assert await service.record_liveness() == 1
    session_id, _, load, _ = await _stored(store, "moved-1")
    assert (session_id, load) == ("elsewhere", 0.0)
