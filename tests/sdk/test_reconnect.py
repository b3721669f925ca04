"""Robustness of the agent link: control plane restarts, operator drains, rejected registrations."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest

from agent_runtime import (
    Agent,
    ChannelContext,
    MeshClient,
    RegistrationRejected,
    TaskCancelled,
    TaskContext,
    TaskEventType,
    TaskInfo,
    TaskState,
)
from controlplane.app import ControlPlane
from tests.sdk.conftest import serving, task_state, task_state_is
from tests.support import plane as plane_support
from tests.support.eventually import eventually
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(90)


def gated_agent(name: str, gates: dict[str, asyncio.Event], runs: collections.Counter[str]) -> Agent:
    """Each task {"gate": g} runs until gates[g] is set; runs counts handler starts per gate.

    Messages on the channel "gates" set the gate they name.
    """
    agent = Agent(name, max_concurrency=4, reconnect_max_delay=0.3)

    @agent.on_channel("gates")
    async def open_gate(ctx: ChannelContext, gate: str) -> None:
        gates[gate].set()

    @agent.task("work.gated")
    async def gated(ctx: TaskContext, data: dict[str, str]) -> dict[str, Any]:
        runs[data["gate"]] += 1
        await gates[data["gate"]].wait()
        return {"gate": data["gate"], "attempt": ctx.attempt}

    return agent


async def test_held_tasks_survive_a_control_plane_restart(tmp_path: Path) -> None:
    """Stop the plane mid-task and start a new one on the same port and data: nothing is lost or re-run.

    `early` finishes while the plane is down, so its result is unacknowledged and must be resent;
    `late` is still running when the agent reconnects, so it must be kept and complete normally.
    """
    address = f"127.0.0.1:{free_port()}"
    # A long lease: the new plane must not give up on the old replica's tasks before the agent is back.
    settings = plane_support.plane_settings(tmp_path / "plane", listen=address, lease_timeout=20)
    gates = {"early": asyncio.Event(), "late": asyncio.Event()}
    runs: collections.Counter[str] = collections.Counter()
    agent = gated_agent("survivor", gates, runs)

    first_plane = ControlPlane(settings)
    await first_plane.start()
    second_plane: ControlPlane | None = None
    try:
        async with serving(agent, address):
            first_session = agent.session_id
            async with MeshClient(address) as client:
                early = await client.submit("work.gated", {"gate": "early"})
                late = await client.submit("work.gated", {"gate": "late"})
                for task in (early, late):
                    await eventually(lambda t=task: _is_running(client, t.id), message=f"{task.id} running")

            await first_plane.stop()
            await eventually(lambda: agent.session_id is None, message="the agent noticed the plane is gone")
            gates["early"].set()  # finishes while disconnected: its result waits for an ack
            await eventually(lambda: runs["early"] == 1 and agent.in_flight == 1)

            second_plane = ControlPlane(
                plane_support.plane_settings(tmp_path / "plane", listen=address, lease_timeout=20)
            )
            await second_plane.start()
            await eventually(lambda: agent.session_id not in (None, first_session), message="reconnected")

            async with MeshClient(address) as client:
                await eventually(lambda: task_state_is(client, early.id, TaskState.SUCCEEDED), message="early resent")
                assert await task_state(client, late.id) is TaskState.RUNNING  # kept, not re-queued
                await client.publish("gates", "late")  # the channel subscription was restored too
                assert await client.result(late.id, timeout=10) == {"gate": "late", "attempt": 1}
                for task_id in (early.id, late.id):
                    stored = await client.get(task_id)
                    assert stored.state is TaskState.SUCCEEDED
                    assert [a.outcome for a in stored.attempts] == ["SUCCEEDED"]  # one attempt, never re-run
                    events = [e.type async for e in client.watch(task_id)]
                    assert events.count(TaskEventType.SUCCEEDED) == 1
                    assert TaskEventType.RETRYING not in events
                assert (await client.get(early.id)).output == {"gate": "early", "attempt": 1}
        assert runs == {"early": 1, "late": 1}
    finally:
        await first_plane.stop()
        if second_plane is not None:
            await second_plane.stop()


async def _is_running(client: MeshClient, task_id: str) -> bool:
    return await task_state_is(client, task_id, TaskState.RUNNING)


async def test_an_operator_drain_finishes_work_then_reconnects(plane: ControlPlane, client: MeshClient) -> None:
    gates = {"first": asyncio.Event(), "second": asyncio.Event()}
    runs: collections.Counter[str] = collections.Counter()
    agent = gated_agent("drained", gates, runs)
    gates["second"].set()

    async with serving(agent, plane.address):
        first_session = agent.session_id
        first = await client.submit("work.gated", {"gate": "first"})
        await eventually(lambda: _is_running(client, first.id))
        drained = await client.drain_instance("drained", agent.instance_id, timeout=30, reason="rolling upgrade")
        assert drained.status == "DRAINING"

        second = await client.submit("work.gated", {"gate": "second"})
        await eventually(lambda: task_state_is(client, second.id, TaskState.QUEUED))
        assert agent.session_id == first_session  # still finishing its work on the drained session

        gates["first"].set()
        assert await first.result(timeout=10) == {"gate": "first", "attempt": 1}
        await eventually(lambda: agent.session_id not in (None, first_session), message="a new session")
        assert await second.result(timeout=10) == {"gate": "second", "attempt": 1}
    assert runs == {"first": 1, "second": 1}


async def test_an_invalid_registration_fails_serve_instead_of_retrying(plane: ControlPlane) -> None:
    agent = Agent("not a valid name!")

    @agent.task("work.any")
    async def anything(ctx: TaskContext, data: Any) -> None:
        return None

    with pytest.raises(RegistrationRejected) as rejected:
        await asyncio.wait_for(agent.serve(plane.address), 10)
    assert rejected.value.field.startswith("register.agent_name")


async def test_wait_reads_the_ended_task_again_while_the_plane_restarts(tmp_path: Path) -> None:
    """The plane goes away right after the task ended, as the final record is read: wait() reads it again once
    the plane is back (same port and data), rather than call a task that succeeded unreachable."""
    address = f"127.0.0.1:{free_port()}"
    settings = plane_support.plane_settings(tmp_path / "plane", listen=address)
    first_plane = ControlPlane(settings)
    second_plane = ControlPlane(settings)
    restarting: list[asyncio.Task[None]] = []

    class PlaneStopsOnFirstRead(MeshClient):
        async def get(self, task_id: str) -> TaskInfo:
            if not restarting:
                await first_plane.stop()
                try:
                    return await super().get(task_id)  # the plane is down: UNAVAILABLE
                finally:
                    restarting.append(asyncio.ensure_future(second_plane.start()))
            return await super().get(task_id)

    await first_plane.start()
    try:
        async with MeshClient(address) as submitter:
            handle = await submitter.submit("nobody.serves.this", None)
            await submitter.cancel(handle.id, reason="ended before the plane stops")
        async with PlaneStopsOnFirstRead(address) as client:
            with pytest.raises(TaskCancelled) as ended:  # the final record, read from the restarted plane
                await client.wait(handle.id, timeout=30)
        assert ended.value.task.cancel_reason == "ended before the plane stops"
        assert len(restarting) == 1
    finally:
        for task in restarting:
            await task
        await second_plane.stop()
        await first_plane.stop()
