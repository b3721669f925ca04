"""MeshClient(connections=N): calls take N connections in turn (the plane accepts one connection's calls one
at a time)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from agent_runtime import Agent, MeshClient, TaskContext
from controlplane.app import ControlPlane
from meshplane.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc
from tests.sdk.conftest import serving

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


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, _PeerRecorder]]:
    server = grpc.aio.server()
    servicer = _PeerRecorder()
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(0)


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
