"""The reason a client gives to CancelTask reaches the agent running the task (Cancellation.message), on the
replica holding its session or through another one; cancellations that are not a client's carry none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from controlplane.api.convert import frames
from controlplane.app import ControlPlane
from controlplane.domain.tasks import TaskRef
from controlplane.link.messages import CancelMsg
from meshplane.v1 import agent_link_pb2, task_pb2, task_service_pb2
from tests.controlplane.helpers import submit, tasks_stub
from tests.controlplane.test_lifecycle import retry, seconds, wait_state
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.nats import nats_server
from tests.support.plane_process import PlaneProcess
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.timeout(60)

STOP = "operator says stop"


async def running_task(channel: grpc.aio.Channel, agent: LinkAgent, **fields: Any) -> task_pb2.Task:
    task = await submit(channel, **fields)
    assignment = await agent.next_assignment()
    assert assignment.task_id == task.id
    await agent.started(assignment)
    await wait_state(channel, task.id, task_pb2.TASK_STATE_RUNNING)
    return task


async def cancellation_of(agent: LinkAgent, task_id: str) -> agent_link_pb2.Cancellation:
    def received() -> agent_link_pb2.Cancellation | None:
        return next((c for c in agent.cancellations if c.task_id == task_id), None)

    found = await eventually(received, message=f"a cancellation of {task_id} on the agent's stream")
    assert found is not None
    return found


def test_cancel_frames_carry_the_message() -> None:
    [frame] = frames(
        [
            CancelMsg(TaskRef("t1", 1), "cancelled", STOP),
            CancelMsg(TaskRef("t2", 3), "timed_out"),
        ]
    )
    assert [(c.task_id, c.attempt, c.reason, c.message) for c in frame.cancellations.cancellations] == [
        ("t1", 1, "cancelled", STOP),
        ("t2", 3, "timed_out", ""),
    ]


async def test_the_cancel_reason_reaches_the_agent(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agent = LinkAgent(plane.address, max_concurrency=2)
    await agent.connect()

    with_reason = await running_task(channel, agent)
    cancelled = await tasks_stub(channel).CancelTask(
        task_service_pb2.CancelTaskRequest(task_id=with_reason.id, reason=STOP)
    )
    assert cancelled.task.cancel_reason == STOP
    first = await cancellation_of(agent, with_reason.id)
    assert (first.attempt, first.reason, first.message) == (1, "cancelled", STOP)

    # No reason given: the task records a default, the agent is told nothing beyond the code.
    without_reason = await running_task(channel, agent)
    cancelled = await tasks_stub(channel).CancelTask(task_service_pb2.CancelTaskRequest(task_id=without_reason.id))
    assert cancelled.task.cancel_reason == "cancelled by client"
    second = await cancellation_of(agent, without_reason.id)
    assert (second.reason, second.message) == ("cancelled", "")
    await agent.close()


async def test_a_timeout_cancellation_carries_no_message(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agent = LinkAgent(plane.address)
    await agent.connect()
    task = await running_task(
        channel, agent, retry_policy=retry(1), timeouts=task_pb2.TaskTimeouts(start_to_close=seconds(0.3))
    )
    cancellation = await cancellation_of(agent, task.id)
    assert (cancellation.reason, cancellation.message) == ("timed_out", "")
    await agent.close()


@pytest.mark.postgres
@pytest.mark.timeout(120)
async def test_the_cancel_reason_reaches_an_agent_on_another_replica(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with nats_server(tmp_path / "nats") as nats_url:
        shared = {"database_url": postgres_server.create_database(), "nats_url": nats_url}
        a = PlaneProcess(tmp_path / "replica-a", replica_id="replica-a", **shared).start()
        b = PlaneProcess(tmp_path / "replica-b", replica_id="replica-b", **shared).start()
        try:
            agent = LinkAgent(b.address, name="on-b")
            await agent.connect()
            async with grpc.aio.insecure_channel(a.address) as on_a:
                task = await running_task(on_a, agent)
                await tasks_stub(on_a).CancelTask(task_service_pb2.CancelTaskRequest(task_id=task.id, reason=STOP))
                cancellation = await cancellation_of(agent, task.id)
                assert (cancellation.reason, cancellation.message) == ("cancelled", STOP)
            await agent.close()
        finally:
            a.kill()
            b.kill()
