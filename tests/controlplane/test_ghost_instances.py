"""Instances shown connected on sessions their replica no longer has (killed with them, then restarted under
the same replica id) are marked disconnected, on both stores."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from meshplane.v1 import agent_pb2, agent_service_pb2, agent_service_pb2_grpc
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.plane_process import PlaneProcess

pytestmark = pytest.mark.timeout(90)

LEASE_S = 2.0


async def _statuses(address: str, agent: str) -> dict[str, int]:
    async with grpc.aio.insecure_channel(address) as channel:
        listed = await agent_service_pb2_grpc.AgentServiceStub(channel).ListAgentInstances(
            agent_service_pb2.ListAgentInstancesRequest(agent_name=agent, include_disconnected=True)
        )
    return {instance.instance_id: instance.status for instance in listed.instances}


async def test_a_restarted_replica_disconnects_the_instances_of_its_earlier_process(
    tmp_path: Path, database_url: str
) -> None:
    settings = {"database_url": database_url, "replica_id": "r1", "lease_timeout": LEASE_S, "heartbeat_interval": 0.5}
    first = PlaneProcess(tmp_path / "plane", **settings).start()
    port = first.address.rsplit(":", 1)[1]
    try:
        ghost = LinkAgent(first.address, name="ghost")
        await ghost.connect()
        assert (await _statuses(first.address, "ghost"))[ghost.instance_id] == agent_pb2.AGENT_INSTANCE_STATUS_CONNECTED
        first.kill()  # SIGKILL: the session's disconnect is never written
        await ghost.kill()  # and the agent never comes back
    finally:
        first.kill()

    second = PlaneProcess(tmp_path / "plane", listen=f"127.0.0.1:{port}", **settings).start()
    try:
        # The replica id is alive again, so no other replica would ever reap the row: the replica itself must.
        living = LinkAgent(second.address, name="ghost")
        await living.connect()

        async def ghost_disconnected() -> bool:
            statuses = await _statuses(second.address, "ghost")
            return statuses[ghost.instance_id] == agent_pb2.AGENT_INSTANCE_STATUS_DISCONNECTED

        await eventually(ghost_disconnected, timeout=30, message="the earlier process's instance disconnected")
        statuses = await _statuses(second.address, "ghost")
        assert statuses[living.instance_id] == agent_pb2.AGENT_INSTANCE_STATUS_CONNECTED, "a live session stays"
        await living.close()
    finally:
        second.kill()


async def test_a_drain_of_an_instance_its_replica_no_longer_has_is_refused(tmp_path: Path, database_url: str) -> None:
    """The operator is told the instance is not connected (nothing would drain), even before the sweep marks it."""
    settings = {"database_url": database_url, "replica_id": "r1", "lease_timeout": 60.0, "heartbeat_interval": 0.5}
    first = PlaneProcess(tmp_path / "plane", **settings).start()
    try:
        ghost = LinkAgent(first.address, name="ghost")
        await ghost.connect()
        first.kill()
        await ghost.kill()
    finally:
        first.kill()
    second = PlaneProcess(tmp_path / "plane", **settings).start()
    try:
        assert (await _statuses(second.address, "ghost"))[
            ghost.instance_id
        ] == agent_pb2.AGENT_INSTANCE_STATUS_CONNECTED
        async with grpc.aio.insecure_channel(second.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await agent_service_pb2_grpc.AgentServiceStub(channel).DrainAgentInstance(
                    agent_service_pb2.DrainAgentInstanceRequest(agent_name="ghost", instance_id=ghost.instance_id)
                )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert caught.value.details() == f"agent instance ghost/{ghost.instance_id} is not connected"
    finally:
        second.kill()
