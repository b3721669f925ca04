"""The plane's gRPC listeners: several servers share the port, every connection is served, and the port is
still the plane's alone."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controlplane.api.listeners import Listeners, PortInUse, split_address
from meshplane.v1 import task_service_pb2, task_service_pb2_grpc
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)


def _own_connection(address: str) -> grpc.aio.Channel:
    # A local subchannel pool gives each channel its own TCP connection (gRPC shares them by default).
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


async def test_every_connection_is_served_whichever_server_accepts_it(tmp_path: Path) -> None:
    async with running_plane(tmp_path / "plane", accept_loops=4) as plane:
        assert plane.listeners is not None and len(plane.listeners) == 4
        channels = [_own_connection(plane.address) for _ in range(24)]
        try:
            for channel in channels:
                stub = task_service_pb2_grpc.TaskServiceStub(channel)
                listed = await stub.ListTasks(task_service_pb2.ListTasksRequest(), timeout=10)
                assert list(listed.tasks) == []
        finally:
            for channel in channels:
                await channel.close()


async def test_stopping_the_plane_closes_every_listener(tmp_path: Path) -> None:
    async with running_plane(tmp_path / "plane", accept_loops=4) as plane:
        address = plane.address
    await _refused_everywhere(address)


@pytest.mark.parametrize("loops", [1, 4])
async def test_a_second_plane_on_the_same_port_is_refused(tmp_path: Path, loops: int) -> None:
    async with running_plane(tmp_path / "first", accept_loops=4) as first:
        port = first.address.rsplit(":", 1)[1]
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port} is already in use"):
            async with running_plane(tmp_path / "second", listen=f"127.0.0.1:{port}", accept_loops=loops):
                pass
        async with _own_connection(first.address) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def _refused_everywhere(address: str) -> None:
    for _ in range(8):  # connections would spread over every server still listening
        async with _own_connection(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert failure.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_when_one_listener_fails_to_start_the_others_stop() -> None:
    built: list[grpc.aio.Server] = []

    def build(reuse_port: bool) -> grpc.aio.Server:
        server = grpc.aio.server(options=[("grpc.so_reuseport", int(reuse_port))])
        health_pb2_grpc.add_HealthServicer_to_server(grpc_health.aio.HealthServicer(), server)
        if len(built) == 2:

            async def refuse() -> None:
                raise RuntimeError("this listener cannot start")

            server.start = refuse  # type: ignore[method-assign]
        built.append(server)
        return server

    listeners = Listeners(build, "127.0.0.1:0", 4)
    with pytest.raises(RuntimeError, match="cannot start"):
        await listeners.start()
    await _refused_everywhere(f"127.0.0.1:{listeners.port}")
    await listeners.stop(None)


async def test_a_port_held_by_another_program_is_refused(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port} is already in use"):
            async with running_plane(tmp_path / "plane", listen=f"127.0.0.1:{port}"):
                pass


def test_listen_addresses_are_split_into_host_and_port() -> None:
    assert split_address("127.0.0.1:50051") == ("127.0.0.1", 50051)
    assert split_address("[::]:0") == ("::", 0)
    assert split_address(":7000") == ("", 7000)
    assert split_address("unix:/run/meshplane.sock") is None
    assert split_address("unix:///run/meshplane:1") is None
    assert split_address("unixhost:50051") == ("unixhost", 50051)
    assert split_address("localhost") is None
