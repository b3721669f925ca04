"""The signals replicas exchange over a real NATS server: what one replica commits wakes the others."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from controlplane.bus.embedded import EmbeddedNats
from controlplane.bus.nats_bus import DOORBELL, PRESENCE, TASKS_CHANGED, NatsBus
from controlplane.cluster import Cluster
from controlplane.link.registry import SessionRegistry
from controlplane.presence import EXPIRY, Presence
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
async def _replica(
    nats_url: str, name: str, heard: Heard, *, presence_interval: float = 60.0
) -> AsyncIterator[Cluster]:
    bus = NatsBus([nats_url], client_name=name, no_echo=True)
    cluster = Cluster(bus, SessionRegistry(), WatchHub(), replica_id=name, presence_interval=presence_interval)
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


async def test_replicas_learn_of_each_other_when_one_starts_and_forget_it_when_it_stops(tmp_path: Path) -> None:
    # Announcements an hour apart: all either learns here comes from the hello, its answer and the goodbye.
    async with nats_server(tmp_path / "nats") as url, _replica(url, "a", Heard(), presence_interval=3600) as a:
        assert a.presence.others() == []
        async with _replica(url, "b", Heard(), presence_interval=3600) as b:
            await eventually(lambda: a.presence.others() == ["b"], message="a heard b's hello")
            await eventually(lambda: b.presence.others() == ["a"], message="b heard a's answer")
        await eventually(lambda: a.presence.others() == [], message="a heard b's goodbye")


async def test_a_replica_that_falls_silent_is_forgotten_after_three_intervals(tmp_path: Path) -> None:
    now = [1000.0]
    async with nats_server(tmp_path / "nats") as url:
        bus = NatsBus([url], client_name="a", no_echo=True)
        presence = Presence(bus, replica_id="a", interval=10.0, clock=lambda: now[0])
        ghost = await nats.connect(url)
        try:
            await bus.start()
            await presence.start()

            async def ghost_speaks_and_is_heard() -> bool:
                # Words, not one word: announcements are hints, and a busy machine may deliver the first late.
                # However many arrive, the frozen clock stamps them all at 1000, and nothing below awaits.
                await ghost.publish(PRESENCE, b'{"r":"ghost"}')
                await ghost.flush()
                return presence.others() == ["ghost"]

            await eventually(ghost_speaks_and_is_heard, interval=0.2, message="a heard the ghost")
            # The ghost falls silent; the clock moves with no await in between, so nothing late can interleave.
            now[0] += 29.0
            assert presence.others() == ["ghost"] and not presence.alone
            now[0] += 2.0  # 31 s after it last spoke: more than three intervals
            assert presence.others() == [] and presence.alone
        finally:
            await ghost.close()
            await presence.stop()
            await bus.stop()


async def test_a_replica_alone_sends_no_signals_until_another_joins(tmp_path: Path) -> None:
    heard_by_b = Heard()
    # Half a second between announcements: b stays known to a (for 1.5 s) through any stall of a busy machine.
    async with nats_server(tmp_path / "nats") as url, _replica(url, "a", Heard(), presence_interval=0.5) as a:
        listener = await nats.connect(url)
        received: list[str] = []

        async def record(msg: Msg) -> None:
            received.append(msg.subject)

        try:
            await listener.subscribe(DOORBELL, cb=record)
            await listener.subscribe(TASKS_CHANGED, cb=record)
            await listener.flush()
            await eventually(lambda: a.presence.alone, message="a's first interval is over")

            await a.after_commit(AfterCommit(changed={"t-1"}, requeued={"cap.x": 1.0}))
            await eventually(lambda: a.signals_skipped == 1, message="a dropped its signals")
            await listener.flush()
            assert received == [] and a.signals_sent == 0

            async with _replica(url, "b", heard_by_b, presence_interval=0.5):
                await eventually(lambda: a.presence.others() == ["b"], message="a heard b")
                await a.after_commit(AfterCommit(changed={"t-2"}, requeued={"cap.y": 1.0}))
                await eventually(lambda: heard_by_b.due, message="the doorbell at replica b")
                assert heard_by_b.due[0][0] == ["cap.y"]
                await eventually(lambda: sorted(received) == [DOORBELL, TASKS_CHANGED], message="the listener")
                assert a.signals_sent == 1 and a.signals_skipped == 1
        finally:
            await listener.close()


async def test_replicas_that_lost_nats_meet_again_as_soon_as_it_is_back(tmp_path: Path) -> None:
    now = [1000.0]
    interval = 3600.0  # no announcement in the test's time: all they learn comes from hellos and answers
    first = EmbeddedNats(tmp_path / "nats")
    await first.start()
    url = first.url
    buses = [NatsBus([url], client_name=name, no_echo=True) for name in ("a", "b")]
    a = Presence(buses[0], replica_id="a", interval=interval, clock=lambda: now[0])
    b = Presence(buses[1], replica_id="b", interval=interval, clock=lambda: now[0])
    second: EmbeddedNats | None = None
    try:
        for component in (*buses, a, b):
            await component.start()
        await eventually(lambda: a.others() == ["b"] and b.others() == ["a"], message="they met")

        await first.stop()  # NATS is gone for longer than a replica is remembered
        now[0] += EXPIRY * interval + 1
        assert a.others() == [] and b.others() == []

        second = EmbeddedNats(tmp_path / "nats-again", port=int(url.rsplit(":", 1)[1]))
        await second.start()  # back on the same address: each bus reconnects and its replica says hello
        # Unsure again until an interval has passed (or another replica answers).
        await eventually(lambda: not a.alone and not b.alone, timeout=15, message="both reconnected")
        await eventually(lambda: a.others() == ["b"] and b.others() == ["a"], message="they met again")
    finally:
        for component in (b, a, *buses):
            await component.stop()
        if second is not None:
            await second.stop()
        await first.stop()
