"""Progress reaches watchers; a cancellation reaches the running handler, which still answers once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from agent_runtime import Agent, MeshClient, TaskCancelled, TaskContext, TaskEventType, TaskFailed, TaskState
from tests.sdk.conftest import task_state_is
from tests.support.eventually import eventually

pytestmark = pytest.mark.timeout(60)


async def test_progress_reports_are_visible_to_watchers(serve: Any, client: MeshClient) -> None:
    agent = Agent("progress")
    release = asyncio.Event()

    @agent.task("work.steps")
    async def steps(ctx: TaskContext, data: Any) -> str:
        await ctx.progress(0.25, "a quarter")
        await ctx.progress(0.5, "half")
        await release.wait()
        await ctx.heartbeat()
        await ctx.progress(1.0, "all")
        return "done"

    @agent.task("work.sync_steps")
    def sync_steps(ctx: TaskContext, data: Any) -> str:
        ctx.progress(0.5, "half, from a thread")
        return "done"

    async with serve(agent):
        task = await client.submit("work.steps", None)
        await eventually(lambda: client.get(task.id), message="task exists")
        await eventually(lambda: _progress_is(client, task.id, 0.5), message="progress 0.5 recorded while running")
        release.set()
        assert await task.result(timeout=10) == "done"
        events = [e async for e in task.watch()]

        sync_task = await client.submit("work.sync_steps", None)
        assert await sync_task.result(timeout=10) == "done"
        sync_events = [e async for e in sync_task.watch()]

    progress = [(e.progress, e.message) for e in events if e.type is TaskEventType.PROGRESS]
    assert progress == [(0.25, "a quarter"), (0.5, "half"), (1.0, "all")]
    types = [e.type for e in events]
    assert types[:3] == [TaskEventType.CREATED, TaskEventType.ASSIGNED, TaskEventType.STARTED]
    assert types[-1] is TaskEventType.SUCCEEDED
    assert [e.message for e in sync_events if e.type is TaskEventType.PROGRESS] == ["half, from a thread"]


async def _progress_is(client: MeshClient, task_id: str, value: float) -> bool:
    task = await client.get(task_id)
    return task.state is TaskState.RUNNING and task.progress == value


async def test_cancellation_reaches_a_running_async_handler(serve: Any, client: MeshClient) -> None:
    agent = Agent("cancellable")
    started = asyncio.Event()
    observed: dict[str, Any] = {}

    @agent.task("work.forever")
    async def forever(ctx: TaskContext, data: Any) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            observed["event_set"] = ctx.cancelled.is_set()
            observed["reason"] = ctx.cancel_reason
            raise

    async with serve(agent):
        task = await client.submit("work.forever", None)
        await asyncio.wait_for(started.wait(), 10)
        await eventually(lambda: task_state_is(client, task.id, TaskState.RUNNING))
        await client.cancel(task.id, reason="not needed")
        with pytest.raises(TaskCancelled) as cancelled:
            await task.wait(timeout=10)
        # The agent still answered the attempt (code "cancelled"), which freed its slot.
        await eventually(lambda: agent.in_flight == 0, message="handler finished")
        await eventually(lambda: _attempt_outcome_is(client, task.id, "CANCELLED"))

    assert observed == {"event_set": True, "reason": "cancelled"}
    assert cancelled.value.task.cancel_reason == "not needed"


async def test_cancellation_is_visible_to_a_sync_handler(serve: Any, client: MeshClient) -> None:
    agent = Agent("cancellable-sync")
    started = threading.Event()
    stopped_by_cancel = threading.Event()

    @agent.task("work.loop")
    def loop(ctx: TaskContext, data: Any) -> None:
        started.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ctx.is_cancelled():
                stopped_by_cancel.set()
                ctx.raise_if_cancelled()
            time.sleep(0.01)

    async with serve(agent):
        task = await client.submit("work.loop", None)
        await eventually(started.is_set, message="handler started")
        await client.cancel(task.id)
        await eventually(stopped_by_cancel.is_set, message="the sync handler saw the cancellation")
        with pytest.raises(TaskCancelled):
            await task.wait(timeout=10)
        await eventually(lambda: agent.in_flight == 0)


async def _attempt_outcome_is(client: MeshClient, task_id: str, outcome: str) -> bool:
    task = await client.get(task_id)
    return bool(task.attempts) and task.attempts[-1].outcome == outcome


async def test_an_attempt_past_its_deadline_is_stopped_and_its_slot_freed(serve: Any, client: MeshClient) -> None:
    agent = Agent("deadlines", max_concurrency=1)
    reasons: list[str] = []

    @agent.task("work.stuck")
    async def stuck(ctx: TaskContext, data: Any) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            reasons.append(ctx.cancel_reason)

    @agent.task("work.quick")
    async def quick(ctx: TaskContext, data: Any) -> str:
        return "ok"

    async with serve(agent):
        stuck_task = await client.submit("work.stuck", None, start_to_close=0.5, max_attempts=1)
        with pytest.raises(TaskFailed):
            await stuck_task.wait(timeout=15)
        # The only slot is free again: the next task runs.
        assert await (await client.submit("work.quick", None)).result(timeout=10) == "ok"

    assert reasons and reasons[0] in {"deadline_exceeded", "timed_out"}
    final = await client.get(stuck_task.id)
    assert final.attempts[0].outcome in {"TIMED_OUT", "FAILED"}


async def test_the_clients_cancel_reason_reaches_the_handler(serve: Any, client: MeshClient) -> None:
    agent = Agent("cancel-message")
    started: asyncio.Queue[str] = asyncio.Queue()
    sync_started = threading.Event()
    seen: dict[str, tuple[str, str, bool]] = {}

    @agent.task("work.forever")
    async def forever(ctx: TaskContext, data: Any) -> None:
        started.put_nowait(ctx.task_id)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen[ctx.task_id] = (ctx.cancel_reason, ctx.cancel_message, ctx.cancelled.is_set())
            raise

    @agent.task("work.loop")
    def loop(ctx: TaskContext, data: Any) -> None:
        sync_started.set()
        deadline = time.monotonic() + 30
        while not ctx.is_cancelled() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen[ctx.task_id] = (ctx.cancel_reason, ctx.cancel_message, ctx.is_cancelled())

    async with serve(agent):
        with_reason = await client.submit("work.forever", None)
        assert await asyncio.wait_for(started.get(), 10) == with_reason.id
        await client.cancel(with_reason.id, reason="operator says stop")
        await eventually(lambda: with_reason.id in seen, message="the async handler saw the cancellation")

        without_reason = await client.submit("work.forever", None)
        assert await asyncio.wait_for(started.get(), 10) == without_reason.id
        await client.cancel(without_reason.id)
        await eventually(lambda: without_reason.id in seen, message="the async handler saw the cancellation")

        in_thread = await client.submit("work.loop", None)
        await eventually(sync_started.is_set, message="the sync handler started")
        await client.cancel(in_thread.id, reason="operator says stop (sync)")
        await eventually(lambda: in_thread.id in seen, message="the sync handler saw the cancellation")
        await eventually(lambda: agent.in_flight == 0, message="every handler finished")

    assert seen[with_reason.id] == ("cancelled", "operator says stop", True)
    assert seen[without_reason.id] == ("cancelled", "", True)  # the task records "cancelled by client"; not the agent
    assert seen[in_thread.id] == ("cancelled", "operator says stop (sync)", True)
    assert (await client.get(with_reason.id)).cancel_reason == "operator says stop"


async def test_a_timeout_cancellation_carries_no_message(serve: Any, client: MeshClient) -> None:
    agent = Agent("cancel-on-timeout")
    seen: list[tuple[str, str]] = []

    @agent.task("work.silent")
    async def silent(ctx: TaskContext, data: Any) -> None:
        try:
            await asyncio.sleep(3600)  # never heartbeats: the plane times the attempt out and cancels it
        except asyncio.CancelledError:
            seen.append((ctx.cancel_reason, ctx.cancel_message))
            raise

    async with serve(agent):
        task = await client.submit("work.silent", None, heartbeat_timeout=0.5, max_attempts=1)
        with pytest.raises(TaskFailed):
            await task.wait(timeout=15)
        await eventually(lambda: seen, message="the handler saw the plane's cancellation")
        await eventually(lambda: agent.in_flight == 0)

    assert seen == [("timed_out", "")]
    final = await client.get(task.id)
    assert final.attempts[0].outcome == "TIMED_OUT"
