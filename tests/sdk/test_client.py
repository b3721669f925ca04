"""MeshClient: typed results, waiting, and the error tree mapped from gRPC statuses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import agent_runtime._client
from agent_runtime import (
    Agent,
    FailedPrecondition,
    InvalidArgument,
    MeshClient,
    MeshplaneError,
    NotFound,
    SubmitResult,
    SyncMeshClient,
    TaskCancelled,
    TaskContext,
    TaskEventType,
    TaskInfo,
    TaskSpec,
    TaskState,
    Unauthenticated,
    Unavailable,
)
from agent_runtime._payload import NotSerializable
from meshplane.v1 import task_pb2
from tests.sdk.conftest import serving
from tests.support.eventually import eventually
from tests.support.plane import running_plane
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(60)


def echo_agent(name: str = "echoer") -> Agent:
    agent = Agent(name)

    @agent.task("demo.echo")
    async def echo(ctx: TaskContext, data: Any) -> Any:
        return data

    return agent


async def test_submit_get_list_and_batch(serve: Any, client: MeshClient) -> None:
    async with serve(echo_agent()):
        handle = await client.submit("demo.echo", {"n": 1}, priority=5, correlation_id="c-1", metadata={"k": "v"})
        # Queued, or already placed by its submit when the agent had room and nothing waited.
        assert handle.task.state in (TaskState.QUEUED, TaskState.ASSIGNED)
        assert await handle.result(timeout=10) == {"n": 1}

        task = await client.get(handle.id)
        assert task.state is TaskState.SUCCEEDED
        assert (task.input, task.output) == ({"n": 1}, {"n": 1})
        assert (task.priority, task.correlation_id, task.metadata) == (5, "c-1", {"k": "v"})
        assert [a.outcome for a in task.attempts] == ["SUCCEEDED"]
        assert task.to_dict()["id"] == handle.id

        batch = await client.submit_many([TaskSpec("demo.echo", i) for i in range(5)])
        assert [await h.result(timeout=10) for h in batch] == list(range(5))

        listed = await client.list_tasks(capability="demo.echo", limit=3)
        assert len(listed) == 3
        assert all(t.capability == "demo.echo" for t in listed)
        page = await client.list_tasks_page(state=TaskState.SUCCEEDED, page_size=2)
        assert len(page.items) == 2 and page.next_page_token


async def test_agents_and_instances_are_listed_a_page_at_a_time(
    serve: Any, client: MeshClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve(echo_agent("lister-a")), serve(echo_agent("lister-b")):
        first = await client.list_instances_page(page_size=1)
        assert len(first.items) == 1 and first.next_page_token
        second = await client.list_instances_page(page_size=1, page_token=first.next_page_token)
        assert [i.agent_name for i in first.items + second.items] == ["lister-a", "lister-b"]
        only_b = await client.list_instances_page("lister-b")
        assert [i.agent_name for i in only_b.items] == ["lister-b"] and not only_b.next_page_token

        monkeypatch.setattr(agent_runtime._client, "_MAX_PAGE", 1)  # the full listings follow every page
        assert [i.agent_name for i in await client.list_instances()] == ["lister-a", "lister-b"]
        assert [a.name for a in await client.list_agents(capability="demo.echo")] == ["lister-a", "lister-b"]


async def test_idempotent_submit_returns_the_same_task(client: MeshClient) -> None:
    first = await client.submit("demo.echo", 1, idempotency_key="once")
    second = await client.submit("demo.echo", 1, idempotency_key="once")
    assert second.id == first.id
    assert (first.deduplicated, second.deduplicated) == (False, True)
    with pytest.raises(FailedPrecondition) as caught:  # the key stands for input 1
        await client.submit("demo.echo", 2, idempotency_key="once")
    [violation] = caught.value.violations
    assert violation.type == "IDEMPOTENCY_KEY_REUSED" and first.id in violation.description


async def test_wait_and_watch_follow_a_task_to_its_end(serve: Any, client: MeshClient) -> None:
    handle = await client.submit("demo.echo", "hello")  # queued: no agent yet
    waiter = asyncio.ensure_future(handle.wait(timeout=10))
    async with serve(echo_agent()):
        final = await waiter
    assert final.state is TaskState.SUCCEEDED and final.output == "hello"
    events = [e async for e in client.watch(handle.id)]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type is TaskEventType.SUCCEEDED and events[-1].output == "hello"
    resumed = [e async for e in client.watch(handle.id, after_sequence=len(events) - 1)]
    assert [e.sequence for e in resumed] == [len(events)]


async def test_waiting_on_a_cancelled_task_raises_with_the_task(client: MeshClient) -> None:
    handle = await client.submit("nobody.serves.this", None)
    waiter = asyncio.ensure_future(handle.result(timeout=10))
    cancelled = await handle.cancel(reason="changed my mind")
    assert cancelled.state is TaskState.CANCELLED
    with pytest.raises(TaskCancelled) as raised:
        await waiter
    assert raised.value.task.id == handle.id
    assert raised.value.task.cancel_reason == "changed my mind"
    with pytest.raises(TimeoutError):
        await (await client.submit("nobody.serves.this", None)).wait(timeout=0.2)


async def test_errors_are_mapped_to_the_error_tree(client: MeshClient) -> None:
    with pytest.raises(NotFound) as not_found:
        await client.get("01NOTATASK")
    assert str(not_found.value) == "task 01NOTATASK not found"
    assert (not_found.value.resource_type, not_found.value.resource_name) == ("task", "01NOTATASK")

    with pytest.raises(InvalidArgument) as invalid:
        await client.submit("", None, priority=5000)
    fields = {v.field for v in invalid.value.violations}
    assert {"target.capability", "priority"} <= fields
    assert str(invalid.value).startswith("invalid argument: ")

    with pytest.raises(NotFound):
        async for _ in client.watch("01NOTATASK"):
            pass

    handle = await client.submit("nobody.serves.this", None)
    await client.cancel(handle.id)
    with pytest.raises(FailedPrecondition):
        await client.cancel(handle.id)


async def test_an_unreachable_control_plane_is_unavailable() -> None:
    address = f"127.0.0.1:{free_port()}"
    async with MeshClient(address, timeout=5) as client:
        with pytest.raises(Unavailable) as unavailable:
            await client.get("01ANY")
    assert str(unavailable.value) == f"control plane unreachable at {address}"


async def test_tokens_authenticate_clients_and_agents(tmp_path: Path) -> None:
    async with running_plane(tmp_path / "plane", auth_tokens=["s3cret"]) as plane:
        async with MeshClient(plane.address) as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.list_tasks()
        agent = echo_agent()
        with pytest.raises(Unauthenticated):
            await asyncio.wait_for(agent.serve(plane.address), 10)
        async with MeshClient(plane.address, token="s3cret") as client, serving(agent, plane.address, token="s3cret"):
            assert await (await client.submit("demo.echo", "ok")).result(timeout=10) == "ok"


async def test_the_sync_client_works_without_an_event_loop(serve: Any, plane: Any) -> None:
    def use_it() -> tuple[Any, Any, list[str], Any]:
        with SyncMeshClient(plane.address) as client:
            task = client.submit("demo.echo", {"sync": True}, routing_key="sync-user")
            assert task.strategy == "consistent_hash"  # a routing key means sticky placement
            output = client.result(task.id, timeout=10)
            events = [e.type.value for e in client.watch(task.id)]
            client.put_state("sync", "k", 1)
            with client.subscribe("sync-news") as messages:
                client.publish("sync-news", "hi")
                message = next(messages)
            return output, client.get_state("sync", "k"), events, message.data

    async with serve(echo_agent()):
        output, entry, events, message = await asyncio.to_thread(use_it)
    assert output == {"sync": True}
    assert entry is not None and entry.value == 1
    assert events[0] == "CREATED" and events[-1] == "SUCCEEDED"
    assert message == "hi"


async def test_the_sync_client_pages_resubmits_and_drains(serve: Any, plane: Any) -> None:
    def use_it() -> dict[str, Any]:
        with SyncMeshClient(plane.address) as client:
            first = client.submit_spec(TaskSpec("demo.echo", 1))
            client.result(first.id, timeout=10)
            again = client.resubmit(first.id)
            tasks = client.list_tasks_page(capability="demo.echo", page_size=1)
            agents = client.list_agents_page(capability="demo.echo")
            [instance] = client.list_instances_page("echoer").items
            return {
                "again": (again.resubmitted_from == first.id, client.result(again.id, timeout=10)),
                "tasks": (len(tasks.items), bool(tasks.next_page_token)),
                "agents": ([a.name for a in agents.items], client.get_agent("echoer").name),
                "drained": client.drain_instance("echoer", instance.instance_id, reason="test").status,
            }

    async with serve(echo_agent()):
        seen = await asyncio.to_thread(use_it)
    assert seen["again"] == (True, 1)
    assert seen["tasks"] == (1, True)
    assert seen["agents"] == (["echoer"], "echoer")
    assert seen["drained"] == "DRAINING"


async def test_the_sync_client_says_when_an_idempotency_key_matched_an_existing_task(plane: Any) -> None:
    def use_it() -> tuple[SubmitResult, ...]:
        with SyncMeshClient(plane.address) as client:
            first = client.submit("demo.echo", 1, idempotency_key="sync-once")
            again = client.submit("demo.echo", 1, idempotency_key="sync-once")
            by_spec = client.submit_spec(TaskSpec("demo.echo", 1, idempotency_key="sync-once"))
            batch = client.submit_many([TaskSpec("demo.echo", 1, idempotency_key="sync-once"), TaskSpec("demo.echo")])
            return first, again, by_spec, *batch

    first, again, by_spec, batched, new = await asyncio.to_thread(use_it)
    assert [r.deduplicated for r in (first, again, by_spec, batched, new)] == [False, True, True, True, False]
    assert first.id == again.id == by_spec.id == batched.id != new.id
    # Still the TaskInfo it was (callers read its fields), and `.task` as on the async client's handle.
    assert isinstance(again, TaskInfo) and again.task is again and again.state is TaskState.QUEUED
    # Printed, it says so too: the task's JSON with `deduplicated` (false as well, not left out as proto3 JSON would).
    assert again.to_dict() == {**TaskInfo.to_dict(again), "deduplicated": True}
    assert again.to_dict()["id"] == again.id
    assert json.loads(first.to_json())["deduplicated"] is False


def test_the_sync_client_offers_every_operation_of_the_async_one() -> None:
    def public(cls: type) -> set[str]:
        return {name for name in dir(cls) if not name.startswith("_")}

    # `state(namespace)` hands out an async store; the sync client reads and writes state directly.
    assert public(MeshClient) - public(SyncMeshClient) == {"state"}
    assert {"get_state", "put_state", "delete_state"} <= public(SyncMeshClient)


def test_whole_numbers_print_whole_and_others_as_they_are() -> None:
    task = task_pb2.Task(id="t")
    task.output.json.struct_value.update({"n": 3, "half": 2.5, "huge": 2.0**60, "list": [1, 2.0, -0.0]})
    shown = TaskInfo.from_proto(task).to_json(indent=None)
    # Read back: "3" parses as an int, "3.0" as a float (the keys' order is the Struct's, not fixed).
    printed = json.loads(shown)["output"]["json"]
    assert printed["n"] == 3 and type(printed["n"]) is int and printed["half"] == 2.5
    assert '"huge": 1.152921504606847e+18' in shown, "past 2**53 a double is no exact integer: left as it is"
    assert printed["list"] == [1, 2, 0] and all(type(n) is int for n in printed["list"])
    assert TaskInfo.from_proto(task).to_dict()["output"]["json"]["n"] == 3


async def test_the_audit_trail_is_read_newest_first_up_to_a_limit(
    client: MeshClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_runtime._client, "_MAX_PAGE", 2)  # so that a limit of 5 takes three pages
    for n in range(6):
        await client.put_state("audited", f"k{n}", n)
    newest = await client.list_audit_entries(action="state.put", limit=5)
    assert [e.resource for e in newest] == [f"namespaces/audited/states/k{n}" for n in (5, 4, 3, 2, 1)]
    assert [e.details for e in newest] == [{"version": 1}] * 5
    assert newest[0].time is not None and newest[0].id > newest[1].id
    since_third = await client.list_audit_entries(since=newest[2].time, limit=100)
    assert [e.id for e in since_third] == [e.id for e in newest[:3]]
    assert await client.list_audit_entries(resource="namespaces/audited/states/none") == []
    assert await client.list_audit_entries(limit=0) == []
    for listing in (client.list_audit_entries, client.list_tasks):
        with pytest.raises(ValueError, match="limit must be >= 0, got -1"):
            await listing(limit=-1)


async def test_what_json_cannot_carry_is_refused_before_sending() -> None:
    """NaN and Infinity are no JSON numbers: nothing is sent (the address is unreachable, yet no Unavailable)."""
    async with MeshClient(f"127.0.0.1:{free_port()}", timeout=5) as client:
        with pytest.raises(NotSerializable, match="NaN and Infinity are not JSON numbers"):
            await client.submit("demo.echo", float("nan"))
        with pytest.raises(NotSerializable, match="NaN and Infinity are not JSON numbers"):
            await client.submit_many([TaskSpec("demo.echo", {"a": [float("inf")]})])
        with pytest.raises(NotSerializable, match="NaN and Infinity are not JSON numbers"):
            await client.publish("news", {"x": -float("inf")})
        with pytest.raises(NotSerializable, match="NaN and Infinity are not JSON numbers"):
            await client.put_state("ns", "k", float("nan"))
        with pytest.raises(NotSerializable, match="lone surrogate"):
            await client.submit("demo.echo", "\ud800")


async def test_not_serializable_is_public_and_what_a_client_raises_for_input_json_cannot_carry() -> None:
    from agent_runtime import NotSerializable as Public

    async with MeshClient(f"127.0.0.1:{free_port()}", timeout=5) as client:
        with pytest.raises(Public, match="cannot encode set as JSON") as refused:
            await client.submit("demo.echo", {1, 2})
    assert type(refused.value) is Public is NotSerializable
    assert isinstance(refused.value, MeshplaneError) and isinstance(refused.value, TypeError)  # as it always was


async def test_out_of_range_arguments_are_clear_value_errors_before_sending() -> None:
    async with MeshClient(f"127.0.0.1:{free_port()}", timeout=5) as client:
        refused: list[tuple[str, Any]] = [
            ("priority must be within -2147483648..2147483647", client.submit("c", priority=2**31)),
            ("max_attempts must be within", client.submit("c", max_attempts=2**31)),
            ("start_to_close must be a number of seconds", client.submit("c", start_to_close=float("nan"))),
            ("heartbeat_timeout must be a number of seconds", client.submit("c", heartbeat_timeout=float("inf"))),
            ("schedule_to_close must be a number of seconds", client.submit("c", schedule_to_close=-1)),
            ("schedule_to_start must be a number of seconds", client.submit("c", schedule_to_start=1e20)),
            ("strategy must be one of least_loaded, round_robin", client.submit("c", strategy="fastest")),
            ("ttl must be a number of seconds", client.put_state("ns", "k", 1, ttl=float("nan"))),
            ("expected_version must be within", client.put_state("ns", "k", 1, expected_version=10**20)),
            ("expected_version must be within", client.delete_state("ns", "k", expected_version=-(10**20))),
            ("timeout must be a number of seconds", client.drain_instance("a", "i", timeout=float("nan"))),
            ("timeout must be a number of seconds >= 0", client.wait("01ANY", timeout=float("nan"))),
            ("timeout must be a number of seconds >= 0", client.result("01ANY", timeout=-1)),
        ]
        for message, call in refused:
            with pytest.raises(ValueError, match=message):
                await call


async def test_tokens_are_trimmed_and_ones_a_header_cannot_carry_refused(tmp_path: Path) -> None:
    async with (
        running_plane(tmp_path / "plane", auth_tokens=["s3cret"]) as plane,
        MeshClient(plane.address, token="s3cret\n") as client,  # as read from a file
    ):
        assert await client.list_tasks() == []
    for token, what in [("s3c\nret", "a line break or control character"), ("sécret", "a non-ASCII character")]:
        with pytest.raises(ValueError, match=f"the token holds {what} .* which a request header cannot carry"):
            MeshClient("127.0.0.1:1", token=token)


def instance_recorder(name: str, instance_id: str, started: list[str], gate: asyncio.Event) -> Agent:
    agent = Agent(name, instance_id=instance_id, max_concurrency=16)

    @agent.task("sticky.work")
    async def work(ctx: TaskContext, data: Any) -> str:
        started.append(ctx.instance_id)
        await gate.wait()  # in flight until all are placed: least_loaded would spread them over both instances
        return ctx.instance_id

    return agent


async def test_a_routing_key_keeps_its_tasks_on_one_instance(plane: Any, client: MeshClient) -> None:
    started: list[str] = []
    gate = asyncio.Event()
    first = instance_recorder("sticky", "sticky-a", started, gate)
    second = instance_recorder("sticky", "sticky-b", started, gate)
    async with serving(first, plane.address), serving(second, plane.address):
        handles = [await client.submit("sticky.work", i, routing_key="user-1") for i in range(12)]
        await eventually(lambda: len(started) == 12, message="every task started")
        gate.set()
        outputs = [await handle.result(timeout=10) for handle in handles]
    assert len(set(started)) == 1 and set(outputs) == set(started), started
    task = await client.get(handles[0].id)
    assert (task.routing_key, task.strategy) == ("user-1", "consistent_hash")


async def test_an_explicit_strategy_is_stored_on_the_task(client: MeshClient) -> None:
    chosen = await client.submit("nobody.serves.this", None, strategy="round_robin")
    keyed = await client.submit_spec(TaskSpec("nobody.serves.this", routing_key="k", strategy="weighted"))
    (batched,) = await client.submit_many([TaskSpec("nobody.serves.this", strategy="least_loaded")])
    plain = await client.submit("nobody.serves.this", None)
    stored = [(await client.get(h.id)).strategy for h in (chosen, keyed, batched, plain)]
    assert stored == ["round_robin", "weighted", "least_loaded", None]


async def test_metadata_given_to_a_client_goes_with_every_call(plane: Any) -> None:
    """A client's `metadata` pairs travel with each call: an `x-correlation-id` becomes the correlation id of the
    tasks it submits without one (and of its audit entries). Keys a header cannot carry are refused up front."""
    async with MeshClient(plane.address, metadata=[("x-correlation-id", "order-42")]) as client:
        handle = await client.submit("nobody.serves", {"n": 1})
        assert handle.task.correlation_id == "order-42"
        own = await client.submit("nobody.serves", {"n": 2}, correlation_id="own")
        assert own.task.correlation_id == "own"
    for bad in ([("X-Upper", "v")], [("authorization", "Bearer x")], [("x-id", "caf\u00e9")], [("x-b-bin", "v")]):
        with pytest.raises(ValueError, match="metadata"):
            MeshClient(plane.address, metadata=bad)
