"""The signals replicas exchange over a real NATS server: what one replica commits wakes the others."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from controlplane.bus.nats_bus import NatsBus
from controlplane.cluster import Cluster
from controlplane.link.registry import SessionRegistry
from controlplane.services.transitions import AfterCommit
from controlplane.services.watch import WatchHub
from tests.support.eventually import eventually
from tests.support.nats import nats_server

pytestmark = pytest.mark.timeout(30)


class Heard:
    """What a replica's cluster passed on to its dispatcher."""

    def __init__(self) -> None:
        self.due: list[tuple[list[str], float | None]] = []
        self.retries: list[dict[str, float]] = []

    def work_due(self, capabilities: Iterable[str], at: float | None) -> None:
        self.due.append((sorted(capabilities), at))

    def retries_pending(self, until: Mapping[str, float]) -> None:
        self.retries.append(dict(until))


@asynccontextmanager
async def _replica(nats_url: str, name: str, heard: Heard) -> AsyncIterator[Cluster]:
    bus = NatsBus([nats_url], client_name=name, no_echo=True)
    cluster = Cluster(bus, SessionRegistry(), WatchHub(), replica_id=name)
    cluster.connect(
        work_due=heard.work_due,
        retries=heard.retries_pending,
        drain=lambda _session, _timeout, _reason: None,
        replaced=lambda _instance, _session: None,
    )
    await bus.start()
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()
        await bus.stop()


async def test_retries_scheduled_on_one_replica_reach_the_others_dispatchers_with_their_last_due_time(
    tmp_path: Path,
) -> None:
    here, there = Heard(), Heard()
    async with nats_server(tmp_path / "nats") as url, _replica(url, "a", here) as a, _replica(url, "b", there):
        # One commit scheduled two retries of cap.x (due at 100 and 130) and queued new work of cap.y.
        await a.after_commit(AfterCommit(requeued={"cap.x": 100.0, "cap.y": 50.0}, retries={"cap.x": 130.0}))

        assert here.retries == [{"cap.x": 130.0}]  # this replica's dispatcher at once
        await eventually(lambda: there.retries and there.due, message="the doorbell at replica b")
        assert there.retries == [{"cap.x": 130.0}]
        [(capabilities, at)] = there.due
        assert capabilities == ["cap.x", "cap.y"]
        assert at is not None and at >= 50.0  # the earliest due time (or now, if that has passed)
