"""A submit places its tasks itself (sync match) when a session here has room and no queued work can be
waiting ahead of them: the task is inserted ASSIGNED with its attempt, and no claim round is needed.
Otherwise the task is queued and a dispatch round places it, as before. On both stores.

The plane here polls only every 30 s, so a task placed within the tests' seconds was placed by its submit
or by a round something woke, not by the fallback poll.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from controlplane.app import ControlPlane
from controlplane.store.tasks import TaskRows, TaskWrites
from meshplane.v1 import task_pb2, task_service_pb2
from tests.controlplane.helpers import submit, submit_request, tasks_stub, watch_events
from tests.controlplane.test_lifecycle import retry, wait_state
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.timeout(60)

QUEUED = task_pb2.TASK_STATE_QUEUED
ASSIGNED = task_pb2.TASK_STATE_ASSIGNED


async def _connected(plane: ControlPlane, capabilities: list[str], **options: object) -> LinkAgent:
    agent = LinkAgent(plane.address, capabilities=capabilities, **options)  # type: ignore[arg-type]
    await agent.connect()
    # The round a new capability earns has run and found nothing queued: submits may place its tasks.
    await eventually(
        lambda: all(plane.dispatcher.is_clear(c) for c in capabilities), message="the joining session's round"
    )
    return agent


async def _strand(plane: ControlPlane, channel: grpc.aio.Channel, capability: str) -> None:
    """Queue a task of `capability` nobody here can take (zone=eu), and wait for the round it wakes: from
    then on the dispatcher knows work of `capability` is waiting."""
    rounds = plane.dispatcher.rounds  # counted before the submit: its round may end before the answer arrives
    stranded = await submit(channel, target=task_pb2.TaskTarget(capability=capability, label_selector={"zone": "eu"}))
    assert stranded.state == QUEUED
    await eventually(lambda: plane.dispatcher.rounds > rounds, message="the round the queued task woke")


async def test_a_submit_places_its_task_when_a_session_has_room_and_nothing_waits(
    quiet_plane: ControlPlane, quiet_channel: grpc.aio.Channel
) -> None:
    agent = await _connected(quiet_plane, ["cap.sync"])
    rounds = quiet_plane.dispatcher.rounds

    task = await submit(quiet_channel, capability="cap.sync", data={"n": 1})
    assert task.state == ASSIGNED
    assert task.attempt == 1
    assert [(a.attempt, a.agent_instance_id) for a in task.attempts] == [(1, agent.instance_id)]
    assignment = await agent.next_assignment()
    assert (assignment.task_id, assignment.attempt) == (task.id, 1)
    assert quiet_plane.dispatcher.rounds == rounds  # no claim round was needed
    assert quiet_plane.dispatcher.assigned_on_submit == 1

    await agent.succeed(assignment, {"ok": True})
    events = await watch_events(quiet_channel, task.id)
    assert [(task_pb2.TaskEventType.Name(e.type), e.sequence, e.attempt) for e in events] == [
        ("TASK_EVENT_TYPE_CREATED", 1, 0),
        ("TASK_EVENT_TYPE_ASSIGNED", 2, 1),
        ("TASK_EVENT_TYPE_STARTED", 3, 1),
        ("TASK_EVENT_TYPE_SUCCEEDED", 4, 1),
    ]
    assert events[1].agent_instance_id == agent.instance_id
    await agent.close()


async def test_a_batch_places_by_priority_then_fifo_and_never_beyond_the_sessions_room(
    quiet_plane: ControlPlane, quiet_channel: grpc.aio.Channel
) -> None:
    agent = await _connected(quiet_plane, ["cap.batch"], max_concurrency=2)
    priorities = [0, 5, 0, 5, 0]
    request = task_service_pb2.BatchSubmitTasksRequest(
        requests=[submit_request("cap.batch", {"i": i}, priority=p) for i, p in enumerate(priorities)]
    )
    tasks = list((await tasks_stub(quiet_channel).BatchSubmitTasks(request)).tasks)
    # Two slots: the two priority-5 tasks, in submission order; the rest wait in the queue.
    assert [t.state for t in tasks] == [QUEUED, ASSIGNED, QUEUED, ASSIGNED, QUEUED]
    placed = {(await agent.next_assignment()).task_id for _ in range(2)}
    assert placed == {tasks[1].id, tasks[3].id}
    assert len(quiet_plane.registry.by_instance(agent.instance_id).in_flight) == 2  # type: ignore[union-attr]
    await agent.close()


async def test_while_queued_work_may_be_waiting_a_submit_leaves_its_task_to_the_queue(
    quiet_plane: ControlPlane, quiet_channel: grpc.aio.Channel
) -> None:
    agent = await _connected(quiet_plane, ["cap.wait"], labels={"zone": "us"})
    await _strand(quiet_plane, quiet_channel, "cap.wait")

    later = await submit(quiet_channel, capability="cap.wait")
    assert later.state == QUEUED  # not placed past the queue, though the session has room
    assert (await agent.next_assignment()).task_id == later.id  # a round placed it
    assert quiet_plane.dispatcher.assigned_on_submit == 0
    await agent.close()


async def test_work_waiting_for_one_capability_leaves_the_others_placed_on_submit(
    quiet_plane: ControlPlane, quiet_channel: grpc.aio.Channel
) -> None:
    agent = await _connected(quiet_plane, ["cap.stuck", "cap.free"], labels={"zone": "us"})
    await _strand(quiet_plane, quiet_channel, "cap.stuck")

    free = await submit(quiet_channel, capability="cap.free")
    assert free.state == ASSIGNED  # nothing waits for cap.free: the stranded task does not hold it back
    stuck = await submit(quiet_channel, capability="cap.stuck")
    assert stuck.state == QUEUED  # but cap.stuck's queue goes first
    assert {(await agent.next_assignment()).task_id for _ in range(2)} == {free.id, stuck.id}
    assert quiet_plane.dispatcher.assigned_on_submit == 1
    await agent.close()


@pytest.mark.postgres
async def test_while_a_round_assigns_all_that_was_queued_a_submit_still_places_its_task(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL only: on SQLite writes take turns, so no submit commits while a round's transaction is open.
    async with (
        running_plane(tmp_path / "plane", database_url=postgres_server.create_database(), sweep_interval=30) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        agent = await _connected(plane, ["cap.mid"])
        # Hold the next round after its claim (its assignments written but not yet committed).
        claimed_all, go_on = asyncio.Event(), asyncio.Event()
        write = TaskRows.write

        async def held_write(rows: TaskRows, writes: TaskWrites) -> None:
            await write(rows, writes)
            if writes.assigned:
                claimed_all.set()
                await go_on.wait()

        monkeypatch.setattr(TaskRows, "write", held_write)
        sticky = task_pb2.TaskTarget(
            capability="cap.mid", routing_key="k", strategy=task_pb2.SCHEDULING_STRATEGY_CONSISTENT_HASH
        )
        queued = await submit(channel, target=sticky)  # left to a round, which claims it
        assert queued.state == QUEUED
        await asyncio.wait_for(claimed_all.wait(), 10)
        try:
            during = await submit(channel, capability="cap.mid")
            assert during.state == ASSIGNED  # nothing queued is left ahead of it: the round has claimed it all
        finally:
            go_on.set()
        assert {(await agent.next_assignment()).task_id for _ in range(2)} == {queued.id, during.id}
        await agent.close()


async def test_sticky_tasks_are_left_to_the_dispatcher(
    quiet_plane: ControlPlane, quiet_channel: grpc.aio.Channel
) -> None:
    agent = await _connected(quiet_plane, ["cap.sticky"])
    target = task_pb2.TaskTarget(
        capability="cap.sticky", routing_key="user-7", strategy=task_pb2.SCHEDULING_STRATEGY_CONSISTENT_HASH
    )
    task = await submit(quiet_channel, target=target)
    assert task.state == QUEUED  # its owner may be an instance on another replica
    assert (await agent.next_assignment()).task_id == task.id
    await agent.close()


# Long enough for the tests' steps before the retry comes due, even on a slow machine.
RETRY_SOON = retry(3, backoff=2.0)


async def test_a_retry_that_came_due_is_not_overtaken_by_new_submits(
    quiet_plane: ControlPlane, quiet_channel: grpc.aio.Channel
) -> None:
    agent = await _connected(quiet_plane, ["cap.retry"], max_concurrency=1)
    first = await submit(quiet_channel, capability="cap.retry", retry_policy=RETRY_SOON)
    assert first.state == ASSIGNED
    await agent.fail(await agent.next_assignment())
    retried = await wait_state(quiet_channel, first.id, QUEUED)

    await _retry_goes_before_what_is_submitted_after_it_came_due(quiet_channel, agent, retried)
    await agent.close()


async def test_a_retry_scheduled_before_a_restart_is_not_overtaken_by_new_submits(
    tmp_path: Path, database_url: str
) -> None:
    async with (
        running_plane(tmp_path / "before", database_url=database_url, sweep_interval=30) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        agent = await _connected(plane, ["cap.retry"])
        first = await submit(channel, capability="cap.retry", retry_policy=RETRY_SOON)
        await agent.fail(await agent.next_assignment())
        retried = await wait_state(channel, first.id, QUEUED)
        await agent.close()

    # The new plane heard no announcement of that retry: it reads the pending ones when it starts.
    async with (
        running_plane(tmp_path / "after", database_url=database_url, sweep_interval=30) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        agent = LinkAgent(plane.address, capabilities=["cap.retry"], max_concurrency=1)
        await agent.connect()
        await _retry_goes_before_what_is_submitted_after_it_came_due(channel, agent, retried)
        await agent.close()


async def _retry_goes_before_what_is_submitted_after_it_came_due(
    channel: grpc.aio.Channel, agent: LinkAgent, retried: task_pb2.Task
) -> None:
    """`agent` (one slot) is free and `retried` waits in its backoff."""
    # During the backoff, new work takes the only slot (placed by its submit or by a round).
    before = await submit(channel, capability="cap.retry")
    assert (await agent.next_assignment()).task_id == before.id
    due = retried.scheduled_time.ToNanoseconds() / 1e9
    await eventually(lambda: time.time() > due + 0.05, message="the retry's backoff to pass")

    # The slot frees with the retry due: the retry goes first, not the task submitted next.
    await agent.succeed((before.id, 1), {"ok": True})
    await wait_state(channel, before.id, task_pb2.TASK_STATE_SUCCEEDED)
    after = await submit(channel, capability="cap.retry")
    assert after.state == QUEUED
    assignment = await agent.next_assignment()
    assert (assignment.task_id, assignment.attempt) == (retried.id, 2)
    await agent.succeed(assignment, {"ok": True})
    assert (await agent.next_assignment()).task_id == after.id
