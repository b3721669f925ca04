"""Channel messages as large as the plane accepts: they cross NATS with their payload as it is (not base64'd,
which made a 1 MiB payload too big for NATS's default 1 MB), the embedded NATS accepts them, and an external NATS
that accepts less is named in a start-up warning and in a RESOURCE_EXHAUSTED answer."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from pathlib import Path

import grpc
import pytest

from controlplane.app import ControlPlane
from controlplane.domain.channels import ChannelMessage
from controlplane.domain.payload import Payload
from controlplane.services import channel_codec
from meshplane.v1 import agent_link_pb2 as al
from meshplane.v1 import channel_pb2, channel_pb2_grpc, common_pb2
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.nats import nats_server
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024


def _publish_request(data: bytes) -> channel_pb2.PublishRequest:
    payload = common_pb2.Payload(data=data, content_type="application/octet-stream")
    return channel_pb2.PublishRequest(channel="big", payload=payload, headers={"k": "v"})


async def test_a_message_as_large_as_the_payload_limit_reaches_every_subscriber(sqlite_plane: ControlPlane) -> None:
    assert sqlite_plane.settings.max_payload_bytes == MIB
    agent = LinkAgent(sqlite_plane.address, subscriptions=["big"])
    await agent.connect()
    try:
        async with grpc.aio.insecure_channel(sqlite_plane.address) as channel:
            channels = channel_pb2_grpc.ChannelServiceStub(channel)
            stream = channels.Subscribe(channel_pb2.SubscribeRequest(channel="big"))
            assert (await stream.read()).WhichOneof("event") == "started"

            data = os.urandom(MIB)
            published = await channels.Publish(_publish_request(data))

            heard = await asyncio.wait_for(stream.read(), 10)
            assert heard.message.message_id == published.message.message_id
            assert heard.message.payload.data == data and dict(heard.message.headers) == {"k": "v"}
            on_link = await asyncio.wait_for(agent.channel_messages.get(), 10)
            assert on_link.payload.data == data
            stream.cancel()
    finally:
        await agent.close()


async def test_an_external_nats_that_accepts_less_is_named_at_start_and_in_the_refusal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="controlplane.app")
    # nats-server's default max_payload: 1 MB
    async with nats_server(tmp_path / "nats") as url, running_plane(tmp_path / "plane", nats_url=url) as plane:
        [warning] = [r.getMessage() for r in caplog.records if "max_payload" in r.getMessage()]
        assert warning.startswith("NATS accepts messages of up to 1048576 bytes (its max_payload); ")
        assert warning.endswith(f"set max_payload on the NATS server to {MIB + 256 * 1024} or more")

        agent = LinkAgent(plane.address, subscriptions=["big"])
        await agent.connect()
        try:
            async with grpc.aio.insecure_channel(plane.address) as channel:
                channels = channel_pb2_grpc.ChannelServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await channels.Publish(_publish_request(bytes(MIB)))
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                details = refused.value.details() or ""
                assert details.startswith("the message is ") and details.endswith(
                    "bytes as sent on NATS; the NATS server accepts at most 1048576 (its max_payload)"
                )

                # From an agent, the same refusal comes as an error frame, and its stream goes on.
                big = al.ChannelPublish(channel="big", payload=common_pb2.Payload(data=bytes(MIB)))
                await agent.send(al.ConnectRequest(publish=big))
                await eventually(lambda: agent.errors, message="the agent's error frame")
                [error] = agent.errors
                assert (error.code, error.field, error.fatal) == (8, "publish", False)  # RESOURCE_EXHAUSTED

                # Below what NATS accepts, large messages go through (their payload is not inflated).
                await channels.Publish(_publish_request(bytes(1_000_000)))
                on_link = await asyncio.wait_for(agent.channel_messages.get(), 10)
                assert len(on_link.payload.data) == 1_000_000
        finally:
            await agent.close()


def test_the_wire_form_round_trips_and_the_earlier_json_form_is_still_read() -> None:
    message = ChannelMessage(
        channel="news",
        message_id="m-1",
        payload=Payload(b"\x00\xffbinary", "application/octet-stream"),
        publisher="client/anonymous",
        publish_time=1700000000.5,
        headers={"k": "v"},
    )
    wire = channel_codec.encode(message)
    assert len(wire) < len(message.payload.data) + 200
    assert channel_codec.decode(wire) == message

    legacy = json.dumps(
        {
            "id": "m-1",
            "c": "news",
            "d": base64.b64encode(b"\x00\xffbinary").decode(),
            "ct": "application/octet-stream",
            "h": {"k": "v"},
            "p": "client/anonymous",
            "t": 1700000000.5,
        }
    ).encode()
    assert channel_codec.decode(legacy) == message

    for garbage in (b"", b"\x02abc", wire[:10], b"\x01\x00\x00\x00\x05{}"):
        with pytest.raises((ValueError, KeyError)):
            channel_codec.decode(garbage)
