"""A replica that cannot register agents (its database is out of reach) must not hold an agent forever.

The agent reaches the replicas either through a target naming several addresses (the link's round_robin policy
sends the next stream to the next address) or through one load-balanced address (only a new TCP connection can
reach another replica: after a failed registration the agent opens one). A session that registered and then ended
(a drain) is followed by a new session over the same connection, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent_runtime import Agent, MeshClient, TaskContext
from tests.support.eventually import eventually
from tests.support.plane import running_plane
from tests.support.replicas import Replicas, replica_without_database
from tests.support.tcp_proxy import round_robin_proxy

pytestmark = pytest.mark.timeout(120)


def echo_agent(name: str) -> Agent:
    agent = Agent(name)

    @agent.task("demo.echo")
    async def echo(ctx: TaskContext, data: Any) -> Any:
        return data

    return agent


@contextlib.asynccontextmanager
async def serving(agents: list[Agent], target: str) -> AsyncIterator[None]:
    """The agents served on `target` (not waiting for them to register); stopped at the end."""
    tasks = [asyncio.ensure_future(agent.serve(target)) for agent in agents]
    try:
        yield
    finally:
        for agent in agents:
            await agent.stop()
        await asyncio.wait(tasks, timeout=10)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"an agent's serve() failed: {task.exception()!r}")


async def connected_on(client: MeshClient, agent: Agent) -> bool:
    """The agent's current session is the one the plane behind `client` has for its instance."""
    session = agent.session_id
    if session is None:
        return False
    instances = await client.list_instances(agent.name)
    return any(i.instance_id == agent.instance_id and i.session_id == session for i in instances)


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[Replicas]:
    async with replica_without_database(tmp_path) as started:
        yield started


@pytest.mark.postgres
async def test_given_several_addresses_the_agent_moves_on_from_a_replica_that_cannot_register_it(
    replicas: Replicas,
) -> None:
    # Several agents: each one's first stream may go to either address; those that start on the broken one
    # must move on.
    agents = [echo_agent(f"failover-{n}") for n in range(3)]
    async with serving(agents, replicas.addresses_target()), MeshClient(replicas.healthy.address) as client:

        async def all_on_the_healthy_plane() -> bool:
            return all([await connected_on(client, agent) for agent in agents])

        await eventually(all_on_the_healthy_plane, timeout=20, message="every agent registered on the healthy plane")
        for agent in agents:
            handle = await client.submit("demo.echo", {"from": agent.name})
            assert await handle.result(timeout=15) == {"from": agent.name}


@pytest.mark.postgres
async def test_behind_a_load_balancer_the_agent_retries_over_a_new_connection(replicas: Replicas) -> None:
    agent = echo_agent("behind-proxy")
    # The first connection goes to the broken replica, the next one to the healthy one (and so on in turn).
    async with (
        round_robin_proxy([replicas.broken.address, replicas.healthy.address]) as proxy,
        serving([agent], proxy.address),
        MeshClient(replicas.healthy.address) as client,
    ):
        await eventually(lambda: connected_on(client, agent), timeout=20, message="the agent on the healthy plane")
        assert proxy.connections[:2] == [replicas.broken.address, replicas.healthy.address], proxy.connections
        handle = await client.submit("demo.echo", {"n": 1})
        assert await handle.result(timeout=15) == {"n": 1}


async def test_after_a_drain_the_agent_reconnects_over_the_same_connection(tmp_path: Path) -> None:
    # A session that registered and then ended normally: no new connection (the replica can register agents).
    agent = echo_agent("drained")
    async with (
        running_plane(tmp_path / "plane") as plane,
        round_robin_proxy([plane.address]) as proxy,
        serving([agent], proxy.address),
        MeshClient(plane.address) as client,
    ):
        await agent.wait_connected(timeout=15)
        first = agent.session_id
        await client.drain_instance(agent.name, agent.instance_id, timeout=5)

        async def new_session() -> bool:
            return agent.session_id not in (None, first) and await connected_on(client, agent)

        await eventually(new_session, timeout=20, message="a new session after the drain")
        assert proxy.connections == [plane.address]
