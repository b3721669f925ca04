"""WatchTask on a task that ended with more events than one page read sends them all, up to its end (it used
to stop after the first page: a task with over 1,000 events, say 1,000 progress reports, was watched without
its end)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from agent_runtime import MeshClient
from controlplane.app import ControlPlane
from controlplane.services import tasks as task_service
from meshplane.v1 import task_pb2, task_service_pb2
from tests.controlplane.helpers import get_task, submit, tasks_stub, watch_events
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)


async def test_watching_an_ended_task_with_more_events_than_a_page_sends_every_one_to_its_end(
    plane: ControlPlane, channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_service, "EVENTS_PAGE", 3)
    agent = LinkAgent(plane.address, capabilities=["demo.echo"])
    await agent.connect()
    try:
        task = await submit(channel, data={"n": 1})
        assignment = await agent.next_assignment()
        for step in (0.25, 0.5, 0.75):  # one at a time: each its own event

            async def applied(value: float = step) -> bool:
                return (await get_task(channel, task.id)).progress == value

            await agent.progress(assignment, step, f"at {step}")
            await eventually(applied, message=f"progress {step}")
        await agent.succeed(assignment, {"n": 1})
        await eventually(
            lambda: _state_is(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED), message="the task succeeded"
        )
    finally:
        await agent.close()

    events = await watch_events(channel, task.id)

    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert len(events) > 2 * task_service.EVENTS_PAGE
    assert [e.progress for e in events if e.type == task_pb2.TASK_EVENT_TYPE_PROGRESS] == [0.25, 0.5, 0.75]
    assert events[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    later = await watch_events(channel, task.id, after=events[4].sequence)  # resuming mid-way, across pages
    assert [e.sequence for e in later] == [e.sequence for e in events[5:]]


async def _state_is(channel: grpc.aio.Channel, task_id: str, state: int) -> bool:
    return (await get_task(channel, task_id)).state == state


async def test_events_name_who_caused_them(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    """Who submitted or cancelled a task is in its history (as the audit trail names callers), not only in SQL."""
    task = await submit(channel, data={"n": 1})
    await tasks_stub(channel).CancelTask(task_service_pb2.CancelTaskRequest(task_id=task.id, reason="not needed"))
    events = await watch_events(channel, task.id)
    assert [(e.type, e.actor) for e in events] == [
        (task_pb2.TASK_EVENT_TYPE_CREATED, "client/anonymous"),
        (task_pb2.TASK_EVENT_TYPE_CANCELLED, "client/anonymous"),
    ]
    async with MeshClient(plane.address) as client:  # the SDK's events carry it too
        assert [event.actor async for event in client.watch(task.id)] == ["client/anonymous"] * 2


async def test_a_deadline_is_the_system_s_doing(tmp_path: Path) -> None:
    async with running_plane(tmp_path, sweep_interval=0.05) as plane, grpc.aio.insecure_channel(plane.address) as ch:
        timeouts = task_pb2.TaskTimeouts(schedule_to_start=duration_pb2.Duration(nanos=100_000_000))
        task = await submit(ch, data={"n": 1}, timeouts=timeouts)  # nobody serves it: it times out waiting
        await eventually(lambda: _state_is(ch, task.id, task_pb2.TASK_STATE_TIMED_OUT), message="timed out")
        events = await watch_events(ch, task.id)
        assert (events[-1].type, events[-1].actor) == (task_pb2.TASK_EVENT_TYPE_TIMED_OUT, "system/timeouts")
