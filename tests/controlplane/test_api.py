"""The client API on both stores: idempotency, batches, bad input, paging, watch resume, state, channels."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from controlplane.app import ControlPlane
from meshplane.v1 import channel_pb2, channel_pb2_grpc, common_pb2, state_pb2, state_pb2_grpc, task_pb2
from meshplane.v1 import task_service_pb2 as ts
from tests.controlplane.helpers import submit, submit_request, tasks_stub, watch_events
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)


def rich_details(error: grpc.aio.AioRpcError) -> list[object]:
    """Unpack the google.rpc.Status details the plane puts in the trailers."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw, "the error carries google.rpc.Status details"
    status = status_pb2.Status.FromString(raw)
    details: list[object] = []
    for any_detail in status.details:
        for cls in (
            error_details_pb2.BadRequest,
            error_details_pb2.ErrorInfo,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.ResourceInfo,
        ):
            if any_detail.Is(cls.DESCRIPTOR):
                message = cls()
                any_detail.Unpack(message)
                details.append(message)
    return details


async def test_same_idempotency_key_returns_the_same_task(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    stub = tasks_stub(channel)
    first = await stub.SubmitTask(submit_request(data={"n": 1}, idempotency_key="order-42"))
    again = await stub.SubmitTask(submit_request(data={"n": 1}, idempotency_key="order-42"))
    assert not first.deduplicated and again.deduplicated
    assert again.task.id == first.task.id
    batch = await stub.BatchSubmitTasks(
        ts.BatchSubmitTasksRequest(
            requests=[
                submit_request(data={"n": 1}, idempotency_key="order-42"),
                submit_request(idempotency_key="order-43"),
                submit_request(idempotency_key="order-43"),
            ]
        )
    )
    assert list(batch.deduplicated) == [True, False, True]
    assert batch.tasks[0].id == first.task.id and batch.tasks[1].id == batch.tasks[2].id
    listed = await stub.ListTasks(ts.ListTasksRequest(page_size=100))
    assert len(listed.tasks) == 2


def raw_submit(key: str, data: bytes, **fields: object) -> ts.SubmitTaskRequest:
    request = submit_request(idempotency_key=key, **fields)
    request.input.data = data
    return request


async def test_a_key_given_again_with_other_work_is_refused_and_names_what_differs(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    stub = tasks_stub(channel)
    first = (await stub.SubmitTask(raw_submit("order-7", b'{"sku": "a", "qty": 1}', correlation_id="try-1"))).task
    # A retry of the same request: other spacing, key order and correlation id are still the same work.
    again = await stub.SubmitTask(raw_submit("order-7", b'{"qty":1,"sku":"a"}', correlation_id="try-2"))
    assert again.deduplicated and again.task.id == first.id

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitTask(raw_submit("order-7", b'{"sku": "a", "qty": 2}'))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    [failure] = [d for d in rich_details(caught.value) if isinstance(d, error_details_pb2.PreconditionFailure)]
    [violation] = failure.violations
    assert (violation.type, violation.subject) == ("IDEMPOTENCY_KEY_REUSED", "idempotency_key")
    assert (
        violation.description
        == f"'order-7' already stands for task {first.id}, whose input differs from this request's"
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:  # JSON true is not 1
        await stub.SubmitTask(raw_submit("flag", b"true"))
        await stub.SubmitTask(raw_submit("flag", b"1"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SubmitTask(raw_submit("order-7", b'{"sku": "a", "qty": 1}', capability="demo.other", priority=5))
    assert "whose target.capability, priority differ" in (caught.value.details() or "")
    listed = await stub.ListTasks(ts.ListTasksRequest(page_size=100))
    assert len(listed.tasks) == 2, "only order-7's and flag's tasks were written"


async def test_a_batch_reusing_a_key_for_other_work_writes_nothing(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    stub = tasks_stub(channel)
    await stub.SubmitTask(raw_submit("order-8", b'{"n": 1}'))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchSubmitTasks(
            ts.BatchSubmitTasksRequest(
                requests=[raw_submit("fresh", b"{}"), raw_submit("order-8", b'{"n": 2}'), raw_submit("fresh", b"[]")]
            )
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    [failure] = [d for d in rich_details(caught.value) if isinstance(d, error_details_pb2.PreconditionFailure)]
    subjects = [(v.subject, "requests[0] of this call" in v.description) for v in failure.violations]
    assert subjects == [("requests[1].idempotency_key", False), ("requests[2].idempotency_key", True)]
    listed = await stub.ListTasks(ts.ListTasksRequest(page_size=100))
    assert len(listed.tasks) == 1, "the batch's new task was not written either"


async def test_a_refused_key_does_not_fail_the_submits_committed_with_it(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    stub = tasks_stub(channel)
    await stub.SubmitTask(raw_submit("taken", b'{"n": 1}'))
    calls = [stub.SubmitTask(raw_submit(f"k-{i}", b"{}")) for i in range(30)]
    calls.insert(15, stub.SubmitTask(raw_submit("taken", b'{"n": 2}')))
    answers = await asyncio.gather(*calls, return_exceptions=True)
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert [a.code() for a in refused] == [grpc.StatusCode.FAILED_PRECONDITION]
    assert isinstance(answers[15], grpc.aio.AioRpcError)
    listed = await stub.ListTasks(ts.ListTasksRequest(page_size=100))
    assert len(listed.tasks) == 31


async def test_concurrent_submits_with_one_key_create_one_task(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    stub = tasks_stub(channel)
    responses = await asyncio.gather(*(stub.SubmitTask(submit_request(idempotency_key="same")) for _ in range(20)))
    assert len({r.task.id for r in responses}) == 1
    assert sum(not r.deduplicated for r in responses) == 1


async def test_invalid_fields_name_each_field_and_nothing_is_written(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    stub = tasks_stub(channel)
    bad = submit_request(capability="bad capability!", priority=2**31 - 1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchSubmitTasks(ts.BatchSubmitTasksRequest(requests=[submit_request(), bad]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [bad_request] = [d for d in rich_details(caught.value) if isinstance(d, error_details_pb2.BadRequest)]
    fields = [v.field for v in bad_request.field_violations]
    assert fields == ["requests[1].target.capability", "requests[1].priority"]
    assert "requests[1].priority" in (caught.value.details() or "")
    priority = next(v for v in bad_request.field_violations if v.field == "requests[1].priority")
    assert priority.description == "must be between -1000 and 1000 (got 2147483647)"
    assert not (await stub.ListTasks(ts.ListTasksRequest())).tasks, "the valid half was not written either"


async def test_invalid_json_input_is_rejected(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    request = ts.SubmitTaskRequest(
        target=task_pb2.TaskTarget(capability="demo.echo"),
        input=common_pb2.Payload(data=b"{not json", content_type="application/json"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasks_stub(channel).SubmitTask(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input" in (caught.value.details() or "")


async def test_payload_over_the_limit_is_resource_exhausted_with_the_limit(tmp_path: Path) -> None:
    async with (
        running_plane(tmp_path, max_payload_bytes=2048) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(channel, data={"blob": "x" * 5000})
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2048" in (caught.value.details() or "")
        state = state_pb2_grpc.StateServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await state.PutState(
                state_pb2.PutStateRequest(
                    namespace="ns", key="k", value=common_pb2.Payload(data=b"x" * 3000, content_type="text/plain")
                )
            )
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not (await tasks_stub(channel).ListTasks(ts.ListTasksRequest())).tasks


async def test_list_pages_and_filters(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    stub = tasks_stub(channel)
    created = [
        await submit(channel, capability="a.b" if i % 2 else "c.d", correlation_id=f"c{i % 3}") for i in range(7)
    ]
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListTasks(ts.ListTasksRequest(page_size=3, page_token=token))
        seen += [t.id for t in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert seen == [t.id for t in reversed(created)], "newest first, every task once"
    only_ab = await stub.ListTasks(ts.ListTasksRequest(capability="a.b"))
    assert {t.target.capability for t in only_ab.tasks} == {"a.b"} and len(only_ab.tasks) == 3
    by_correlation = await stub.ListTasks(ts.ListTasksRequest(correlation_id="c0"))
    assert len(by_correlation.tasks) == 3
    first = await stub.ListTasks(ts.ListTasksRequest(page_size=2, capability="a.b"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListTasks(ts.ListTasksRequest(page_size=2, page_token=first.next_page_token))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # token made with other filters
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListTasks(ts.ListTasksRequest(page_token="garbage!"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_watch_resumes_after_a_sequence_number(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agent = LinkAgent(plane.address)
    await agent.connect()
    task = await submit(channel, data={"x": 1})
    assignment = await agent.next_assignment()
    await agent.started(assignment)
    await agent.progress(assignment, 0.5, "halfway")
    await agent.succeed(assignment, {"x": 1})
    everything = await watch_events(channel, task.id)
    kinds = [task_pb2.TaskEventType.Name(e.type).removeprefix("TASK_EVENT_TYPE_") for e in everything]
    assert kinds == ["CREATED", "ASSIGNED", "STARTED", "PROGRESS", "SUCCEEDED"]
    assert everything[3].progress == pytest.approx(0.5) and everything[3].message == "halfway"
    rest = await watch_events(channel, task.id, after=3)
    assert [e.sequence for e in rest] == [4, 5]
    assert rest[-1].output.json.struct_value.fields["x"].number_value == 1
    assert rest[-1].progress == 1, "a SUCCEEDED event says the task is done, as the task does"
    assert await watch_events(channel, task.id, after=5) == []  # ended: nothing more, stream closes
    await agent.close()


async def test_watch_streams_live_transitions(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    task = await submit(channel)
    received: list[int] = []

    async def watch() -> None:
        async for response in tasks_stub(channel).WatchTask(ts.WatchTaskRequest(task_id=task.id)):
            received.append(response.event.type)

    watcher = asyncio.ensure_future(watch())
    await eventually(lambda: received == [task_pb2.TASK_EVENT_TYPE_CREATED])
    agent = LinkAgent(plane.address)
    await agent.connect()
    await agent.succeed(await agent.next_assignment(), {})
    await asyncio.wait_for(watcher, 10)
    assert received[-1] == task_pb2.TASK_EVENT_TYPE_SUCCEEDED
    await agent.close()


async def test_state_versions_compare_and_set_and_ttl(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    state = state_pb2_grpc.StateServiceStub(channel)
    value = common_pb2.Payload(data=b'{"v":1}', content_type="application/json")
    created = (
        await state.PutState(state_pb2.PutStateRequest(namespace="agent1", key="cfg", value=value, expected_version=0))
    ).entry
    assert created.version == 1
    updated = (
        await state.PutState(state_pb2.PutStateRequest(namespace="agent1", key="cfg", value=value, expected_version=1))
    ).entry
    assert updated.version == 2
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await state.PutState(
            state_pb2.PutStateRequest(
                namespace="agent1",
                key="cfg",
                value=common_pb2.Payload(data=b'{"v":"stale"}', content_type="application/json"),
                expected_version=1,
            )
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    [failure] = [d for d in rich_details(caught.value) if isinstance(d, error_details_pb2.PreconditionFailure)]
    assert failure.violations[0].type == "VERSION_MISMATCH"
    current = (await state.GetState(state_pb2.GetStateRequest(namespace="agent1", key="cfg"))).entry
    assert current.version == 2 and current.value.json.struct_value.fields["v"].number_value == 1, "unchanged"

    ttl = duration_pb2.Duration(nanos=300_000_000)
    await state.PutState(state_pb2.PutStateRequest(namespace="agent1", key="tmp", value=value, ttl=ttl))
    listed = await state.ListStates(state_pb2.ListStatesRequest(namespace="agent1"))
    assert [e.key for e in listed.entries] == ["cfg", "tmp"]

    async def expired() -> bool:
        try:
            await state.GetState(state_pb2.GetStateRequest(namespace="agent1", key="tmp"))
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.NOT_FOUND
        return False

    await eventually(expired)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await state.DeleteState(state_pb2.DeleteStateRequest(namespace="agent1", key="cfg", expected_version=1))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await state.DeleteState(state_pb2.DeleteStateRequest(namespace="agent1", key="cfg", expected_version=2))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await state.GetState(state_pb2.GetStateRequest(namespace="agent1", key="cfg"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await state.GetState(state_pb2.GetStateRequest(namespace="bad ns", key="k"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_channel_messages_reach_every_subscriber(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    channels = channel_pb2_grpc.ChannelServiceStub(channel)
    agent = LinkAgent(plane.address, subscriptions=["news"])
    await agent.connect()
    stream = channels.Subscribe(channel_pb2.SubscribeRequest(channel="news"))
    first = await stream.read()
    assert first.WhichOneof("event") == "started"

    published = await channels.Publish(
        channel_pb2.PublishRequest(
            channel="news",
            payload=common_pb2.Payload(data=b'{"hello":1}', content_type="application/json"),
            headers={"k": "v"},
        )
    )
    from_stream = await asyncio.wait_for(stream.read(), 10)
    assert from_stream.message.message_id == published.message.message_id
    assert dict(from_stream.message.headers) == {"k": "v"}
    from_link = await asyncio.wait_for(agent.channel_messages.get(), 10)
    assert from_link.message_id == published.message.message_id
    assert from_link.payload.data == b'{"hello":1}'
    stream.cancel()
    listed = await channels.ListChannels(channel_pb2.ListChannelsRequest())
    assert "news" in [c.name for c in listed.channels]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channels.Publish(channel_pb2.PublishRequest(channel="..bad", payload=common_pb2.Payload()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await agent.close()


async def test_health_and_reflection(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflection.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    answer = await call.read()
    await call.done_writing()
    names = {s.name for s in answer.list_services_response.service}
    assert {"meshplane.v1.TaskService", "meshplane.v1.AgentLinkService"} <= names


async def test_bearer_tokens_guard_every_rpc_but_health(tmp_path: Path) -> None:
    async with (
        running_plane(tmp_path, auth_tokens=["s3cret"]) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await submit(channel)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        [info] = [d for d in rich_details(caught.value) if isinstance(d, error_details_pb2.ErrorInfo)]
        assert info.reason == "UNAUTHENTICATED", "refusals carry details like every other error"
        response = await tasks_stub(channel).SubmitTask(
            submit_request(), metadata=(("authorization", "Bearer s3cret"),)
        )
        assert response.task.id
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
        intruder = LinkAgent(plane.address, token="wrong")
        await intruder.connect(wait=False)
        await asyncio.wait_for(intruder.ended.wait(), 10)
        assert intruder.end_code == grpc.StatusCode.UNAUTHENTICATED
        member = LinkAgent(plane.address, token="s3cret")
        assert await member.connect() is not None
        await member.close()
        await intruder.kill()


async def test_a_publish_the_database_refuses_reaches_no_one_so_a_retry_delivers_it_once(
    plane: ControlPlane, channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Persist, then act: a publish whose audit entry cannot be written fails UNAVAILABLE before the message
    goes out (it used to go out first: the caller heard UNAVAILABLE, retried, and everyone got it twice)."""
    channels = channel_pb2_grpc.ChannelServiceStub(channel)
    stream = channels.Subscribe(channel_pb2.SubscribeRequest(channel="news"))
    assert (await stream.read()).WhichOneof("event") == "started"
    payload = common_pb2.Payload(data=b'{"n":1}', content_type="application/json")
    record = plane.audit.record

    async def database_out(_entry: object) -> None:
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(plane.audit, "record", database_out)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await channels.Publish(channel_pb2.PublishRequest(channel="news", payload=payload))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    monkeypatch.setattr(plane.audit, "record", record)
    retried = await channels.Publish(channel_pb2.PublishRequest(channel="news", payload=payload))
    received = await asyncio.wait_for(stream.read(), 10)
    assert received.message.message_id == retried.message.message_id, "the refused publish reached no one"
    stream.cancel()
