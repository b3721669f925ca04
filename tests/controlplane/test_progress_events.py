"""A flood of progress reports: every report moves the task's progress, but only an attempt's first few
(then one per interval) become task events, so WatchTask and the events table do not grow by one per report."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from controlplane.domain.tasks import TaskRef
from controlplane.services.progress_events import ProgressEvents
from meshplane.v1 import task_pb2
from tests.controlplane.helpers import get_task, submit, watch_events
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)


def test_an_attempt_gets_a_burst_of_events_then_one_per_interval() -> None:
    events = ProgressEvents(burst=3, interval=1.0)
    first = TaskRef("t1", 1)
    assert [events.admit(first, 100.0) for _ in range(5)] == [True, True, True, False, False]
    assert events.admit(first, 100.9) is False
    assert events.admit(first, 101.0) is True  # an interval after the last recorded one
    assert events.admit(first, 101.5) is False
    assert events.admit(first, 102.0) is True


def test_a_new_attempt_or_a_forgotten_task_starts_a_new_burst() -> None:
    events = ProgressEvents(burst=1, interval=60.0)
    assert events.admit(TaskRef("t1", 1), 0.0) is True
    assert events.admit(TaskRef("t1", 1), 1.0) is False
    assert events.admit(TaskRef("t1", 2), 2.0) is True  # the retry's own burst
    assert events.admit(TaskRef("t2", 1), 2.0) is True  # tasks are counted apart
    events.forget("t1")
    assert events.admit(TaskRef("t1", 2), 3.0) is True


def test_what_is_remembered_is_bounded() -> None:
    events = ProgressEvents(burst=1, interval=60.0, capacity=2)
    for task in ("a", "b", "c"):
        assert events.admit(TaskRef(task, 1), 0.0) is True
    assert len(events) == 2
    assert events.admit(TaskRef("b", 1), 1.0) is False  # still remembered
    assert events.admit(TaskRef("a", 1), 1.0) is True  # the oldest was let go: a new burst


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
