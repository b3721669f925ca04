"""No-op agents for the benchmark: they answer every assignment with its input.

Written directly against the agent link (not through an SDK) so the figures measure the control plane:
results queued while a frame is being written go out together in the next frame, as the protocol allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator

import grpc

from controlplane.runtime import run_event_loop
from meshplane.v1 import agent_link_pb2 as al
from meshplane.v1 import agent_link_pb2_grpc, common_pb2

_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


async def _agent(channel: grpc.aio.Channel, instance_id: str, capability: str, concurrency: int, idle: bool) -> None:
    stub = agent_link_pb2_grpc.AgentLinkServiceStub(channel)
    pending: list[al.TaskResult] = []
    wake = asyncio.Event()
    heartbeat_every = 5.0

    async def requests() -> AsyncIterator[al.ConnectRequest]:
        yield al.ConnectRequest(
            register=al.Register(
                agent_name="bench-noop",
                agent_version="1",
                instance_id=instance_id,
                capabilities=[common_pb2.Capability(name=capability)],
                max_concurrency=concurrency,
                sdk=common_pb2.SdkInfo(language="python", version="bench"),
            )
        )
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + heartbeat_every
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), max(0.0, next_beat - loop.time()))
            wake.clear()
            if pending:
                batch = pending[:1000]
                del pending[:1000]
                if pending:
                    wake.set()
                yield al.ConnectRequest(task_results=al.TaskResults(results=batch))
            if loop.time() >= next_beat:
                next_beat = loop.time() + heartbeat_every
                yield al.ConnectRequest(heartbeat=al.Heartbeat(in_flight=len(pending)))

    call = stub.Connect(requests())
    async for frame in call:
        kind = frame.WhichOneof("frame")
        if kind == "assignments" and not idle:
            pending.extend(
                al.TaskResult(task_id=a.task_id, attempt=a.attempt, output=a.input)
                for a in frame.assignments.assignments
            )
            wake.set()
        elif kind == "registered":
            heartbeat_every = frame.registered.heartbeat_interval.ToTimedelta().total_seconds()


async def _resilient(
    channel: grpc.aio.Channel, instance_id: str, capability: str, concurrency: int, idle: bool
) -> None:
    """Like an SDK: when the stream fails, reconnect (with backoff) under the same instance id."""
    delay = 0.05
    while True:
        try:
            await _agent(channel, instance_id, capability, concurrency, idle)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)


async def _agents(target: str, count: int, capability: str, concurrency: int, idle: bool, per_channel: int) -> None:
    prefix = f"bench-{os.getpid()}"
    channels = [
        grpc.aio.insecure_channel(target, options=[*_CHANNEL_OPTIONS, ("grpc.channel_id", i)])
        for i in range((count + per_channel - 1) // per_channel)
    ]
    for channel in channels:
        await channel.channel_ready()
    await asyncio.gather(
        *(_resilient(channels[i // per_channel], f"{prefix}-{i}", capability, concurrency, idle) for i in range(count))
    )


def run_agents(
    target: str, count: int, capability: str, concurrency: int, idle: bool = False, per_channel: int = 1
) -> None:
    """Process entry point: `count` agent sessions (`per_channel` streams per connection), until terminated."""
    run_event_loop(_agents(target, count, capability, concurrency, idle, per_channel))
