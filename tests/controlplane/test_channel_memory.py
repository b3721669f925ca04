"""Channels used once each (a reply channel per request) leave nothing behind in a replica's memory: what it
remembers of channel names is bounded, and a channel's lock goes with its last subscriber."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from controlplane.services import channels as channel_service
from meshplane.v1 import channel_pb2, channel_pb2_grpc, common_pb2
from tests.support.eventually import eventually
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)


async def test_channels_used_once_each_are_not_remembered_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(channel_service, "KNOWN_CHANNELS", 50)
    async with (
        running_plane(tmp_path / "plane") as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        stub = channel_pb2_grpc.ChannelServiceStub(channel)
        payload = common_pb2.Payload(data=b'{"ok": true}', content_type="application/json")
        for number in range(200):  # a subscriber per reply channel, one message, gone
            stream = stub.Subscribe(channel_pb2.SubscribeRequest(channel=f"reply.{number}"))
            assert (await stream.read()).WhichOneof("event") == "started"
            await stub.Publish(channel_pb2.PublishRequest(channel=f"reply.{number}", payload=payload))
            response = await asyncio.wait_for(stream.read(), 10)
            assert response.message.payload.json.struct_value.fields["ok"].bool_value
            stream.cancel()
        for number in range(200):  # publishes nobody hears
            await stub.Publish(channel_pb2.PublishRequest(channel=f"nobody.{number}", payload=payload))

        await eventually(lambda: plane.channels.tracked_channels <= 50, message="only the last 50 names remain")
        listed = await stub.ListChannels(channel_pb2.ListChannelsRequest(page_size=1000))
        assert len(listed.channels) == 400  # the names are still stored, and listed
