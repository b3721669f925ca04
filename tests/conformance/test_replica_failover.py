"""A replica that cannot register agents must not hold one forever (CONTRACT.md, "Replicas that cannot register
the agent"), once per SDK language.

Two control planes: the broken one's PostgreSQL is halted (health NOT_SERVING; every agent stream ends UNAVAILABLE,
the registration cannot be stored), the healthy one runs on SQLite; each has its own embedded NATS. The agent gets
either both addresses (``ipv4:<broken>,<healthy>``, the broken one first) or one address in front of both (a TCP
proxy that sends each new connection to the next plane in turn, the broken one first), and must register on the
healthy plane (its READY line) and serve there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshplane.v1 import agent_pb2, task_pb2
from tests.conformance.driver import AgentProcess, Agents, Mesh, describe, output
from tests.support.replicas import Replicas, replica_without_database
from tests.support.tcp_proxy import round_robin_proxy

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


@pytest.fixture
async def replicas(agents: Agents, tmp_path: Path) -> AsyncIterator[Replicas]:
    """The two planes; on the way out the agents are stopped first (see the `plane` fixture in conftest.py)."""
    async with replica_without_database(tmp_path / "replicas") as started:
        try:
            yield started
        finally:
            await agents.close()
            async with Mesh(started.healthy.address) as mesh:
                await mesh.wait_all_disconnected()


async def assert_serving_on(mesh: Mesh, started: list[AgentProcess]) -> None:
    """Every agent connected to the plane behind `mesh`, and one of them runs a task there."""
    for agent in started:
        instance = await mesh.instance(agent.name, agent.instance_id)
        assert instance is not None, agent.describe()
        assert instance.status == agent_pb2.AGENT_INSTANCE_STATUS_CONNECTED, agent.describe()
    task = await mesh.run("conf.echo", {"served": "here"})
    assert task.state == task_pb2.TASK_STATE_SUCCEEDED, describe(task)
    assert output(task) == {"served": "here"}
    assert task.attempts[-1].agent_instance_id in {agent.instance_id for agent in started}, describe(task)


async def test_given_several_addresses_the_agent_registers_on_a_replica_that_can(
    replicas: Replicas, agents: Agents
) -> None:
    # Several agents: each one's first stream may go to either address; those that start on the broken plane
    # must move on.
    started = [await agents.start(replicas.addresses_target(), wait_ready=False) for _ in range(3)]
    await asyncio.gather(*(agent.wait_ready() for agent in started))
    async with Mesh(replicas.healthy.address) as mesh:
        await assert_serving_on(mesh, started)


async def test_behind_a_load_balancer_the_agent_retries_over_a_new_connection(
    replicas: Replicas, agents: Agents
) -> None:
    broken, healthy = replicas.broken.address, replicas.healthy.address
    async with round_robin_proxy([broken, healthy]) as proxy:
        agent = await agents.start(proxy.address)
        assert proxy.connections[:2] == [broken, healthy], agent.describe()
        async with Mesh(healthy) as mesh:
            await assert_serving_on(mesh, [agent])
        await agents.close()  # before the proxy goes: the plane sees the agent leave, not its connection break
