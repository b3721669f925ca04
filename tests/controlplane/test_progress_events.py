"""A flood of progress reports: every report moves the task's progress, but only an attempt's first few
(then one per interval) become task events, so WatchTask and the events table do not grow by one per report.
A report left out is recorded later (the trailing event) when no event recorded newer progress meanwhile, so
an attempt that goes quiet does not leave its watchers behind."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from controlplane.domain.tasks import TaskRef
from controlplane.services.progress_events import ProgressEvents, Reported
from meshplane.v1 import agent_link_pb2, task_pb2, task_service_pb2
from tests.controlplane.helpers import get_task, submit, tasks_stub, watch_events
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)


def report(task_id: str, attempt: int = 1) -> Reported:
    return Reported(TaskRef(task_id, attempt), "agent-1", "agent/agent/agent-1")


def test_an_attempt_gets_a_burst_of_events_then_one_per_interval() -> None:
    events = ProgressEvents(burst=3, interval=1.0)
    first = report("t1")
    assert [events.admit(first, 100.0) for _ in range(5)] == [True, True, True, False, False]
    assert events.admit(first, 100.9) is False
    assert events.admit(first, 101.0) is True  # an interval after the last recorded one
    assert events.admit(first, 101.5) is False
    assert events.admit(first, 102.0) is True


def test_a_new_attempt_or_a_forgotten_task_starts_a_new_burst() -> None:
    events = ProgressEvents(burst=1, interval=60.0)
    assert events.admit(report("t1"), 0.0) is True
    assert events.admit(report("t1"), 1.0) is False
    assert events.admit(report("t1", 2), 2.0) is True  # the retry's own burst
    assert events.admit(report("t2"), 2.0) is True  # tasks are counted apart
    events.forget("t1")
    assert events.admit(report("t1", 2), 3.0) is True


def test_what_is_remembered_is_bounded() -> None:
    events = ProgressEvents(burst=1, interval=60.0, capacity=2)
    for task in ("a", "b", "c"):
        assert events.admit(report(task), 0.0) is True
    assert len(events) == 2
    assert events.admit(report("b"), 1.0) is False  # still remembered
    assert events.admit(report("a"), 1.0) is True  # the oldest was let go: a new burst


def test_a_held_back_report_is_due_an_interval_after_the_last_event_and_recorded_once() -> None:
    events = ProgressEvents(burst=1, interval=1.0)
    held = report("t1")
    assert events.admit(held, 100.0) is True
    assert events.admit(held, 100.5) is False  # held back
    assert events.due(100.9) == []  # the last event was less than an interval ago
    assert events.due(101.0) == [held]
    assert events.due(101.0) == []  # handed out once
    assert events.trail(held.ref, 101.1) is True  # the trailing event
    assert events.trail(held.ref, 101.2) is False  # nothing held back any more
    assert events.admit(held, 101.5) is False  # the trailing event counts: one per interval still
    assert events.due(102.0) == []
    assert events.due(102.1) == [held]


def test_no_trailing_event_once_a_later_event_recorded_newer_progress() -> None:
    events = ProgressEvents(burst=1, interval=1.0)
    held = report("t1")
    assert events.admit(held, 0.0) is True
    assert events.admit(held, 0.5) is False
    assert events.admit(held, 1.0) is True  # newer progress, recorded
    assert events.due(5.0) == []
    assert events.trail(held.ref, 5.0) is False


def test_a_trailing_report_overtaken_by_a_later_event_waits_an_interval_after_it() -> None:
    events = ProgressEvents(burst=1, interval=1.0)
    held = report("t1")
    assert events.admit(held, 0.0) is True
    assert events.admit(held, 0.5) is False
    assert events.due(1.0) == [held]  # the trailing report is on its way...
    assert events.admit(held, 1.1) is True  # ...behind a later report recorded as an event,
    assert events.admit(held, 1.2) is False  # and one held back again
    assert events.trail(held.ref, 1.3) is False  # not two events within an interval
    assert events.due(2.0) == []
    assert events.due(2.1) == [held]
    assert events.trail(held.ref, 2.1) is True


def test_nothing_is_held_back_for_an_attempt_that_was_forgotten() -> None:
    events = ProgressEvents(burst=1, interval=1.0, capacity=2)
    for task in ("a", "b", "c"):  # "a" is evicted when "c" comes
        assert events.admit(report(task), 0.0) is True
        assert events.admit(report(task), 0.5) is False
    events.forget("b")  # its result
    assert events.admit(report("c", 2), 0.6) is True  # a retry: the first attempt's report goes with it
    assert events.due(10.0) == []
    assert [events.trail(TaskRef(task, 1), 10.0) for task in ("a", "b", "c")] == [False, False, False]
    assert events.trail(TaskRef("c", 2), 10.0) is False  # nothing of the retry held back


async def test_a_progress_flood_moves_the_task_but_records_a_burst_of_events(tmp_path: Path, database_url: str) -> None:
    async with (
        running_plane(
            tmp_path / "plane", database_url=database_url, progress_event_burst=5, progress_event_interval=3600
        ) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        agent = LinkAgent(plane.address, capabilities=["demo.echo"])
        await agent.connect()
        task = await submit(channel, data={"n": 1})
        assignment = await agent.next_assignment()
        for step in range(1, 201):
            await agent.progress(assignment, step / 200, f"step {step}")

        async def shows_the_last_report() -> bool:
            stored = await get_task(channel, task.id)
            return stored.progress == 1.0 and stored.progress_message == "step 200"

        await eventually(shows_the_last_report, message="the task shows the last progress report")
        await agent.succeed(assignment, {"done": True})
        events = await watch_events(channel, task.id)
        await agent.close()

    progress = [(e.message, round(e.progress, 3)) for e in events if e.type == task_pb2.TASK_EVENT_TYPE_PROGRESS]
    assert progress == [(f"step {n}", round(n / 200, 3)) for n in range(1, 6)]
    assert task_pb2.TaskEventType.Name(events[-1].type) == "TASK_EVENT_TYPE_SUCCEEDED"
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


def progress_of(events: list[task_pb2.TaskEvent]) -> list[tuple[str, float]]:
    return [(e.message, round(e.progress, 3)) for e in events if e.type == task_pb2.TASK_EVENT_TYPE_PROGRESS]


async def flood(agent: LinkAgent, assignment: agent_link_pb2.Assignment, reports: int) -> None:
    for step in range(1, reports + 1):
        await agent.progress(assignment, step / reports, f"step {step}")


@contextlib.asynccontextmanager
async def watching(channel: grpc.aio.Channel, task_id: str) -> AsyncIterator[list[task_pb2.TaskEvent]]:
    """The task's events, as WatchTask streams them while in the block."""
    events: list[task_pb2.TaskEvent] = []

    async def collect() -> None:
        request = task_service_pb2.WatchTaskRequest(task_id=task_id)
        async for response in tasks_stub(channel).WatchTask(request):
            events.append(response.event)

    collector = asyncio.ensure_future(collect())
    try:
        yield events
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector


