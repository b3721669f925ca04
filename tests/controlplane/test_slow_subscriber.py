"""A subscriber that reads slower than its channel messages come (an agent's stream, even while it heartbeats;
a Subscribe stream): the oldest waiting messages are dropped past a bound, so the plane does not grow without
end; an agent's other frames are never dropped, and the operator hears of a slow agent once per session."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from controlplane.domain import channels as channel_limits
from controlplane.domain.agents import Registration
from controlplane.domain.channels import ChannelMessage
from controlplane.domain.payload import Payload
from controlplane.domain.tasks import TaskRef
from controlplane.link.messages import AckMsg, ChannelDelivery
from controlplane.link.session import AgentSession
from meshplane.v1 import agent_link_pb2 as al
from meshplane.v1 import agent_link_pb2_grpc, channel_pb2, channel_pb2_grpc, common_pb2
from tests.support.eventually import eventually
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)


def _message(number: int, size: int = 10) -> ChannelMessage:
    return ChannelMessage("news", f"m{number}", Payload(b"x" * size), "test", 0.0)


def _session(dropped: list[str]) -> AgentSession:
    registration = Registration(
        agent_name="slow", agent_version="1", instance_id="slow-1", capabilities=(), labels={}, max_concurrency=1
    )
    return AgentSession("s1", registration, replica_id="r1", on_dropped_delivery=lambda s: dropped.append(s.session_id))


async def _flood(client: grpc.aio.Channel, count: int) -> None:
    """`count` messages of 64 KiB on channel "news", numbered from 0 ({"n": ...})."""
    publisher = channel_pb2_grpc.ChannelServiceStub(client)
    for number in range(count):
        data = b'{"n": %d, "pad": "%s"}' % (number, b"p" * 65_000)
        payload = common_pb2.Payload(data=data, content_type="application/json")
        await publisher.Publish(channel_pb2.PublishRequest(channel="news", payload=payload))


async def test_past_the_count_the_oldest_waiting_message_makes_room_and_other_frames_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(channel_limits, "MAX_WAITING_MESSAGES", 3)
    dropped: list[str] = []
    session = _session(dropped)
    session.deliver(_message(1))
    session.send(AckMsg((TaskRef("t1", 1),)))
    for number in range(2, 6):
        session.deliver(_message(number))
    waiting = await session.next_messages()
    assert [m.message.message_id if isinstance(m, ChannelDelivery) else "ack" for m in waiting] == [
        "ack",
        "m3",
        "m4",
        "m5",
    ]
    assert session.dropped_deliveries == 2 and dropped == ["s1", "s1"]

    for number in range(6, 9):  # what was taken no longer counts: three fit again
        session.deliver(_message(number))
    assert [m.message.message_id for m in await session.next_messages()] == ["m6", "m7", "m8"]  # type: ignore[union-attr]
    assert session.dropped_deliveries == 2


async def test_past_the_bytes_the_oldest_make_room_but_the_newest_is_always_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(channel_limits, "MAX_WAITING_BYTES", 100)
    session = _session([])
    for number in range(1, 5):
        session.deliver(_message(number, size=40))  # two fit in 100 bytes
    session.deliver(_message(5, size=500))  # larger than the bound alone: everything older goes, it stays
    assert [m.message.message_id for m in await session.next_messages()] == ["m5"]  # type: ignore[union-attr]
    assert session.dropped_deliveries == 4


async def test_an_agent_that_stops_reading_loses_the_oldest_messages_not_the_plane_its_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(channel_limits, "MAX_WAITING_MESSAGES", 20)
    caplog.set_level(logging.WARNING, logger="controlplane.link")
    published = 300
    async with (
        running_plane(tmp_path / "plane") as plane,
        grpc.aio.insecure_channel(plane.address) as agent_channel,
        grpc.aio.insecure_channel(plane.address, options=[("grpc.use_local_subchannel_pool", 1)]) as client,
    ):
        register = al.ConnectRequest(
            register=al.Register(
                agent_name="slow",
                agent_version="1",
                instance_id="slow-1",
                capabilities=[common_pb2.Capability(name="demo.echo")],
                max_concurrency=1,
                sdk=common_pb2.SdkInfo(language="python", version="test"),
                subscriptions=["news"],
            )
        )
        heartbeat_every = plane.settings.heartbeat_interval.total_seconds() / 2

        async def requests() -> AsyncIterator[al.ConnectRequest]:
            yield register
            while True:  # alive (its heartbeats keep the session), however little of its stream it reads
                await asyncio.sleep(heartbeat_every)
                yield al.ConnectRequest(heartbeat=al.Heartbeat(in_flight=0, load=0.0))

        stream = agent_link_pb2_grpc.AgentLinkServiceStub(agent_channel).Connect(requests())
        assert (await stream.read()).WhichOneof("frame") == "registered"
        # ...and the agent reads no more, while 300 messages of 64 KiB come (more than the transport holds).
        await _flood(client, published)
        await eventually(lambda: plane.channels.dropped_deliveries > 0, message="the oldest dropped")

        received: list[int] = []
        while not received or received[-1] != published - 1:  # up to the newest
            frame = await asyncio.wait_for(stream.read(), 10)
            if frame.WhichOneof("frame") == "channel_message":
                received.append(json.loads(frame.channel_message.payload.data)["n"])
        stream.cancel()

    assert received == sorted(received) and len(received) < published  # in order, the newest kept
    assert plane.channels.dropped_deliveries == published - len(received)
    warnings = [r.getMessage() for r in caplog.records if "reads its stream slower" in r.getMessage()]
    assert len(warnings) == 1 and "agent slow/slow-1" in warnings[0]


async def test_a_subscribe_stream_that_stops_reading_loses_the_oldest_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channel_limits, "MAX_WAITING_BYTES", 1024 * 1024)  # 16 messages of 64 KiB
    published = 300
    async with (
        running_plane(tmp_path / "plane") as plane,
        grpc.aio.insecure_channel(plane.address) as subscriber_channel,
        grpc.aio.insecure_channel(plane.address, options=[("grpc.use_local_subchannel_pool", 1)]) as client,
    ):
        stream = channel_pb2_grpc.ChannelServiceStub(subscriber_channel).Subscribe(
            channel_pb2.SubscribeRequest(channel="news")
        )
        assert (await stream.read()).WhichOneof("event") == "started"
        await _flood(client, published)  # while the subscriber reads nothing
        await eventually(lambda: plane.channels.dropped_deliveries > 0, message="the oldest dropped")

        received: list[int] = []
        while not received or received[-1] != published - 1:  # up to the newest
            response = await asyncio.wait_for(stream.read(), 10)
            received.append(int(response.message.payload.json.struct_value.fields["n"].number_value))
        stream.cancel()

    assert received == sorted(received) and len(received) < published
    assert plane.channels.dropped_deliveries == published - len(received)
