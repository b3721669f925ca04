"""Task lifecycle on both stores: retries with backoff, non-retryable errors, dead-letter and
re-submission, cancellation, the four timeouts, stale results."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2

from controlplane.app import ControlPlane
from meshplane.v1 import task_pb2, task_service_pb2
from tests.controlplane.helpers import get_task, state_name, submit, tasks_stub, watch_events
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent

pytestmark = pytest.mark.timeout(60)


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(value * 1e9))
    return d


def retry(max_attempts: int, backoff: float = 0.05, **extra: object) -> task_pb2.RetryPolicy:
    return task_pb2.RetryPolicy(
        max_attempts=max_attempts,
        initial_backoff=seconds(backoff),
        max_backoff=seconds(backoff * 4),
        backoff_multiplier=2.0,
        **extra,  # type: ignore[arg-type]
    )


async def wait_state(channel: grpc.aio.Channel, task_id: str, state: int, timeout: float = 10) -> task_pb2.Task:
    async def reached() -> task_pb2.Task | None:
        task = await get_task(channel, task_id)
        return task if task.state == state else None

    return await eventually(reached, timeout=timeout, message=f"task {task_id} {state_name(state)}")


async def test_retryable_failure_is_retried_with_backoff_then_succeeds(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    agent = LinkAgent(plane.address)
    await agent.connect()
    task = await submit(channel, data={"n": 1}, retry_policy=retry(3, backoff=0.3))

    first = await agent.next_assignment()
    assert (first.task_id, first.attempt) == (task.id, 1)
    await agent.fail(first, code="Flaky", message="try again")
    second = await agent.next_assignment()
    assert (second.task_id, second.attempt) == (task.id, 2)
    await agent.succeed(second, {"ok": True})

    done = await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)
    assert [a.outcome for a in done.attempts] == [task_pb2.ATTEMPT_OUTCOME_FAILED, task_pb2.ATTEMPT_OUTCOME_SUCCEEDED]
    assert done.attempts[0].error.code == "Flaky"
    gap = done.attempts[1].assign_time.ToNanoseconds() - done.attempts[0].end_time.ToNanoseconds()
    assert gap >= 0.3 * 0.8 * 1e9, "the retry waited for its backoff (0.3s, -20% jitter)"
    kinds = [task_pb2.TaskEventType.Name(e.type) for e in await watch_events(channel, task.id)]
    assert "TASK_EVENT_TYPE_RETRYING" in kinds
    await agent.close()


async def test_non_retryable_error_fails_the_task_at_once(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agent = LinkAgent(plane.address)
    await agent.connect()
    task = await submit(channel, retry_policy=retry(5))
    await agent.fail(await agent.next_assignment(), code="BadInput", retryable=False)

    done = await wait_state(channel, task.id, task_pb2.TASK_STATE_FAILED)
    assert done.error.code == "BadInput"
    assert len(done.attempts) == 1
    await agent.close()


async def test_non_retryable_error_codes_override_the_agent(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agent = LinkAgent(plane.address)
    await agent.connect()
    task = await submit(channel, retry_policy=retry(5, non_retryable_error_codes=["QuotaExceeded"]))
    await agent.fail(await agent.next_assignment(), code="QuotaExceeded", retryable=True)

    done = await wait_state(channel, task.id, task_pb2.TASK_STATE_FAILED)
    assert len(done.attempts) == 1
    await agent.close()


async def test_task_is_dead_lettered_after_max_attempts_and_can_be_resubmitted(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    agent = LinkAgent(plane.address)
    await agent.connect()
    task = await submit(channel, data={"x": 1}, retry_policy=retry(2), correlation_id="corr-1")
    for attempt in (1, 2):
        assignment = await agent.next_assignment()
        assert assignment.attempt == attempt
        await agent.fail(assignment)

    dead = await wait_state(channel, task.id, task_pb2.TASK_STATE_DEAD_LETTER)
    assert len(dead.attempts) == 2
    listed = await tasks_stub(channel).ListTasks(
        task_service_pb2.ListTasksRequest(state=task_pb2.TASK_STATE_DEAD_LETTER)
    )
    assert [t.id for t in listed.tasks] == [task.id]

    resubmitted = (await tasks_stub(channel).ResubmitTask(task_service_pb2.ResubmitTaskRequest(task_id=task.id))).task
    assert resubmitted.id != task.id
    assert resubmitted.resubmitted_from == task.id
    assert resubmitted.correlation_id == "corr-1"
    again = await agent.next_assignment()
    assert (again.task_id, again.attempt) == (resubmitted.id, 1)
    await agent.succeed(again, {"fine": True})
    await wait_state(channel, resubmitted.id, task_pb2.TASK_STATE_SUCCEEDED)
    await agent.close()


async def test_resubmitting_a_live_task_is_a_failed_precondition(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    task = await submit(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasks_stub(channel).ResubmitTask(task_service_pb2.ResubmitTaskRequest(task_id=task.id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancel_queued_task(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    task = await submit(channel, capability="nobody.serves.this")
    cancelled = (
        await tasks_stub(channel).CancelTask(task_service_pb2.CancelTaskRequest(task_id=task.id, reason="not needed"))
    ).task
    assert cancelled.state == task_pb2.TASK_STATE_CANCELLED
    assert cancelled.cancel_reason == "not needed"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasks_stub(channel).CancelTask(task_service_pb2.CancelTaskRequest(task_id=task.id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancel_reaches_the_agent_and_a_late_result_is_ignored(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    agent = LinkAgent(plane.address, max_concurrency=1)
    await agent.connect()
    task = await submit(channel)
    assignment = await agent.next_assignment()
    await agent.started(assignment)
    await wait_state(channel, task.id, task_pb2.TASK_STATE_RUNNING)

    await tasks_stub(channel).CancelTask(task_service_pb2.CancelTaskRequest(task_id=task.id))
    await eventually(
        lambda: [(c.task_id, c.attempt, c.reason) for c in agent.cancellations] == [(task.id, 1, "cancelled")]
    )
    # The agent finished anyway: the result is acknowledged but does not change the outcome.
    await agent.succeed(assignment, {"too": "late"})
    await eventually(lambda: (task.id, 1) in agent.acks)
    final = await get_task(channel, task.id)
    assert final.state == task_pb2.TASK_STATE_CANCELLED
    assert not final.HasField("output")
    assert final.attempts[0].outcome == task_pb2.ATTEMPT_OUTCOME_CANCELLED
    # Its slot was freed by that result: the next task is assigned.
    follow_up = await submit(channel)
    assert (await agent.next_assignment()).task_id == follow_up.id
    await agent.close()


async def test_stale_attempt_result_is_ignored_never_applied_twice(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    agent = LinkAgent(plane.address, max_concurrency=2)
    await agent.connect()
    task = await submit(channel, retry_policy=retry(3))
    first = await agent.next_assignment()
    await agent.fail(first)
    second = await agent.next_assignment()
    await agent.succeed(second, {"attempt": 2})
    await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)

    await agent.succeed(first, {"attempt": 1})  # attempt 1 again: stale
    await agent.succeed(second, {"attempt": 2, "again": True})  # a duplicate of the applied result
    await eventually(lambda: agent.acks.count((task.id, 1)) >= 2 and agent.acks.count((task.id, 2)) >= 2)
    final = await get_task(channel, task.id)
    events = await watch_events(channel, task.id)
    assert [task_pb2.TaskEventType.Name(e.type) for e in events].count("TASK_EVENT_TYPE_SUCCEEDED") == 1
    assert final.output.json.struct_value.fields["attempt"].number_value == 2
    assert "again" not in final.output.json.struct_value.fields
    await agent.close()


async def test_reports_from_an_instance_that_does_not_hold_the_attempt_are_ignored(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    holder = LinkAgent(plane.address, name="holder", capabilities=["demo.echo"])
    stranger = LinkAgent(plane.address, name="stranger", capabilities=["something.else"])
    await holder.connect()
    await stranger.connect()
    task = await submit(channel)
    assignment = await holder.next_assignment()

    await stranger.progress(assignment, 0.5, "not mine")
    await stranger.succeed(assignment, {"from": "stranger"})  # the current attempt, but not the stranger's
    await eventually(lambda: (task.id, 1) in stranger.acks, message="the stranger's result handled (and dropped)")
    unchanged = await get_task(channel, task.id)
    assert unchanged.state == task_pb2.TASK_STATE_ASSIGNED and not unchanged.HasField("output")
    assert unchanged.progress == 0.0

    await holder.succeed(assignment, {"from": "holder"})
    await eventually(lambda: (task.id, 1) in holder.acks, message="the holder's result acknowledged")
    final = await get_task(channel, task.id)
    assert final.state == task_pb2.TASK_STATE_SUCCEEDED
    assert final.output.json.struct_value.fields["from"].string_value == "holder"
    kinds = [task_pb2.TaskEventType.Name(e.type) for e in await watch_events(channel, task.id)]
    assert "TASK_EVENT_TYPE_PROGRESS" not in kinds and kinds.count("TASK_EVENT_TYPE_SUCCEEDED") == 1
    assert plane.reports.stale_results == 1
    await stranger.close()
    await holder.close()


async def test_schedule_to_start_timeout_when_no_agent_serves_the_task(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    task = await submit(
        channel, capability="nobody.serves.this", timeouts=task_pb2.TaskTimeouts(schedule_to_start=seconds(0.3))
    )
    done = await wait_state(channel, task.id, task_pb2.TASK_STATE_TIMED_OUT)
    assert done.error.code == "schedule_to_start_timeout"


async def test_start_to_close_timeout_cancels_the_attempt_and_retries(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    agent = LinkAgent(plane.address, max_concurrency=2)
    await agent.connect()
    task = await submit(channel, retry_policy=retry(2), timeouts=task_pb2.TaskTimeouts(start_to_close=seconds(0.3)))
    first = await agent.next_assignment()
    await agent.started(first)  # ...and never finishes
    second = await agent.next_assignment()
    assert (second.task_id, second.attempt) == (task.id, 2)
    await eventually(lambda: any(c.task_id == task.id and c.reason == "timed_out" for c in agent.cancellations))
    await agent.succeed(second, {"ok": 1})
    done = await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)
    assert done.attempts[0].outcome == task_pb2.ATTEMPT_OUTCOME_TIMED_OUT
    assert done.attempts[0].error.code == "start_to_close_timeout"
    await agent.close()


async def test_heartbeat_timeout_fails_a_silent_attempt(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agent = LinkAgent(plane.address, max_concurrency=2)
    await agent.connect()
    task = await submit(channel, retry_policy=retry(1), timeouts=task_pb2.TaskTimeouts(heartbeat=seconds(1.0)))
    assignment = await agent.next_assignment()
    assert assignment.heartbeat_timeout.ToNanoseconds() == 1_000_000_000
    await agent.progress(assignment, 0.1)
    await wait_state(channel, task.id, task_pb2.TASK_STATE_RUNNING)
    # The agent keeps beating for 1.5s, longer than the 1s timeout: no timeout. (Beats 0.15s apart leave
    # a busy machine 0.85s of slack before a beat would be late.)
    for _ in range(10):
        await asyncio.sleep(0.15)  # pacing the agent's behaviour, not waiting for the plane
        await agent.task_heartbeat(assignment)
    assert (await get_task(channel, task.id)).state == task_pb2.TASK_STATE_RUNNING
    done = await wait_state(channel, task.id, task_pb2.TASK_STATE_DEAD_LETTER)  # then silence
    assert done.attempts[0].error.code == "heartbeat_timeout"
    await agent.close()


async def test_schedule_to_close_bounds_the_whole_task(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agent = LinkAgent(plane.address)
    await agent.connect()
    task = await submit(channel, timeouts=task_pb2.TaskTimeouts(schedule_to_close=seconds(0.5)))
    await agent.started(await agent.next_assignment())
    done = await wait_state(channel, task.id, task_pb2.TASK_STATE_TIMED_OUT)
    assert done.error.code == "schedule_to_close_timeout"
    await eventually(lambda: any(c.task_id == task.id for c in agent.cancellations))
    await agent.close()
