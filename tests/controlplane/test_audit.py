"""The audit trail: every mutating API call and task transition is recorded with its actor and correlation id
(both stores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import json_format

from controlplane.app import ControlPlane
from controlplane.credentials import principal_of
from controlplane.domain.tasks import TaskEventType
from controlplane.store.schema import task_events
from controlplane.store.unit_of_work import Store
from meshplane.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    channel_pb2,
    channel_pb2_grpc,
    common_pb2,
    state_pb2,
    state_pb2_grpc,
    task_pb2,
    task_service_pb2,
)
from tests.controlplane.helpers import submit_request, tasks_stub
from tests.controlplane.test_lifecycle import wait_state
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)

TOKEN = "audit-s3cret"
CLIENT = f"client/{principal_of(TOKEN)}"


def _metadata(correlation_id: str = "") -> tuple[tuple[str, str], ...]:
    return (("x-correlation-id", correlation_id),) if correlation_id else ()


class _Bearer(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Every call of the channel carries the token (helpers that take no metadata included)."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._signed(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._signed(details), request)

    @staticmethod
    def _signed(details: Any) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add("authorization", f"Bearer {TOKEN}")
        return details._replace(metadata=metadata)


def _store(plane: ControlPlane) -> Store:
    assert plane.database is not None
    return Store(plane.database)


async def _audit(channel: grpc.aio.Channel, resource: str) -> list[dict[str, Any]]:
    """The resource's audit entries through the API (ListAuditEntries), oldest first."""
    listed = await audit_pb2_grpc.AuditServiceStub(channel).ListAuditEntries(
        audit_pb2.ListAuditEntriesRequest(resource=resource, page_size=1000)
    )
    return [
        {
            "actor": e.actor,
            "action": e.action,
            "correlation_id": e.correlation_id,
            "details": json_format.MessageToDict(e.details) if e.HasField("details") else None,
        }
        for e in reversed(listed.entries)
    ]


async def _event_actors(plane: ControlPlane, task_id: str) -> list[tuple[TaskEventType, str]]:
    async with _store(plane).reader() as uow:
        rows = await uow.connection.execute(
            sa.select(task_events.c.type, task_events.c.actor)
            .where(task_events.c.task_id == task_id)
            .order_by(task_events.c.sequence)
        )
        return [(TaskEventType(row.type), row.actor) for row in rows]


async def test_mutating_calls_and_transitions_record_actor_and_correlation_id(
    tmp_path: Path, database_url: str
) -> None:
    async with (
        running_plane(tmp_path / "plane", database_url=database_url, auth_tokens=[TOKEN], replica_id="r1") as plane,
        grpc.aio.insecure_channel(plane.address, interceptors=[_Bearer()]) as channel,
    ):
        agent = LinkAgent(plane.address, name="auditor", token=TOKEN)
        await agent.connect()
        agent_actor = f"agent/auditor/{agent.instance_id}"
        tasks = tasks_stub(channel)

        # Task transitions: who submitted, who assigned, who ran it.
        submitted = await tasks.SubmitTask(
            submit_request(data={"n": 1}, correlation_id="order-7"), metadata=_metadata()
        )
        ran = submitted.task.id
        assignment = await agent.next_assignment()
        await agent.started(assignment)
        await agent.succeed(assignment, {"ok": True})
        await wait_state(channel, ran, task_pb2.TASK_STATE_SUCCEEDED)
        assert await _event_actors(plane, ran) == [
            (TaskEventType.CREATED, CLIENT),
            (TaskEventType.ASSIGNED, "replica/r1"),
            (TaskEventType.STARTED, agent_actor),
            (TaskEventType.SUCCEEDED, agent_actor),
        ]

        # Cancel (a transition by the client) and resubmit (an audit entry under the task's correlation id).
        waiting = (
            await tasks.SubmitTask(
                submit_request(data={"n": 2}, capability="nobody.serves", correlation_id="order-8"),
                metadata=_metadata(),
            )
        ).task.id
        await tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=waiting), metadata=_metadata())
        assert (await _event_actors(plane, waiting))[-1] == (TaskEventType.CANCELLED, CLIENT)
        copy = await tasks.ResubmitTask(task_service_pb2.ResubmitTaskRequest(task_id=waiting), metadata=_metadata())
        [resubmitted] = await _audit(channel, f"tasks/{waiting}")
        assert (resubmitted["actor"], resubmitted["action"], resubmitted["correlation_id"]) == (
            CLIENT,
            "task.resubmit",
            "order-8",
        )
        assert resubmitted["details"] == {"new_task_id": copy.task.id}

        # State writes: the caller's x-correlation-id goes with them.
        state = state_pb2_grpc.StateServiceStub(channel)
        value = common_pb2.Payload(data=b'{"v":1}', content_type="application/json")
        await state.PutState(
            state_pb2.PutStateRequest(namespace="carts", key="c1", value=value), metadata=_metadata("put-1")
        )
        await state.DeleteState(state_pb2.DeleteStateRequest(namespace="carts", key="c1"), metadata=_metadata("del-1"))
        entries = await _audit(channel, "namespaces/carts/states/c1")
        assert [(e["actor"], e["action"], e["correlation_id"], e["details"]) for e in entries] == [
            (CLIENT, "state.put", "put-1", {"version": 1}),
            (CLIENT, "state.delete", "del-1", {"version": 1}),
        ]

        # A publish changes no row, and is audited all the same: by the client and by an agent.
        channels = channel_pb2_grpc.ChannelServiceStub(channel)
        published = await channels.Publish(
            channel_pb2.PublishRequest(channel="orders", payload=value), metadata=_metadata("pub-1")
        )
        await agent.publish("orders", {"from": "agent"})
        entries = await _audit_eventually(channel, "channels/orders", count=2)
        assert [(e["actor"], e["action"], e["correlation_id"]) for e in entries] == [
            (CLIENT, "channel.publish", "pub-1"),
            (agent_actor, "channel.publish", ""),
        ]
        assert entries[0]["details"] == {"message_id": published.message.message_id, "bytes": len(value.data)}

        # An operator's drain.
        agents = agent_service_pb2_grpc.AgentServiceStub(channel)
        await agents.DrainAgentInstance(
            agent_service_pb2.DrainAgentInstanceRequest(agent_name="auditor", instance_id=agent.instance_id),
            metadata=_metadata("drain-1"),
        )
        [drained] = await _audit(channel, f"agents/auditor/instances/{agent.instance_id}")
        assert (drained["actor"], drained["action"], drained["correlation_id"]) == (CLIENT, "agent.drain", "drain-1")
        await agent.close()


