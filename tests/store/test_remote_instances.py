"""The other replicas' instances, as sticky placement reads them (both stores)."""

from __future__ import annotations

import time

import pytest

from controlplane.domain.agents import Capability, InstanceStatus, Registration
from controlplane.scheduling.membership import RemoteInstances
from controlplane.store.agents import Connected
from controlplane.store.unit_of_work import Store

pytestmark = pytest.mark.timeout(60)

LEASE = 20.0


def _registration(instance_id: str, *capabilities: str, labels: dict[str, str] | None = None) -> Registration:
    return Registration("worker", "1", instance_id, tuple(Capability(c) for c in capabilities), labels or {}, 4)


async def _connect(store: Store, replica_id: str, *registrations: Registration, now: float) -> None:
    async with store.transaction() as uow:
        await uow.replicas.heartbeat(replica_id, address="", now=now)
    async with store.hot_transaction() as hot:
        await hot.agents.register(
            [Connected(r, f"s-{r.instance_id}") for r in registrations], replica_id=replica_id, now=now
        )


async def test_only_connected_instances_of_other_live_replicas_count(store: Store) -> None:
    now = time.time()
    await _connect(store, "me", _registration("mine", "cap.a"), now=now)
    await _connect(store, "peer", _registration("p-1", "cap.a", labels={"zone": "eu"}), now=now)
    await _connect(store, "peer", _registration("p-draining", "cap.a"), now=now)
    await _connect(store, "peer", _registration("p-other", "cap.b"), now=now)
    await _connect(store, "dead", _registration("d-1", "cap.a"), now=now - 2 * LEASE)
    async with store.transaction() as uow:
        assert await uow.agents.set_status("p-draining", "s-p-draining", InstanceStatus.DRAINING, now=now)

    remote = RemoteInstances(store, replica_id="me", max_age=60, lease_timeout=LEASE)
    serving_a = await remote.serving("cap.a")
    assert [(i.instance_id, i.replica_id, dict(i.labels)) for i in serving_a] == [("p-1", "peer", {"zone": "eu"})]
    assert [i.instance_id for i in await remote.serving("cap.b")] == ["p-other"]
    assert await remote.serving("cap.none") == []


async def test_the_copy_is_read_again_when_invalidated_or_too_old(store: Store) -> None:
    now = time.time()
    clock = [100.0]
    remote = RemoteInstances(store, replica_id="me", max_age=5, lease_timeout=LEASE, clock=lambda: clock[0])
    assert await remote.serving("cap.a") == []
    await _connect(store, "peer", _registration("p-1", "cap.a"), now=now)
    assert await remote.serving("cap.a") == [], "a fresh copy is used as it is"
    assert remote.reads == 1
    remote.invalidate()  # another replica announced a session
    assert [i.instance_id for i in await remote.serving("cap.a")] == ["p-1"]
    await _connect(store, "peer", _registration("p-2", "cap.a"), now=now)
    clock[0] += 6  # older than max_age
    assert sorted(i.instance_id for i in await remote.serving("cap.a")) == ["p-1", "p-2"]
    assert remote.reads == 3


async def test_a_drain_leaves_last_seen_so_a_ghost_still_ages_out(store: Store) -> None:
    """An operator's drain is no sign of the agent's life: a row its replica no longer serves must still be found
    by that replica's ghost sweep (instances last seen a lease ago)."""
    now = time.time()
    await _connect(store, "peer", _registration("p-ghost", "cap.a"), now=now - 2 * LEASE)
    async with store.transaction() as uow:
        assert await uow.agents.set_status("p-ghost", "s-p-ghost", InstanceStatus.DRAINING, now=None)
    async with store.reader() as uow:
        assert await uow.agents.marked_connected("peer", seen_before=now - LEASE) == [("p-ghost", "s-p-ghost")]
