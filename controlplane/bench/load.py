"""Client load for the benchmark: batch submits, concurrent single submits, one-caller latency.

Concurrent callers spread over `connections` client connections, as callers from several client processes
would (calls sharing one connection are accepted one at a time by one server; see controlplane.api.listeners).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc

from controlplane.runtime import run_event_loop
from meshplane.v1 import common_pb2, task_pb2, task_service_pb2, task_service_pb2_grpc


@dataclass
class LoadResult:
    submitted: int
    seconds: float
    latencies_ms: list[float]
    cpu_seconds: float = 0.0  # the load process's own CPU (user + system)


@asynccontextmanager
async def open_channels(target: str, connections: int) -> AsyncIterator[list[grpc.aio.Channel]]:
    """`connections` channels to `target`, each on its own TCP connection (gRPC shares them by default)."""
    options = [("grpc.use_local_subchannel_pool", 1)] if connections > 1 else []
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(connections)]
    try:
        yield channels
    finally:
        for channel in channels:
            await channel.close()


def _request(capability: str, index: int) -> task_service_pb2.SubmitTaskRequest:
    return task_service_pb2.SubmitTaskRequest(
        target=task_pb2.TaskTarget(capability=capability),
        input=common_pb2.Payload(data=b'{"n":%d}' % index, content_type="application/json"),
    )


async def _batches(target: str, capability: str, total: int, batch: int, callers: int, connections: int) -> LoadResult:
    async with open_channels(target, connections) as channels:
        stubs = [task_service_pb2_grpc.TaskServiceStub(channel) for channel in channels]
        requests = [
            task_service_pb2.BatchSubmitTasksRequest(requests=[_request(capability, i) for i in range(batch)])
            for _ in range(4)
        ]
        sent = 0

        async def caller(number: int) -> None:
            nonlocal sent
            stub = stubs[number % len(stubs)]
            while sent < total:
                sent += batch
                await stub.BatchSubmitTasks(requests[number % len(requests)])

        started = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(callers)))
        return LoadResult(sent, time.perf_counter() - started, [])


async def _singles(target: str, capability: str, total: int, callers: int, connections: int) -> LoadResult:
    async with open_channels(target, connections) as channels:
        stubs = [task_service_pb2_grpc.TaskServiceStub(channel) for channel in channels]
        request = _request(capability, 0)
        latencies: list[float] = []
        remaining = total

        async def caller(number: int) -> None:
            nonlocal remaining
            stub = stubs[number % len(stubs)]
            while remaining > 0:
                remaining -= 1
                began = time.perf_counter()
                await stub.SubmitTask(request)
                latencies.append((time.perf_counter() - began) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(caller(number) for number in range(callers)))
        return LoadResult(total, time.perf_counter() - started, latencies)


def run_load(
    kind: str, target: str, capability: str, total: int, batch: int, callers: int, connections: int = 1
) -> LoadResult:
    """Process entry point (the load runs in its own process, apart from the measuring one)."""
    if kind == "batch":
        coroutine = _batches(target, capability, total, batch, callers, connections)
    else:
        coroutine = _singles(target, capability, total, callers, connections)
    result: list[LoadResult] = []

    async def main() -> None:
        result.append(await coroutine)

    cpu_before = time.process_time()
    run_event_loop(main())
    result[0].cpu_seconds = time.process_time() - cpu_before
    return result[0]
