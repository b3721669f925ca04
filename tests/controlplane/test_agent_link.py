"""The agent link on both stores: registration, credits, reconnects, leases, drain."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from controlplane.app import ControlPlane
from meshplane.v1 import agent_link_pb2 as al
from meshplane.v1 import agent_service_pb2, agent_service_pb2_grpc, task_pb2, task_service_pb2
from tests.controlplane.helpers import get_task, submit, tasks_stub
from tests.controlplane.test_lifecycle import retry, seconds, wait_state
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)


async def test_invalid_registration_gets_an_error_frame_and_invalid_argument(plane: ControlPlane) -> None:
    agent = LinkAgent(plane.address, name="bad name!", max_concurrency=0)
    await agent.connect(wait=False)
    await asyncio.wait_for(agent.ended.wait(), 10)
    assert agent.end_code == grpc.StatusCode.INVALID_ARGUMENT
    [error] = agent.errors
    assert error.fatal and error.code == 3
    assert "register.agent_name" in error.message and "register.max_concurrency" in error.message
    assert error.field == "register.agent_name"


async def test_first_frame_must_be_register(plane: ControlPlane) -> None:
    agent = LinkAgent(plane.address)
    await agent.connect(first=al.ConnectRequest(heartbeat=al.Heartbeat()), wait=False)
    await asyncio.wait_for(agent.ended.wait(), 10)
    assert agent.end_code == grpc.StatusCode.INVALID_ARGUMENT
    assert agent.errors[0].field == "register"


async def test_duplicate_capabilities_are_rejected(plane: ControlPlane) -> None:
    agent = LinkAgent(plane.address, capabilities=["a.b", "a.b"])
    await agent.connect(wait=False)
    await asyncio.wait_for(agent.ended.wait(), 10)
    assert agent.end_code == grpc.StatusCode.INVALID_ARGUMENT
    assert "duplicate capability" in agent.errors[0].message


async def test_never_more_tasks_in_flight_than_max_concurrency(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agent = LinkAgent(plane.address, max_concurrency=2)
    await agent.connect()
    tasks = [await submit(channel, data={"i": i}) for i in range(7)]
    outstanding: list[al.Assignment] = []
    finished = 0
    peak = 0
    while finished < len(tasks):
        try:
            outstanding.append(await agent.next_assignment(timeout=0.3))
        except TimeoutError:
            assert outstanding, "no assignment arrived although nothing was in flight"
            await agent.succeed(outstanding.pop(0), {})
            finished += 1
        peak = max(peak, len(outstanding))
        assert len(outstanding) <= 2, f"{len(outstanding)} unfinished assignments on a max_concurrency=2 session"
    assert peak == 2
    for task in tasks:
        await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)
    await agent.close()


async def test_queued_task_waits_and_is_placed_when_an_agent_registers(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    task = await submit(channel, capability="late.bloomer")
    agent = LinkAgent(plane.address, capabilities=["late.bloomer"])
    await agent.connect()
    assignment = await agent.next_assignment()
    assert assignment.task_id == task.id
    await agent.close()


async def test_reconnect_with_same_instance_keeps_held_tasks(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agent = LinkAgent(plane.address, name="keeper", max_concurrency=1)
    await agent.connect()
    task = await submit(channel)
    assignment = await agent.next_assignment()
    await agent.started(assignment)
    await wait_state(channel, task.id, task_pb2.TASK_STATE_RUNNING)
    await agent.kill()  # the stream breaks; the task keeps its lease

    again = LinkAgent(
        plane.address,
        name="keeper",
        instance_id=agent.instance_id,
        max_concurrency=1,
        held=[(task.id, 1)],
    )
    registered = await again.connect()
    assert registered is not None
    assert [(t.task_id, t.attempt) for t in registered.kept_tasks] == [(task.id, 1)]
    # The kept task counts against credits: nothing else is assigned while it runs.
    other = await submit(channel)
    with pytest.raises(TimeoutError):
        await again.next_assignment(timeout=0.5)
    await again.succeed((task.id, 1), {"kept": True})
    done = await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)
    assert len(done.attempts) == 1, "kept, not re-run"
    assert (await again.next_assignment()).task_id == other.id
    await again.close()


async def test_reconnect_without_the_task_requeues_it_at_once(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agent = LinkAgent(plane.address, name="forgetful")
    await agent.connect()
    task = await submit(channel, retry_policy=retry(3))
    await agent.next_assignment()
    await agent.kill()

    again = LinkAgent(plane.address, name="forgetful", instance_id=agent.instance_id)
    await again.connect()  # holds nothing: the attempt is lost, the task runs again
    retried = await again.next_assignment()
    assert (retried.task_id, retried.attempt) == (task.id, 2)
    await again.succeed(retried, {})
    done = await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)
    assert done.attempts[0].outcome == task_pb2.ATTEMPT_OUTCOME_LOST
    await again.close()


async def test_held_task_that_moved_on_is_cancelled_as_not_held(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    task = await submit(channel)
    agent = LinkAgent(plane.address, held=[(task.id, 7)])  # an attempt the plane never made
    registered = await agent.connect()
    assert registered is not None and not registered.kept_tasks
    await eventually(
        lambda: [(c.task_id, c.attempt, c.reason) for c in agent.cancellations] == [(task.id, 7, "not_held")]
    )
    await agent.close()


async def test_silent_session_loses_its_lease_and_its_tasks_are_requeued(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    silent = LinkAgent(plane.address, name="silent", heartbeat=False)
    await silent.connect()
    task = await submit(channel, retry_policy=retry(3))
    await silent.started(await silent.next_assignment())
    await asyncio.wait_for(silent.ended.wait(), 10)  # lease (1.5s) runs out: the plane closes the stream
    assert silent.end_code == grpc.StatusCode.UNAVAILABLE

    healthy = LinkAgent(plane.address, name="healthy")
    await healthy.connect()
    retried = await healthy.next_assignment()
    assert (retried.task_id, retried.attempt) == (task.id, 2)
    await healthy.succeed(retried, {})
    done = await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)
    assert done.attempts[0].outcome == task_pb2.ATTEMPT_OUTCOME_LOST
    assert done.attempts[0].error.code == "lease_expired"
    await healthy.close()
    await silent.kill()


async def test_broken_stream_requeues_after_the_lease_not_before(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    agent = LinkAgent(plane.address, name="blip")
    await agent.connect()
    task = await submit(channel, retry_policy=retry(3))
    await agent.started(await agent.next_assignment())
    await wait_state(channel, task.id, task_pb2.TASK_STATE_RUNNING)
    await agent.kill()
    await asyncio.sleep(0.5)  # well inside the 1.5s lease: the task must still be on its attempt
    assert (await get_task(channel, task.id)).state == task_pb2.TASK_STATE_RUNNING
    queued_again = await wait_state(channel, task.id, task_pb2.TASK_STATE_QUEUED)
    assert queued_again.attempts[0].outcome == task_pb2.ATTEMPT_OUTCOME_LOST


async def test_a_replaced_session_is_told_why_before_its_stream_ends(plane: ControlPlane) -> None:
    """Usually the replaced session's agent is gone (it reconnected); two live agents given one instance_id would
    replace each other for good, so the older one hears it, naming the instance (and the other agent's name). The
    frame is fatal: an SDK that hears it on its current session stops instead of reconnecting (and flapping)."""
    first = LinkAgent(plane.address, name="twin", instance_id="shared-1")
    await first.connect()
    second = LinkAgent(plane.address, name="other", instance_id="shared-1")
    await second.connect()
    await asyncio.wait_for(first.ended.wait(), 10)
    [error] = first.errors
    assert (error.code, error.field, error.fatal) == (6, "register.instance_id", True)  # ALREADY_EXISTS
    assert error.message.startswith("replaced by a newer session of instance shared-1 (of agent other, not twin): ")
    assert "two agents share this instance_id" in error.message
    assert second.errors == [] and not second.ended.is_set()
    await second.close()


async def test_a_session_replaced_while_it_registers_ends_at_once(plane: ControlPlane) -> None:
    """Two sessions of one instance registering at the same moment: the newer wins; the older ends at once, also
    when it was replaced during its own registration (it was once left open, unregistered and unserved, until
    the lease ran out: then its stream ended UNAVAILABLE, "no heartbeat")."""
    for round_ in range(5):
        await _register_two_at_once(plane.address, f"race-{round_}")


async def _register_two_at_once(address: str, instance_id: str) -> None:
    pair = [LinkAgent(address, name="racer", instance_id=instance_id) for _ in range(2)]
    try:
        await asyncio.gather(*(agent.connect(wait=False) for agent in pair))
        ended = [asyncio.ensure_future(agent.ended.wait()) for agent in pair]
        done, pending = await asyncio.wait(ended, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            future.cancel()
        [loser] = [agent for agent, future in zip(pair, ended, strict=True) if future in done]
        [winner] = [agent for agent in pair if agent is not loser]
        assert loser.end_code == grpc.StatusCode.OK, (instance_id, loser.end_code)
        await eventually(lambda: winner.registered is not None)
        assert not winner.ended.is_set()
    finally:
        for agent in pair:
            await agent.close()


async def test_drain_stops_new_work_and_lets_in_flight_work_finish(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    agent = LinkAgent(plane.address, name="drainee", max_concurrency=4)
    await agent.connect()
    task = await submit(channel)
    assignment = await agent.next_assignment()
    agents = agent_service_pb2_grpc.AgentServiceStub(channel)
    response = await agents.DrainAgentInstance(
        agent_service_pb2.DrainAgentInstanceRequest(
            agent_name="drainee", instance_id=agent.instance_id, reason="rolling upgrade"
        )
    )
    assert response.instance.status == 2  # DRAINING
    await eventually(lambda: [d.reason for d in agent.drains] == ["rolling upgrade"])
    later = await submit(channel)
    with pytest.raises(TimeoutError):
        await agent.next_assignment(timeout=0.5)
    await agent.succeed(assignment, {"finished": True})
    await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)
    await agent.close()
    # A fresh instance (the upgraded agent) picks up what waited.
    fresh = LinkAgent(plane.address, name="drainee")
    await fresh.connect()
    assert (await fresh.next_assignment()).task_id == later.id
    await fresh.close()


async def test_drain_of_unknown_or_disconnected_instance(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agents = agent_service_pb2_grpc.AgentServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agents.DrainAgentInstance(
            agent_service_pb2.DrainAgentInstanceRequest(agent_name="ghost", instance_id="nobody")
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    agent = LinkAgent(plane.address, name="leaver")
    await agent.connect()
    await agent.close()

    async def disconnected() -> bool:
        listed = await agents.ListAgentInstances(
            agent_service_pb2.ListAgentInstancesRequest(agent_name="leaver", include_disconnected=True)
        )
        return bool(listed.instances) and listed.instances[0].status == 3  # DISCONNECTED

    await eventually(disconnected)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agents.DrainAgentInstance(
            agent_service_pb2.DrainAgentInstanceRequest(agent_name="leaver", instance_id=agent.instance_id)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_agents_and_instances_are_listed(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agent = LinkAgent(plane.address, name="lister", capabilities=["x.one", "x.two"], labels={"zone": "eu"})
    await agent.connect()
    agents = agent_service_pb2_grpc.AgentServiceStub(channel)
    listed = await agents.ListAgents(agent_service_pb2.ListAgentsRequest())
    [entry] = [a for a in listed.agents if a.name == "lister"]
    assert entry.status == 1 and entry.connected_instances == 1  # ONLINE
    assert [c.name for c in entry.capabilities] == ["x.one", "x.two"]
    assert dict(entry.labels) == {"zone": "eu"}
    by_capability = await agents.ListAgents(agent_service_pb2.ListAgentsRequest(capability="x.two"))
    assert [a.name for a in by_capability.agents] == ["lister"]
    instances = await agents.ListAgentInstances(agent_service_pb2.ListAgentInstancesRequest(agent_name="-"))
    [instance] = [i for i in instances.instances if i.instance_id == agent.instance_id]
    assert instance.sdk.language == "test" and instance.max_concurrency == 4
    assert instance.replica_id == plane.replica_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agents.GetAgent(agent_service_pb2.GetAgentRequest(agent_name="nobody"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await agent.close()


async def test_a_draining_plane_refuses_new_sessions(tmp_path: Path) -> None:
    async with running_plane(tmp_path) as plane, grpc.aio.insecure_channel(plane.address) as channel:
        busy = LinkAgent(plane.address, name="busy")
        await busy.connect()
        task = await submit(channel)
        assignment = await busy.next_assignment()
        draining = asyncio.ensure_future(plane.drain(grace=10))
        await eventually(lambda: len(busy.drains) == 1)
        late = LinkAgent(plane.address, name="late")
        await late.connect(wait=False)
        await asyncio.wait_for(late.ended.wait(), 10)
        assert late.end_code == grpc.StatusCode.UNAVAILABLE
        await busy.succeed(assignment, {"finished": "during the drain"})
        await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)
        await busy.close()
        await asyncio.wait_for(draining, 10)


async def test_health_is_not_serving_while_draining(tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with running_plane(tmp_path) as plane, grpc.aio.insecure_channel(plane.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
        agent = LinkAgent(plane.address, name="lingering")
        await agent.connect()
        draining = asyncio.ensure_future(plane.drain(grace=10))

        async def not_serving() -> bool:
            answer = await health.Check(health_pb2.HealthCheckRequest())
            return answer.status == health_pb2.HealthCheckResponse.NOT_SERVING

        await eventually(not_serving)
        await agent.close()
        await asyncio.wait_for(draining, 10)


async def test_a_bad_channel_frame_gets_an_error_frame_and_the_session_goes_on(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    agent = LinkAgent(plane.address)
    await agent.connect()
    agent.serve_echo()
    await agent.send(al.ConnectRequest(subscribe=al.ChannelSubscribe(channel="no spaces allowed")))
    await agent.publish("no spaces allowed", {"n": 1})
    await eventually(lambda: len(agent.errors) == 2, message="two error frames")
    assert [(e.code, e.field, e.fatal) for e in agent.errors] == [
        (grpc.StatusCode.INVALID_ARGUMENT.value[0], "subscribe.channel", False),
        (grpc.StatusCode.INVALID_ARGUMENT.value[0], "publish", False),
    ]
    task = await submit(channel, data={"still": "served"})
    await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)
    await agent.close()


async def test_a_cancel_that_never_reached_the_agent_is_sent_again_once(
    plane: ControlPlane, channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel sent from another replica while NATS was down reaches no one (dropped here, as it would be
    there): the replica holding the attempt finds it ended in the store, and cancels it itself, once."""
    lost: list[object] = []

    async def lose(order: object) -> None:
        lost.append(order)

    monkeypatch.setattr(plane.cluster, "deliver_cancel", lose)
    agent = LinkAgent(plane.address, name="runner")
    await agent.connect()
    task = await submit(channel)
    assignment = await agent.next_assignment()
    await agent.started(assignment)
    await tasks_stub(channel).CancelTask(task_service_pb2.CancelTaskRequest(task_id=task.id, reason="not needed"))
    assert len(lost) == 1, "the first cancel went nowhere"

    await eventually(lambda: bool(agent.cancellations), timeout=15, message="the cancel sent again")
    assert await plane.supervisor.cancel_ended_attempts(running_for=0) == 0, "sent again once, not every sweep"
    [cancellation] = agent.cancellations
    assert (cancellation.task_id, cancellation.attempt, cancellation.reason, cancellation.message) == (
        task.id,
        assignment.attempt,
        "cancelled",
        "not needed",  # the caller's words, as the lost cancel carried them
    )
    await agent.close()


async def test_a_publish_a_backing_service_fails_gets_an_unavailable_frame_and_the_session_goes_on(
    plane: ControlPlane, channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage (NATS or the database) while an agent publishes is the agent's to retry, as it is a client's
    (UNAVAILABLE), not a bug that ends its session."""

    async def unreachable(_channel: str) -> None:
        raise ConnectionRefusedError("connection refused")

    agent = LinkAgent(plane.address)
    await agent.connect()
    agent.serve_echo()
    monkeypatch.setattr(plane.channels, "_remember", unreachable)
    await agent.publish("news", {"n": 1})
    await eventually(lambda: bool(agent.errors), message="an error frame")
    [error] = agent.errors
    assert (error.code, error.field, error.fatal) == (grpc.StatusCode.UNAVAILABLE.value[0], "publish", False)
    assert "retry" in error.message
    task = await submit(channel, data={"still": "served"})
    await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)
    await agent.close()


async def test_an_attempt_sent_again_as_not_held_frees_its_slot(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    """An attempt that timed out and whose task moved on (re-queued) is cancelled again as `not_held` if it is still
    running: the agent then drops it without a result (docs/agent-link.md), so the plane frees its slot then, as
    it does for `not_held` at a reconnect. It kept it for good: a handler that outlived its start_to_close
    (a sync one cannot be interrupted) left the session short of a slot, and its work queued behind it."""
    agent = LinkAgent(plane.address, max_concurrency=1)
    await agent.connect()
    task = await submit(channel, retry_policy=retry(2), timeouts=task_pb2.TaskTimeouts(start_to_close=seconds(0.3)))
    first = await agent.next_assignment()
    await agent.started(first)  # ...and never answers, not even the timed_out cancel
    await eventually(lambda: any(c.reason == "timed_out" for c in agent.cancellations), message="timed out")
    await wait_state(channel, task.id, task_pb2.TASK_STATE_QUEUED)  # attempt 2 waits for the slot

    assert await plane.supervisor.cancel_ended_attempts(running_for=0) == 1
    await eventually(lambda: any(c.reason == "not_held" for c in agent.cancellations), message="not_held")
    second = await agent.next_assignment()
    assert (second.task_id, second.attempt) == (task.id, 2)
    await agent.succeed(second, {"ok": 1})
    await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)
    await agent.close()