async def _audit_eventually(channel: grpc.aio.Channel, resource: str, *, count: int) -> list[dict[str, Any]]:
    """An agent's publish is a frame without a reply: wait until its entry is there."""
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        found[:] = await _audit(channel, resource)
        return len(found) >= count

    await eventually(enough, message=f"{count} audit entries for {resource}")
    return found


async def test_a_publish_that_cannot_be_audited_fails_and_the_agent_session_lives_on(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    agent = LinkAgent(plane.address, name="publisher")
    await agent.connect()
    agent.serve_echo()
    async with _store(plane).transaction() as uow:
        await uow.connection.execute(sa.text("DROP TABLE audit_events"))  # every audit write fails from now on

    channels = channel_pb2_grpc.ChannelServiceStub(channel)
    request = channel_pb2.PublishRequest(channel="news", payload=common_pb2.Payload(data=b"1"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channels.Publish(request)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "audit entry for channel.publish on channels/news" in (caught.value.details() or "")

    await agent.publish("news", {"n": 2})
    await eventually(lambda: agent.errors, message="an error frame for the agent's publish")
    [error] = agent.errors
    assert (error.code, error.field, error.fatal) == (grpc.StatusCode.UNAVAILABLE.value[0], "publish", False)
    # The stream stays up: the agent still gets and finishes work.
    task = await tasks_stub(channel).SubmitTask(submit_request(data={"after": "error"}))
    await wait_state(channel, task.task.id, task_pb2.TASK_STATE_SUCCEEDED)
    await agent.close()


async def test_the_trail_is_listed_newest_first_filtered_and_a_page_at_a_time(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    state = state_pb2_grpc.StateServiceStub(channel)
    value = common_pb2.Payload(data=b"1", content_type="application/json")
    for n in range(5):
        await state.PutState(
            state_pb2.PutStateRequest(namespace="ns", key=f"k{n % 2}", value=value), metadata=_metadata(f"c{n}")
        )
    audit = audit_pb2_grpc.AuditServiceStub(channel)

    async def listed(**fields: Any) -> list[str]:
        response = await audit.ListAuditEntries(audit_pb2.ListAuditEntriesRequest(page_size=1000, **fields))
        assert not response.next_page_token
        return [e.correlation_id for e in response.entries]

    everything = (await audit.ListAuditEntries(audit_pb2.ListAuditEntriesRequest())).entries
    assert [e.correlation_id for e in everything] == ["c4", "c3", "c2", "c1", "c0"]
    assert [e.id for e in everything] == sorted((e.id for e in everything), reverse=True)
    assert {(e.actor, e.action) for e in everything} == {("client/anonymous", "state.put")}
    assert json_format.MessageToDict(everything[0].details) == {"version": 3}  # k0 written by c0, c2, c4

    assert await listed(resource="namespaces/ns/states/k1") == ["c3", "c1"]
    assert await listed(correlation_id="c2", action="state.put", actor="client/anonymous") == ["c2"]
    assert await listed(action="state.delete") == []
    assert await listed(actor="client/someone-else") == []
    times = {e.correlation_id: e.time for e in everything}
    assert await listed(start_time=times["c2"], end_time=times["c4"]) == ["c3", "c2"]  # end excluded
    assert await listed(start_time=times["c3"]) == ["c4", "c3"]

    paged: list[str] = []
    token = ""
    while True:
        page = await audit.ListAuditEntries(
            audit_pb2.ListAuditEntriesRequest(action="state.put", page_size=2, page_token=token)
        )
        paged += [e.correlation_id for e in page.entries]
        token = page.next_page_token
        if not token:
            break
    assert paged == ["c4", "c3", "c2", "c1", "c0"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"end_time": "start"}, "end_time"),  # not after start_time
        ({"resource": "r" * 501}, "resource"),
        ({"page_size": -1}, "page_size"),
        ({"page_token": "not a token"}, "page_token"),
        ({"page_token": "other filters", "action": "state.delete"}, "page_token"),
    ],
)
async def test_bad_audit_queries_are_refused_naming_the_field(
    plane: ControlPlane, channel: grpc.aio.Channel, fields: dict[str, Any], field: str
) -> None:
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    await state_pb2_grpc.StateServiceStub(channel).PutState(
        state_pb2.PutStateRequest(namespace="ns", key="k", value=common_pb2.Payload(data=b"1"))
    )
    await state_pb2_grpc.StateServiceStub(channel).PutState(
        state_pb2.PutStateRequest(namespace="ns", key="k", value=common_pb2.Payload(data=b"2"))
    )
    first = await audit.ListAuditEntries(audit_pb2.ListAuditEntriesRequest(page_size=1))
    request = audit_pb2.ListAuditEntriesRequest(start_time=first.entries[0].time)
    for name, wanted in fields.items():
        if name == "end_time":
            request.end_time.CopyFrom(request.start_time)
        elif wanted == "other filters":
            request.page_token = first.next_page_token  # made without the action filter
        else:
            setattr(request, name, wanted)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await audit.ListAuditEntries(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")


async def test_a_submit_without_its_own_correlation_id_takes_the_calls(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    """The id a caller's metadata gives the call (x-correlation-id, else x-request-id: what the audit trail
    records for it) is the task's correlation id, unless the request names its own."""
    tasks = tasks_stub(channel)

    async def correlation_of(request: task_service_pb2.SubmitTaskRequest, *metadata: tuple[str, str]) -> str:
        return (await tasks.SubmitTask(request, metadata=metadata)).task.correlation_id

    assert await correlation_of(submit_request(), ("x-correlation-id", "call-1")) == "call-1"
    assert await correlation_of(submit_request(), ("x-request-id", "req-2")) == "req-2"
    assert await correlation_of(submit_request(correlation_id="own-3"), ("x-correlation-id", "call-3")) == "own-3"
    assert await correlation_of(submit_request()) == ""
    batch = await tasks.BatchSubmitTasks(
        task_service_pb2.BatchSubmitTasksRequest(requests=[submit_request(), submit_request(correlation_id="own-4")]),
        metadata=(("x-correlation-id", "call-4"),),
    )
    assert [t.correlation_id for t in batch.tasks] == ["call-4", "own-4"]
    listed = await tasks.ListTasks(task_service_pb2.ListTasksRequest(correlation_id="call-4"))
    assert [t.id for t in listed.tasks] == [batch.tasks[0].id]


async def test_a_named_token_names_its_caller_and_a_bare_one_a_hash_of_it(tmp_path: Path) -> None:
    """`name:token` entries make the caller `client/<name>` in task events and audit entries; a bare token's
    caller is `client/token:<hash>`. Either token works, as does a bare token holding a colon."""
    entries = ["ci:ci-s3cret", "bare-s3cret", "not a name:with colons"]
    async with (
        running_plane(tmp_path / "plane", auth_tokens=entries) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        tasks = tasks_stub(channel)
        callers = {}
        for token in ("ci-s3cret", "bare-s3cret", "not a name:with colons"):
            signed = (("authorization", f"Bearer {token}"),)
            task = (await tasks.SubmitTask(submit_request(capability="nobody.serves"), metadata=signed)).task
            await tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=task.id), metadata=signed)
            callers[token] = [actor for _, actor in await _event_actors(plane, task.id)]
        assert callers == {
            "ci-s3cret": ["client/ci", "client/ci"],
            "bare-s3cret": [f"client/{principal_of('bare-s3cret')}"] * 2,
            "not a name:with colons": [f"client/{principal_of('not a name:with colons')}"] * 2,
        }
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tasks.SubmitTask(submit_request(), metadata=(("authorization", "Bearer ci:ci-s3cret"),))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, "the name is not part of the token"
