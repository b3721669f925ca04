"""Housekeeping through a running plane: ended tasks, audit entries, unused channels and disconnected agent
instances go once their retention is over; live tasks and channels in use stay. And the retention settings'
validation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from controlplane.settings import Settings
from controlplane.store.unit_of_work import Store
from meshplane.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    channel_pb2,
    channel_pb2_grpc,
    common_pb2,
    state_pb2,
    state_pb2_grpc,
    task_pb2,
)
from tests.controlplane.helpers import get_task, submit
from tests.controlplane.test_lifecycle import wait_state
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)


async def _gone(channel: grpc.aio.Channel, task_id: str) -> bool:
    try:
        await get_task(channel, task_id)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
        return True
    return False


async def test_ended_tasks_and_audit_entries_are_deleted_after_their_retention(
    tmp_path: Path, database_url: str
) -> None:
    async with (
        running_plane(
            tmp_path / "plane",
            database_url=database_url,
            task_retention="0.5s",
            audit_retention="0.5s",
            housekeeping_interval="0.1s",
        ) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        agent = LinkAgent(plane.address)
        await agent.connect()
        agent.serve_echo()
        done = await submit(channel)
        waiting = await submit(channel, capability="nobody.serves.this")
        await wait_state(channel, done.id, task_pb2.TASK_STATE_SUCCEEDED)
        await state_pb2_grpc.StateServiceStub(channel).PutState(
            state_pb2.PutStateRequest(namespace="n", key="k", value=common_pb2.Payload(data=b"1"))
        )
        assert plane.database is not None
        store = Store(plane.database)

        async def audit_entries() -> int:
            async with store.reader() as uow:
                return len(await uow.audit.for_resource("namespaces/n/states/k"))

        assert await audit_entries() == 1
        await eventually(lambda: _gone(channel, done.id), timeout=15)
        await eventually(lambda: _none_left(audit_entries), timeout=15)
        assert (await get_task(channel, waiting.id)).state == task_pb2.TASK_STATE_QUEUED, "live tasks stay"
        await agent.close()


async def test_channels_nobody_uses_for_their_retention_are_no_longer_listed(tmp_path: Path, database_url: str) -> None:
    async with (
        running_plane(
            tmp_path / "plane", database_url=database_url, channel_retention="2s", housekeeping_interval="0.1s"
        ) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        stub = channel_pb2_grpc.ChannelServiceStub(channel)
        payload = common_pb2.Payload(data=b"{}", content_type="application/json")

        async def listed() -> dict[str, channel_pb2.Channel]:
            page = await stub.ListChannels(channel_pb2.ListChannelsRequest(page_size=1000))
            return {c.name: c for c in page.channels}

        # Used before "gone" is: without their later uses being recorded they would go first.
        heard = stub.Subscribe(channel_pb2.SubscribeRequest(channel="quiet.but.heard"))
        assert (await heard.read()).WhichOneof("event") == "started"
        await stub.Publish(channel_pb2.PublishRequest(channel="busy", payload=payload))
        await stub.Publish(channel_pb2.PublishRequest(channel="gone", payload=payload))
        first = await listed()
        assert set(first) == {"quiet.but.heard", "busy", "gone"}
        assert first["gone"].last_use_time == first["gone"].create_time

        async def gone_is_gone() -> bool:
            await stub.Publish(channel_pb2.PublishRequest(channel="busy", payload=payload))
            return "gone" not in await listed()

        await eventually(gone_is_gone, timeout=20, interval=0.1)
        now = await listed()
        assert set(now) == {"quiet.but.heard", "busy"}, "a channel published to or listened to stays"
        for name in ("quiet.but.heard", "busy"):
            assert now[name].create_time == first[name].create_time
            assert now[name].last_use_time.ToNanoseconds() > first[name].last_use_time.ToNanoseconds()

        await stub.Publish(channel_pb2.PublishRequest(channel="gone", payload=payload))  # used again: back
        assert "gone" in await listed()
        heard.cancel()


async def test_agent_instances_disconnected_for_their_retention_are_no_longer_listed(
    tmp_path: Path, database_url: str
) -> None:
    """Each agent process is an instance of its own: the disconnected ones go once their retention is over."""
    async with (
        running_plane(
            tmp_path / "plane", database_url=database_url, instance_retention="1s", housekeeping_interval="0.1s"
        ) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        stub = agent_service_pb2_grpc.AgentServiceStub(channel)

        async def listed() -> set[str]:
            request = agent_service_pb2.ListAgentInstancesRequest(agent_name="churn", include_disconnected=True)
            return {i.instance_id for i in (await stub.ListAgentInstances(request)).instances}

        staying = LinkAgent(plane.address, name="churn")
        await staying.connect()
        leaving = LinkAgent(plane.address, name="churn")
        await leaving.connect()
        await leaving.close()
        assert await listed() == {staying.instance_id, leaving.instance_id}, "a disconnected instance is listed"

        await eventually(lambda: _only(listed, {staying.instance_id}), timeout=15, interval=0.1)
        await staying.close()


async def _only(listed: Callable[[], Awaitable[set[str]]], expected: set[str]) -> bool:
    return await listed() == expected


async def _none_left(count: Callable[[], Awaitable[int]]) -> bool:
    return await count() == 0


def test_retention_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, task_retention="7d", audit_retention="0")
    assert settings.task_retention == timedelta(days=7)
    assert settings.audit_retention == timedelta(0)
    assert settings.channel_retention == timedelta(days=7)
    assert settings.channel_use_refresh == 3600  # at most an hour stale
    assert Settings(data_dir=tmp_path, channel_retention="2s").channel_use_refresh == 0.2
    assert Settings(data_dir=tmp_path, channel_retention="0").channel_use_refresh == 3600
    with pytest.raises(ValidationError, match="channel_retention must be >= 0"):
        Settings(data_dir=tmp_path, channel_retention="-1s")
    with pytest.raises(ValidationError, match="task_retention must be >= 0"):
        Settings(data_dir=tmp_path, task_retention="-1s")
    with pytest.raises(ValidationError, match="housekeeping_interval must be > 0"):
        Settings(data_dir=tmp_path, housekeeping_interval="0")
