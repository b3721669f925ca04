"""The flow of one task, end to end through the gRPC API and the agent link, on both stores."""

from __future__ import annotations

import grpc
import pytest

from controlplane.app import ControlPlane
from meshplane.v1 import task_pb2, task_service_pb2
from tests.controlplane.helpers import get_task, output_of, submit, tasks_stub, watch_events
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent

pytestmark = pytest.mark.timeout(60)


async def test_submitted_task_runs_on_an_agent_and_its_output_is_stored(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    agent = LinkAgent(plane.address, capabilities=["demo.echo"])
    await agent.connect()
    agent.serve_echo()
    # The round the joining session earns looks at the queue: once it found nothing waiting...
    await eventually(lambda: plane.dispatcher.is_clear("demo.echo"), message="the joining session's round")

    task = await submit(channel, data={"text": "hello", "n": 3})
    # ...an idle session had room and nothing was queued: the submit placed the task itself.
    assert task.state == task_pb2.TASK_STATE_ASSIGNED
    assert task.attempt == 1
    assert [a.agent_instance_id for a in task.attempts] == [agent.instance_id]
    events = await watch_events(channel, task.id)

    assert [task_pb2.TaskEventType.Name(e.type) for e in events] == [
        "TASK_EVENT_TYPE_CREATED",
        "TASK_EVENT_TYPE_ASSIGNED",
        "TASK_EVENT_TYPE_STARTED",  # implied by the result when the agent sent no `started` update
        "TASK_EVENT_TYPE_SUCCEEDED",
    ]
    assert [e.sequence for e in events] == [1, 2, 3, 4]
    stored = await get_task(channel, task.id)
    assert stored.state == task_pb2.TASK_STATE_SUCCEEDED
    assert output_of(stored) == {"text": "hello", "n": 3}
    assert [a.outcome for a in stored.attempts] == [task_pb2.ATTEMPT_OUTCOME_SUCCEEDED]
    assert stored.attempts[0].agent_instance_id == agent.instance_id
    await eventually(lambda: (task.id, 1) in agent.acks, message="result acknowledged")
    await agent.close()


async def test_unknown_task_is_not_found(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasks_stub(channel).GetTask(task_service_pb2.GetTaskRequest(task_id="01NOPE"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "01NOPE" in (caught.value.details() or "")
