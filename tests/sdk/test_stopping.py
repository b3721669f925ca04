"""An agent that stops with work unfinished says so: the plane re-queues the task at once, not when the lease runs out.

The plane here keeps leases for a minute: a task left RUNNING on the stopped instance would only come back after
that, far beyond these tests' waits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent_runtime import Agent, MeshClient, TaskContext, TaskHandle, TaskInfo, TaskState
from controlplane.app import ControlPlane
from tests.sdk.conftest import task_state_is
from tests.support.eventually import eventually
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)

LONG_LEASE = 60.0


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    """The SDK tests' plane, with a lease far longer than any wait below (overrides conftest's)."""
    async with running_plane(tmp_path / "plane", lease_timeout=LONG_LEASE) as started:
        yield started


def stuck_agent(name: str, started: asyncio.Event, reasons: list[str], *, drain_timeout: float = 30.0) -> Agent:
    """Serves `work.stuck`: an async handler that never finishes unless cancelled (it records why)."""
    agent = Agent(name, drain_timeout=drain_timeout)

    @agent.task("work.stuck")
    async def stuck(ctx: TaskContext, data: Any) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            reasons.append(ctx.cancel_reason)
        return "never"

    return agent


def rescuer_agent() -> Agent:
    agent = Agent("rescuer")

    @agent.task("work.stuck")
    async def finish(ctx: TaskContext, data: Any) -> dict[str, Any]:
        return {"attempt": ctx.attempt, "instance": ctx.instance_id}

    return agent


async def _requeued_by_agent_stop(client: MeshClient, task_id: str) -> TaskInfo | None:
    """The task once its first attempt ended FAILED with `agent_stopped` and the task went back to the queue."""
    task = await client.get(task_id)
    if task.state is not TaskState.QUEUED or not task.attempts or task.attempts[0].outcome != "FAILED":
        return None
    return task


async def _assert_given_up_and_rerun(
    client: MeshClient, serve: Callable[..., Any], handle: TaskHandle, stopped: Agent
) -> None:
    requeued: TaskInfo = await eventually(
        lambda: _requeued_by_agent_stop(client, handle.id),
        timeout=15,  # well before the 60 s lease: only the agent's own report can requeue it this soon
        message="the given-up attempt reported as failed and the task queued again",
    )
    first = requeued.attempts[0]
    assert first.agent_instance_id == stopped.instance_id
    assert first.error is not None
    assert first.error.code == "agent_stopped"
    assert first.error.retryable
    assert "stopped before the task finished" in first.error.message
    assert requeued.error is not None and requeued.error.code == "agent_stopped"

    rescuer = rescuer_agent()
    async with serve(rescuer):
        assert await handle.result(timeout=15) == {"attempt": 2, "instance": rescuer.instance_id}


async def test_a_task_still_running_when_the_drain_times_out_is_reported_and_requeued_at_once(
    serve: Any, client: MeshClient
) -> None:
    started = asyncio.Event()
    reasons: list[str] = []
    agent = stuck_agent("quitter", started, reasons, drain_timeout=0.2)

    async with serve(agent):
        handle = await client.submit("work.stuck", None, max_attempts=3)
        await asyncio.wait_for(started.wait(), 10)
        await eventually(lambda: task_state_is(client, handle.id, TaskState.RUNNING), message="task running")
        await asyncio.wait_for(agent.drain(), 20)  # what SIGINT/SIGTERM do: the handler outlives the drain timeout

    assert reasons == ["agent_stopped"]  # the handler was told why it was stopped
    await _assert_given_up_and_rerun(client, serve, handle, agent)


async def test_a_hard_stop_reports_the_running_tasks_before_leaving(serve: Any, client: MeshClient) -> None:
    """`Agent.stop()` (or a second SIGINT) with an async and a sync handler running: both tasks come back at once."""
    started = asyncio.Event()
    reasons: list[str] = []
    agent = stuck_agent("stopper", started, reasons)
    sync_started = threading.Event()
    sync_done = threading.Event()

    @agent.task("work.stuck_sync")
    def stuck_sync(ctx: TaskContext, data: Any) -> str:
        sync_started.set()
        while not ctx.is_cancelled():
            sync_done.wait(0.01)
        sync_done.set()
        return "finished after the agent gave it up: dropped"

    async with serve(agent):
        handle = await client.submit("work.stuck", None, max_attempts=3)
        sync_handle = await client.submit("work.stuck_sync", None, max_attempts=3)
        await asyncio.wait_for(started.wait(), 10)
        await eventually(sync_started.is_set, message="sync handler started")
        await eventually(lambda: task_state_is(client, sync_handle.id, TaskState.RUNNING), message="sync running")
        await asyncio.wait_for(agent.stop(), 20)

    assert reasons == ["agent_stopped"]
    await eventually(sync_done.is_set, message="the sync handler saw its cancellation")
    requeued: TaskInfo = await eventually(
        lambda: _requeued_by_agent_stop(client, sync_handle.id), timeout=15, message="sync task requeued"
    )
    assert requeued.attempts[0].error is not None and requeued.attempts[0].error.code == "agent_stopped"
    await _assert_given_up_and_rerun(client, serve, handle, agent)


async def test_a_task_finishing_within_the_drain_timeout_delivers_its_own_result(
    serve: Any, client: MeshClient
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    agent = Agent("finisher", drain_timeout=30)

    @agent.task("work.gated")
    async def gated(ctx: TaskContext, data: Any) -> dict[str, Any]:
        started.set()
        await release.wait()
        return {"attempt": ctx.attempt, "cancelled": ctx.cancel_reason}

    async with serve(agent):
        handle = await client.submit("work.gated", None, max_attempts=3)
        await asyncio.wait_for(started.wait(), 10)
        draining = asyncio.ensure_future(agent.drain())
        await eventually(lambda: agent.status == "draining", message="agent draining")
        release.set()
        await asyncio.wait_for(draining, 20)

    assert await handle.result(timeout=10) == {"attempt": 1, "cancelled": ""}
    task = await client.get(handle.id)
    assert [a.outcome for a in task.attempts] == ["SUCCEEDED"]
