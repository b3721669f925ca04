"""An agent's link notices a control plane that stopped answering (a hung process, a dead host: no RST) within
its keepalive, and ends the stream so the agent reconnects (to another replica, if it has a list)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent_runtime._rpc import open_channel
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(90)

_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    async def main() -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        server.add_insecure_port("127.0.0.1:" + sys.argv[1])
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())
    """
)

# Keepalive pings every 10 s, each answered within 5 s: a hung peer shows within ~15 s. C-core's default ping
# timeout (60 s) made it over a minute. 40 s leaves a loaded machine room and still tells the two apart.
NOTICED_WITHIN = 40.0


async def test_a_stream_to_a_hung_server_ends_unavailable_within_the_keepalive() -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        channel = open_channel(f"127.0.0.1:{port}", keepalive=True)
        try:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            os.kill(server.pid, signal.SIGSTOP)  # alive, connected, silent
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await asyncio.wait_for(watch.read(), NOTICED_WITHIN)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await channel.close()
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.kill()
        server.wait()