async def a_later_trailing_event(channel: grpc.aio.Channel, agent: LinkAgent) -> None:
    """Wait for a later pass of the trailing events: another attempt of `agent` (in the same lane) goes quiet
    after a flood, and WatchTask shows its trailing event."""
    witness = await submit(channel, data={"witness": True})
    assignment = await agent.next_assignment()
    async with watching(channel, witness.id) as events:
        await flood(agent, assignment, 20)
        await eventually(lambda: progress_of(events)[-1:] == [("step 20", 1.0)], message="the witness's trailing event")
    await agent.succeed(assignment, {"done": True})


async def test_an_attempt_that_goes_quiet_after_a_thinned_report_gets_a_trailing_event(
    tmp_path: Path, database_url: str
) -> None:
    async with (
        running_plane(
            tmp_path / "plane", database_url=database_url, progress_event_burst=5, progress_event_interval=0.2
        ) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        agent = LinkAgent(plane.address, capabilities=["demo.echo"])
        await agent.connect()
        task = await submit(channel, data={"n": 1})
        assignment = await agent.next_assignment()
        async with watching(channel, task.id) as events:
            await flood(agent, assignment, 200)  # then quiet: the agent only heartbeats
            await eventually(
                lambda: progress_of(events)[-1:] == [("step 200", 1.0)], message="WatchTask shows the last report"
            )
            assert (await get_task(channel, task.id)).state == task_pb2.TASK_STATE_RUNNING
        await a_later_trailing_event(channel, agent)
        await agent.succeed(assignment, {"done": True})
        history = await watch_events(channel, task.id)
        await agent.close()

    progress = progress_of(history)
    assert progress[:5] == [(f"step {n}", round(n / 200, 3)) for n in range(1, 6)]  # the burst
    assert progress.count(("step 200", 1.0)) == 1  # one trailing event, however many passes since
    assert progress[-1] == ("step 200", 1.0)
    assert task_pb2.TaskEventType.Name(history[-1].type) == "TASK_EVENT_TYPE_SUCCEEDED"
    assert [e.sequence for e in history] == list(range(1, len(history) + 1))


async def test_no_trailing_event_after_the_attempts_result(tmp_path: Path, database_url: str) -> None:
    async with (
        running_plane(
            tmp_path / "plane", database_url=database_url, progress_event_burst=5, progress_event_interval=0.2
        ) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        agent = LinkAgent(plane.address, capabilities=["demo.echo"])
        await agent.connect()
        task = await submit(channel, data={"n": 1})
        assignment = await agent.next_assignment()
        await flood(agent, assignment, 50)  # the last reports thinned...
        await agent.succeed(assignment, {"done": True})  # ...and the result at once
        await a_later_trailing_event(channel, agent)
        history = await watch_events(channel, task.id)
        await agent.close()

    kinds = [task_pb2.TaskEventType.Name(e.type) for e in history]
    assert kinds[-1] == "TASK_EVENT_TYPE_SUCCEEDED"  # nothing after the result
    assert kinds.count("TASK_EVENT_TYPE_SUCCEEDED") == 1
    assert [e.sequence for e in history] == list(range(1, len(history) + 1))
