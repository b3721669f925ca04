"""MeshClient(connections=N): calls take N connections in turn (the plane accepts one connection's calls one
at a time)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from agent_runtime import Agent, MeshClient, SyncMeshClient, TaskContext
from controlplane.app import ControlPlane
from meshplane.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc
from tests.sdk.conftest import serving
from tests.support.eventually import eventually

pytestmark = pytest.mark.timeout(60)


class _PeerRecorder(task_service_pb2_grpc.TaskServiceServicer):
    """GetTask answers, counting the calls by the client connection (peer address) they came over."""

    def __init__(self) -> None:
        self.calls_by_peer: collections.Counter[str] = collections.Counter()

    async def GetTask(
        self, request: task_service_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> task_service_pb2.GetTaskResponse:
        self.calls_by_peer[context.peer()] += 1
        return task_service_pb2.GetTaskResponse(
            task=task_pb2.Task(id=request.task_id, state=task_pb2.TASK_STATE_QUEUED)
        )


@contextlib.asynccontextmanager
async def _recording_server() -> AsyncIterator[tuple[str, _PeerRecorder]]:
    """A TaskService answering GetTask on an ephemeral port: its address and what it recorded."""
    server = grpc.aio.server()
    servicer = _PeerRecorder()
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(0)


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, _PeerRecorder]]:
    async with _recording_server() as started:
        yield started


@pytest.fixture
async def two_replicas() -> AsyncIterator[tuple[str, _PeerRecorder, _PeerRecorder]]:
    """Two recording servers and the target listing both (``ipv4:first,second``)."""
    async with _recording_server() as (first, first_calls), _recording_server() as (second, second_calls):
        yield f"ipv4:{first},{second}", first_calls, second_calls


@pytest.mark.parametrize(("connections", "expected"), [(1, [9]), (3, [3, 3, 3])])
async def test_calls_take_the_connections_in_turn(
    recorder: tuple[str, _PeerRecorder], connections: int, expected: list[int]
) -> None:
    address, servicer = recorder
    async with MeshClient(address, connections=connections) as client:
        for index in range(9):
            assert (await client.get(f"t-{index}")).id == f"t-{index}"
    assert sorted(servicer.calls_by_peer.values()) == expected


@pytest.mark.parametrize("connections", [0, 65])
def test_a_connection_count_out_of_range_is_refused(connections: int) -> None:
    with pytest.raises(ValueError, match="connections must be between 1 and 64"):
        MeshClient("127.0.0.1:1", connections=connections)


async def test_concurrent_submits_over_several_connections_all_complete(plane: ControlPlane) -> None:
    agent = Agent("echoer")

    @agent.task("demo.echo")
    async def echo(ctx: TaskContext, data: Any) -> Any:
        return data

    async with serving(agent, plane.address), MeshClient(plane.address, connections=4) as client:
        handles = await asyncio.gather(*(client.submit("demo.echo", {"n": n}) for n in range(16)))
        results = await asyncio.gather(*(handle.result(timeout=20) for handle in handles))
    assert results == [{"n": n} for n in range(16)]


def _calls(*recorders: _PeerRecorder) -> tuple[int, ...]:
    return tuple(recorder.calls_by_peer.total() for recorder in recorders)


@pytest.mark.parametrize("connections", [1, 2])
async def test_a_client_given_a_list_of_addresses_spreads_its_calls_over_them(
    two_replicas: tuple[str, _PeerRecorder, _PeerRecorder], connections: int
) -> None:
    # gRPC's default policy (pick_first) would send every call to the first address that accepts a connection.
    listed, first, second = two_replicas
    async with MeshClient(listed, connections=connections) as client:

        async def both_answered() -> bool:
            await client.get("t-warm-up")
            return all(_calls(first, second))

        await eventually(both_answered, message="calls reached both addresses")
        # Both connected now: each channel's calls take the addresses in turn.
        before = _calls(first, second)
        for index in range(8):
            assert (await client.get(f"t-{index}")).id == f"t-{index}"
    assert tuple(now - then for now, then in zip(_calls(first, second), before, strict=True)) == (4, 4)


async def test_the_sync_client_spreads_its_calls_over_a_list_of_addresses_too(
    two_replicas: tuple[str, _PeerRecorder, _PeerRecorder],
) -> None:
    listed, first, second = two_replicas

    def call_until_both_answered(bound: int = 2000) -> int:
        """Calls until each server has seen one (the second connection may take a moment): how many it took."""
        with SyncMeshClient(listed) as client:
            for made in range(1, bound + 1):
                client.get(f"t-{made}")
                if all(_calls(first, second)):
                    return made
        return bound

    made = await asyncio.to_thread(call_until_both_answered)
    assert all(_calls(first, second)), f"{made} calls, all to one address: {_calls(first, second)}"


async def test_a_single_address_or_dns_name_takes_every_call_as_before(recorder: tuple[str, _PeerRecorder]) -> None:
    address, servicer = recorder
    by_name = address.replace("127.0.0.1", "localhost")
    for target in (address, by_name):
        async with MeshClient(target) as client:
            for index in range(3):
                assert (await client.get(f"t-{index}")).id == f"t-{index}"
    assert sorted(servicer.calls_by_peer.values()) == [3, 3]  # one connection per client, every call on it
