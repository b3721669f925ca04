"""Input the API refuses with a clear INVALID_ARGUMENT, and what it answers exactly as it stores it: JSON
nesting, required payloads, forged page tokens, cancel reasons, undecodable requests, timestamps."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from google.rpc import error_details_pb2

from controlplane.api import convert
from controlplane.app import ControlPlane
from controlplane.domain.payload import MAX_JSON_DEPTH, Payload
from meshplane.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    channel_pb2,
    channel_pb2_grpc,
    common_pb2,
    state_pb2,
    state_pb2_grpc,
    task_pb2,
)
from meshplane.v1 import task_service_pb2 as ts
from tests.controlplane.helpers import submit_request, tasks_stub
from tests.controlplane.test_api import rich_details
from tests.controlplane.test_lifecycle import wait_state
from tests.support.link_agent import LinkAgent

pytestmark = pytest.mark.timeout(60)


def nested(depth: int) -> bytes:
    """JSON arrays nested `depth` levels deep."""
    return b"[" * depth + b"]" * depth


def json_data(data: bytes) -> common_pb2.Payload:
    return common_pb2.Payload(data=data, content_type="application/json")


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    [bad] = [d for d in rich_details(error) if isinstance(d, error_details_pb2.BadRequest)]
    return [v.field for v in bad.field_violations]


async def test_json_nested_past_the_limit_is_refused_everywhere_and_nothing_is_written(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    too_deep = json_data(nested(MAX_JSON_DEPTH + 1))
    tasks = tasks_stub(channel)
    state = state_pb2_grpc.StateServiceStub(channel)
    channels = channel_pb2_grpc.ChannelServiceStub(channel)
    calls = {
        "input": tasks.SubmitTask(
            ts.SubmitTaskRequest(target=task_pb2.TaskTarget(capability="demo.echo"), input=too_deep)
        ),
        "value": state.PutState(state_pb2.PutStateRequest(namespace="ns", key="deep", value=too_deep)),
        "payload": channels.Publish(channel_pb2.PublishRequest(channel="deep", payload=too_deep)),
    }
    for field, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert violated_fields(caught.value) == [field]
        assert f"nested more than {MAX_JSON_DEPTH} levels deep" in (caught.value.details() or "")
    assert not (await tasks.ListTasks(ts.ListTasksRequest())).tasks
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await state.GetState(state_pb2.GetStateRequest(namespace="ns", key="deep"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_json_at_the_limit_is_taken_and_reads_back_as_json(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    deepest = json_data(nested(MAX_JSON_DEPTH))
    tasks = tasks_stub(channel)
    submitted = await tasks.SubmitTask(
        ts.SubmitTaskRequest(target=task_pb2.TaskTarget(capability="demo.echo"), input=deepest)
    )
    got = await tasks.GetTask(ts.GetTaskRequest(task_id=submitted.task.id))
    assert got.task.input.WhichOneof("kind") == "json"
    assert json.loads(json.dumps(convert.value_to_python(got.task.input.json))) == json.loads(nested(MAX_JSON_DEPTH))
    listed = await tasks.ListTasks(ts.ListTasksRequest())
    assert [t.id for t in listed.tasks] == [submitted.task.id]


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _field(number: int, body: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(body)) + body


def _nested_value(depth: int) -> bytes:
    """A google.protobuf.Value of lists in lists, `depth` deep, encoded by hand (protobuf itself refuses to)."""
    value = _field(6, b"")  # Value.list_value, empty
    for _ in range(depth - 1):
        value = _field(6, _field(1, value))  # Value.list_value.values[0]
    return value


async def test_a_request_protobuf_cannot_decode_is_invalid_argument(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    """JSON in the `json` form nested past protobuf's own depth limit never reaches the handler."""
    head = ts.SubmitTaskRequest(target=task_pb2.TaskTarget(capability="demo.echo")).SerializeToString()
    request = head + _field(2, _field(1, _nested_value(80)))  # input (Payload.json)
    submit_raw = channel.unary_unary(
        "/meshplane.v1.TaskService/SubmitTask",
        request_serializer=lambda raw: raw,
        response_deserializer=ts.SubmitTaskResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await submit_raw(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["request"]
    assert "cannot be decoded" in (caught.value.details() or "")
    assert not (await tasks_stub(channel).ListTasks(ts.ListTasksRequest())).tasks
    ok = head + _field(2, _field(1, _nested_value(3)))  # the same bytes, shallow: taken
    taken = (await submit_raw(ok)).task
    got = (await tasks_stub(channel).GetTask(ts.GetTaskRequest(task_id=taken.id))).task
    assert convert.value_to_python(got.input.json) == [[[]]]


def test_a_stored_payload_too_deep_for_a_value_reads_back_as_bytes() -> None:
    """Payloads stored before the depth limit (or from agents) still read: as bytes, not a failed call."""
    deep = Payload(nested(80))
    answered = convert.payload_for_client(deep)
    assert answered.WhichOneof("kind") == "data" and answered.data == deep.data
    assert answered.content_type == "application/json"
    shallow = convert.payload_for_client(Payload(b'{"a":[1]}'))
    assert shallow.WhichOneof("kind") == "json"


async def test_state_values_and_channel_payloads_are_required(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    state = state_pb2_grpc.StateServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await state.PutState(state_pb2.PutStateRequest(namespace="ns", key="k"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["value"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await state.GetState(state_pb2.GetStateRequest(namespace="ns", key="k"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND, "nothing was stored"

    channels = channel_pb2_grpc.ChannelServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channels.Publish(channel_pb2.PublishRequest(channel="news"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["payload"]

    null = common_pb2.Payload()
    null.json.null_value = 0
    stored = await state.PutState(state_pb2.PutStateRequest(namespace="ns", key="k", value=null))
    assert stored.entry.value.json.WhichOneof("kind") == "null_value", "JSON null is said explicitly"


def _forged(position: str, like: str) -> str:
    """A page token at `position`, with the filter fingerprint of the real token `like` (anyone can compute it)."""
    fingerprint = json.loads(base64.urlsafe_b64decode(like + "=" * (-len(like) % 4)))["f"]
    raw = json.dumps({"a": position, "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_forged_page_tokens_are_invalid_argument(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    audit = audit_pb2_grpc.AuditServiceStub(channel)
    state = state_pb2_grpc.StateServiceStub(channel)
    for key in ("k1", "k2"):  # two state writes: two audit entries, two state keys
        await state.PutState(state_pb2.PutStateRequest(namespace="ns", key=key, value=json_data(b"1")))
    real = (await audit.ListAuditEntries(audit_pb2.ListAuditEntriesRequest(page_size=1))).next_page_token
    assert real
    for position in ("99999999999999999999999", "-5", "0"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await audit.ListAuditEntries(
                audit_pb2.ListAuditEntriesRequest(page_size=1, page_token=_forged(position, real))
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, position
        assert violated_fields(caught.value) == ["page_token"]

    real = (await state.ListStates(state_pb2.ListStatesRequest(namespace="ns", page_size=1))).next_page_token
    assert real
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await state.ListStates(
            state_pb2.ListStatesRequest(namespace="ns", page_size=1, page_token=_forged("k\x00", real))
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["page_token"]


async def test_a_cancel_reason_over_the_limit_is_refused_and_the_task_runs_on(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    tasks = tasks_stub(channel)
    submitted = await tasks.SubmitTask(submit_request())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasks.CancelTask(ts.CancelTaskRequest(task_id=submitted.task.id, reason="x" * 1001))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == ["reason"]
    assert "at most 1000 characters (got 1001)" in (caught.value.details() or "")
    got = await tasks.GetTask(ts.GetTaskRequest(task_id=submitted.task.id))
    assert got.task.state == task_pb2.TASK_STATE_QUEUED
    cancelled = await tasks.CancelTask(ts.CancelTaskRequest(task_id=submitted.task.id, reason="y" * 1000))
    assert cancelled.task.cancel_reason == "y" * 1000


async def test_times_answered_on_writes_are_the_times_reads_show(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    """Whole microseconds, as stored: a client comparing a write's answer with a later read sees one time.
    (Rounded apart, they differed now and then by a microsecond, or showed nanoseconds no read shows.)"""
    tasks = tasks_stub(channel)
    state = state_pb2_grpc.StateServiceStub(channel)
    for number in range(40):
        submitted = (await tasks.SubmitTask(submit_request())).task
        got = (await tasks.GetTask(ts.GetTaskRequest(task_id=submitted.id))).task
        assert (submitted.create_time, submitted.update_time) == (got.create_time, got.update_time)
        assert submitted.create_time.nanos % 1000 == 0
        value = json_data(str(number).encode())
        put = (await state.PutState(state_pb2.PutStateRequest(namespace="ns", key="t", value=value))).entry
        read = (await state.GetState(state_pb2.GetStateRequest(namespace="ns", key="t"))).entry
        assert (put.create_time, put.update_time) == (read.create_time, read.update_time)
        assert put.update_time.nanos % 1000 == 0


async def test_listings_of_large_items_end_pages_early_and_lose_nothing(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    """Pages stay under the 4 MiB gRPC clients take by default; the next token goes on after the last item sent."""
    big = json.dumps("x" * 900_000).encode()  # under the 1 MiB payload limit; five of them are over 4 MiB
    state = state_pb2_grpc.StateServiceStub(channel)
    tasks = tasks_stub(channel)
    for number in range(6):
        await state.PutState(state_pb2.PutStateRequest(namespace="big", key=f"k{number}", value=json_data(big)))
        await tasks.SubmitTask(
            ts.SubmitTaskRequest(target=task_pb2.TaskTarget(capability="nobody.home"), input=json_data(big))
        )

    keys: list[list[str]] = []
    token = ""
    while True:
        page = await state.ListStates(state_pb2.ListStatesRequest(namespace="big", page_size=100, page_token=token))
        assert page.ByteSize() < 4 * 1024 * 1024
        keys.append([entry.key for entry in page.entries])
        token = page.next_page_token
        if not token:
            break
    assert keys == [["k0", "k1", "k2", "k3"], ["k4", "k5"]]

    ids: list[str] = []
    token = ""
    pages = 0
    while True:
        listed = await tasks.ListTasks(ts.ListTasksRequest(page_size=100, page_token=token))
        assert listed.ByteSize() < 4 * 1024 * 1024 and listed.tasks
        ids += [task.id for task in listed.tasks]
        pages += 1
        token = listed.next_page_token
        if not token:
            break
    assert pages == 2 and len(ids) == len(set(ids)) == 6


@pytest.mark.parametrize("text", [b"NaN", b'{"a": Infinity}', b"[-Infinity]", b'{"big": 1e999}'])
async def test_numbers_json_has_not_are_refused(plane: ControlPlane, channel: grpc.aio.Channel, text: bytes) -> None:
    """Python's json module takes NaN and Infinity; JSON (and every reader's protobuf Value) does not."""
    calls = {
        "input": tasks_stub(channel).SubmitTask(
            ts.SubmitTaskRequest(target=task_pb2.TaskTarget(capability="demo.echo"), input=json_data(text))
        ),
        "value": state_pb2_grpc.StateServiceStub(channel).PutState(
            state_pb2.PutStateRequest(namespace="ns", key="nan", value=json_data(text))
        ),
        "payload": channel_pb2_grpc.ChannelServiceStub(channel).Publish(
            channel_pb2.PublishRequest(channel="nan", payload=json_data(text))
        ),
    }
    for field, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert violated_fields(caught.value) == [field]
        assert "which JSON has no number for" in (caught.value.details() or "")
    assert not (await tasks_stub(channel).ListTasks(ts.ListTasksRequest())).tasks


async def test_an_output_json_has_no_number_for_fails_the_task(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agent = LinkAgent(plane.address, capabilities=["demo.echo"])
    await agent.connect()
    submitted = await tasks_stub(channel).SubmitTask(submit_request())
    assignment = await agent.next_assignment()
    await agent.succeed(assignment, {"ratio": float("nan")})  # the agent's JSON encoder wrote NaN
    failed = await wait_state(channel, submitted.task.id, task_pb2.TASK_STATE_FAILED)
    assert failed.error.code == "invalid_output" and "NaN" in failed.error.message
    listed = await tasks_stub(channel).ListTasks(ts.ListTasksRequest())
    assert [t.id for t in listed.tasks] == [submitted.task.id], "the listing still reads"
    await agent.close()


def test_a_stored_payload_json_has_no_number_for_reads_back_as_bytes() -> None:
    answered = convert.payload_for_client(Payload(b'{"a": NaN}'))
    assert answered.WhichOneof("kind") == "data" and answered.data == b'{"a": NaN}'


async def test_timeouts_and_backoffs_over_a_year_are_refused(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    """A deadline a billion years away is no deadline, and overflowed the store's time column (INTERNAL)."""
    request = submit_request()
    request.timeouts.schedule_to_close.seconds = 10**15
    request.retry_policy.max_backoff.seconds = 367 * 24 * 3600
    request.retry_policy.backoff_multiplier = 1e300
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasks_stub(channel).SubmitTask(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(violated_fields(caught.value)) == [
        "retry_policy.backoff_multiplier",
        "retry_policy.max_backoff",
        "timeouts.schedule_to_close",
    ]
    year = submit_request()
    year.timeouts.schedule_to_close.seconds = 366 * 24 * 3600
    assert (await tasks_stub(channel).SubmitTask(year)).task.id, "a year is still taken"


async def test_names_keys_and_channels_are_whole_values_and_a_channel_may_have_200_characters(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    """A trailing newline passes a `$`-anchored pattern; each rule takes the whole value (a channel "news\\n" was
    taken, then failed INTERNAL when NATS refused it as a subject). Channels are 1-200 characters, as documented."""
    value = common_pb2.Payload(data=b"{}", content_type="application/json")
    channels = channel_pb2_grpc.ChannelServiceStub(channel)
    state = state_pb2_grpc.StateServiceStub(channel)
    tasks = tasks_stub(channel)
    refused = {
        "channel": channels.Publish(channel_pb2.PublishRequest(channel="news\n", payload=value)),
        "channel (201)": channels.Publish(channel_pb2.PublishRequest(channel="c" * 201, payload=value)),
        "key": state.PutState(state_pb2.PutStateRequest(namespace="ns", key="k\n", value=value)),
        "namespace": state.PutState(state_pb2.PutStateRequest(namespace="ns\n", key="k", value=value)),
        "target.capability": tasks.SubmitTask(submit_request(capability="demo.echo\n")),
    }
    for what, call in refused.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
    await channels.Publish(channel_pb2.PublishRequest(channel="c" * 200, payload=value))
    await channels.Publish(channel_pb2.PublishRequest(channel="a.b-c_d", payload=value))
