"""What the agent registers, and that heartbeats keep an idle session alive past the lease."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agent_runtime import Agent, AgentStatus, MeshClient, TaskContext, __version__
from controlplane.app import ControlPlane
from tests.support.eventually import eventually

pytestmark = pytest.mark.timeout(60)


async def test_registration_carries_identity_limits_and_labels(serve: Any, client: MeshClient) -> None:
    agent = Agent(
        "registrant",
        version="2.3.4",
        max_concurrency=7,
        labels={"zone": "eu"},
        description="registers things",
        weight=3,
        instance_id="registrant-fixed-1",
    )

    @agent.task("reg.one")
    async def one(ctx: TaskContext, data: Any) -> None:
        return None

    assert agent.status is AgentStatus.NEW
    async with serve(agent):
        assert agent.status is AgentStatus.CONNECTED
        [instance] = await client.list_instances("registrant")
        [info] = await client.list_agents(capability="reg.one")

    assert instance.instance_id == "registrant-fixed-1"
    assert (instance.version, instance.max_concurrency, instance.labels) == ("2.3.4", 7, {"zone": "eu"})
    assert instance.sdk == f"python {__version__}"
    assert instance.capabilities == ("reg.one",)
    assert instance.pid > 0 and instance.node
    assert (info.name, info.description, info.version) == ("registrant", "registers things", "2.3.4")
    assert agent.status is AgentStatus.STOPPED


async def test_an_idle_agent_keeps_its_session_by_heartbeating(
    plane: ControlPlane, serve: Any, client: MeshClient
) -> None:
    agent = Agent("idler")

    @agent.task("idle.never")
    async def never(ctx: TaskContext, data: Any) -> None:
        return None

    lease = plane.settings.lease_timeout.total_seconds()
    async with serve(agent):
        session = agent.session_id
        connected_at = time.monotonic()
        await eventually(lambda: time.monotonic() - connected_at > 2 * lease, timeout=3 * lease + 5)
        assert agent.session_id == session  # never lost, never reconnected
        [instance] = await client.list_instances("idler")
        assert instance.status == "CONNECTED" and instance.session_id == session
