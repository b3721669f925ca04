"""NATS goes away: the plane says so in one line per connection (not one per reconnect attempt, twice a second),
says when it is back, and channel subscriptions work again; publishes are buffered meanwhile, then refused with
UNAVAILABLE once the buffer is full; a plane stopped while NATS is away stops cleanly. A plane that starts
without NATS retries quietly, connects once it is there, or gives up after a while naming the server."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest

from controlplane.app import ControlPlane
from controlplane.bus.embedded import EmbeddedNats
from controlplane.bus.nats_bus import NatsBus, NatsUnreachable
from meshplane.v1 import channel_pb2, channel_pb2_grpc, common_pb2
from tests.support.eventually import eventually
from tests.support.plane import running_plane
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(60)

BUS_LOGGER = "controlplane.bus.nats_bus"


def _bus_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == BUS_LOGGER and r.levelno == level]


def _quietly_retrying(plane: ControlPlane) -> bool:
    """Both of the plane's NATS connections are in an outage and have failed to reconnect three more times."""
    return all(bus.outage.in_outage and bus.outage.unlogged >= 3 for bus in (plane.bus, plane.signal_bus))


async def test_a_nats_outage_is_logged_once_per_connection_and_channels_work_once_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=BUS_LOGGER)
    nats = EmbeddedNats(tmp_path / "nats")
    await nats.start()
    port = int(nats.url.rsplit(":", 1)[1])
    try:
        async with (
            running_plane(tmp_path / "plane", nats_url=nats.url) as plane,
            grpc.aio.insecure_channel(plane.address) as channel,
        ):
            channels = channel_pb2_grpc.ChannelServiceStub(channel)
            stream = channels.Subscribe(channel_pb2.SubscribeRequest(channel="news"))
            assert (await stream.read()).WhichOneof("event") == "started"

            await nats.stop()
            await eventually(lambda: _quietly_retrying(plane), message="both connections retrying")
            unreachable = [m for m in _bus_lines(caplog, logging.WARNING) if m.startswith("NATS unreachable")]
            assert unreachable == ["NATS unreachable, reconnecting: disconnected"] * 2
            assert not [m for m in _bus_lines(caplog, logging.WARNING) if "Connect call failed" in m]

            nats = EmbeddedNats(tmp_path / "nats-again", port=port)
            await nats.start()
            back = "works again after "

            def both_back() -> bool:
                return len([m for m in _bus_lines(caplog, logging.INFO) if back in m]) == 2

            await eventually(both_back, message="both connections back")

            async def delivered() -> channel_pb2.SubscribeResponse:
                published = await channels.Publish(
                    channel_pb2.PublishRequest(channel="news", payload=common_pb2.Payload(data=b"after"))
                )
                response = await asyncio.wait_for(stream.read(), 2)
                assert response.message.message_id == published.message.message_id
                return response

            # The subscription is restored with the connection; a message published before that may be lost.
            received = await eventually(delivered, message="a message through the restored subscription")
            assert received.message.payload.data == b"after"
            stream.cancel()
    finally:
        await nats.stop()


async def test_while_nats_is_away_publishers_are_buffered_then_told_unavailable_and_the_plane_stops_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="controlplane")
    nats = EmbeddedNats(tmp_path / "nats")
    await nats.start()
    try:
        async with (
            running_plane(tmp_path / "plane", nats_url=nats.url) as plane,
            grpc.aio.insecure_channel(plane.address) as channel,
        ):
            await channel_pb2_grpc.ChannelServiceStub(channel).Publish(
                channel_pb2.PublishRequest(channel="news", payload=common_pb2.Payload(data=b"before"))
            )
            await nats.stop()
            await eventually(lambda: _quietly_retrying(plane), message="both connections retrying")
            # The client buffers what is published meanwhile (2 MiB); once that is full, publishers are told
            # UNAVAILABLE, not INTERNAL.
            big = channel_pb2.PublishRequest(channel="news", payload=common_pb2.Payload(data=bytes(700_000)))
            stub = channel_pb2_grpc.ChannelServiceStub(channel)
            for _ in range(2):
                await stub.Publish(big)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Publish(big)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert refused.value.details() == "NATS is unreachable (OutboundBufferLimitError); retry"
    finally:
        await nats.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert any(r.getMessage().startswith("control plane ") and "stopped" in r.getMessage() for r in caplog.records)


async def test_a_plane_starting_without_nats_retries_quietly_then_gives_up_naming_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=BUS_LOGGER)
    port = free_port()  # nothing listens there
    bus = NatsBus([f"nats://meshplane:secret@127.0.0.1:{port}"], client_name="starting", connect_within=1.6)
    with pytest.raises(NatsUnreachable) as caught:
        await bus.start()
    assert str(caught.value).startswith(f"cannot reach NATS at nats://127.0.0.1:{port} within 1.6s (")
    assert "secret" not in str(caught.value)
    assert bus.outage.in_outage and bus.outage.unlogged >= 2  # it kept trying, twice a second
    [line] = _bus_lines(caplog, logging.WARNING)  # one line for all those attempts
    assert line.startswith("NATS unreachable, retrying: ")


async def test_a_plane_starting_before_nats_connects_once_nats_is_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=BUS_LOGGER)
    port = free_port()
    bus = NatsBus([f"nats://127.0.0.1:{port}"], client_name="early", connect_within=20)
    starting = asyncio.ensure_future(bus.start())
    nats = EmbeddedNats(tmp_path / "nats", port=port)
    try:
        await eventually(lambda: bus.outage.in_outage, message="the first attempt failed")
        await nats.start()
        await asyncio.wait_for(starting, 20)
        assert bus.connected and not bus.outage.in_outage
        assert any(m.startswith("NATS (early) works again after ") for m in _bus_lines(caplog, logging.INFO))
    finally:
        starting.cancel()
        await bus.stop()
        await nats.stop()
