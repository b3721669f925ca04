"""Two live agents given one instance_id: the older one stops with InstanceIdTaken instead of reconnecting.

Each registration of an instance_id replaces the session the instance had (that is how an agent reconnects), so
two agents sharing one, each reconnecting when replaced, used to take the session from each other for good.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agent_runtime import Agent, AgentStatus, InstanceIdTaken, MeshClient, TaskContext
from controlplane.app import ControlPlane
from tests.support.eventually import eventually

pytestmark = pytest.mark.timeout(60)

INSTANCE_ID = "twin-1"


def _twin(handler_started: asyncio.Event | None = None, cancelled: list[str] | None = None) -> Agent:
    """An agent of the instance INSTANCE_ID; with `handler_started`, its handler runs until it is cancelled."""
    agent = Agent("twin", instance_id=INSTANCE_ID, reconnect_max_delay=0.2)

    @agent.task("twin.work")
    async def work(ctx: TaskContext, data: Any) -> None:
        if handler_started is None:
            return
        handler_started.set()
        try:
            await asyncio.Event().wait()
        finally:
            if cancelled is not None:
                cancelled.append(ctx.cancel_reason)

    return agent


def _plane_sessions(plane: ControlPlane) -> list[str]:
    return [s.session_id for s in plane.supervisor.live_sessions() if s.instance_id == INSTANCE_ID]


async def test_the_agent_whose_instance_id_another_agent_registers_stops_and_the_other_keeps_it(
    plane: ControlPlane, serve: Any, client: MeshClient
) -> None:
    running, cancelled = asyncio.Event(), []
    first, second = _twin(running, cancelled), _twin()
    async with serve(first) as first_serving:
        task = await client.submit("twin.work", {})
        await asyncio.wait_for(running.wait(), 10)  # the first is mid-task when it is replaced
        async with serve(second):
            with pytest.raises(InstanceIdTaken) as taken:
                await asyncio.wait_for(first_serving, 10)
            assert taken.value.instance_id == INSTANCE_ID
            assert f"instance_id {INSTANCE_ID!r} is taken by another agent" in str(taken.value)
            assert "two agents share this instance_id" in taken.value.message
            assert first.status is AgentStatus.STOPPED
            assert cancelled == ["agent_stopped"]  # its handler was stopped, not left running

            session = second.session_id
            assert session is not None and second.status is AgentStatus.CONNECTED
            assert _plane_sessions(plane) == [session]
            [instance] = await client.list_instances("twin")
            assert (instance.instance_id, instance.session_id, instance.status) == (INSTANCE_ID, session, "CONNECTED")

            # No flapping: a few heartbeats of the second later (the first used to be back within 0.2 s), the plane
            # still serves the instance on the second's session.
            stopped_at = time.monotonic()
            heartbeat = plane.settings.heartbeat_interval.total_seconds()
            await eventually(lambda: _heard_since(plane, session, stopped_at + 3 * heartbeat), timeout=10)
            assert _plane_sessions(plane) == [session] and second.session_id == session

            # The task settles: the second registered without it, so the plane took it back from the replaced
            # session (which sent no result for it) and the second ran it.
            done = await client.wait(task.id, timeout=10)
            assert [a.outcome for a in done.attempts] == ["LOST", "SUCCEEDED"], done.attempts


def _heard_since(plane: ControlPlane, session_id: str, moment: float) -> bool:
    """The plane heard from `session_id` after `moment` (monotonic)."""
    return any(s.session_id == session_id and s.last_seen > moment for s in plane.supervisor.live_sessions())
