"""Client load for the benchmark: batch submits, concurrent single submits, one-caller latency."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc

from controlplane.runtime import run_event_loop
from meshplane.v1 import common_pb2, task_pb2, task_service_pb2, task_service_pb2_grpc


@dataclass
class LoadResult:
    submitted: int
    seconds: float
    latencies_ms: list[float]


def _request(capability: str, index: int) -> task_service_pb2.SubmitTaskRequest:
    return task_service_pb2.SubmitTaskRequest(
        target=task_pb2.TaskTarget(capability=capability),
        input=common_pb2.Payload(data=b'{"n":%d}' % index, content_type="application/json"),
    )


async def _batches(target: str, capability: str, total: int, batch: int, callers: int) -> LoadResult:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        requests = [
            task_service_pb2.BatchSubmitTasksRequest(requests=[_request(capability, i) for i in range(batch)])
            for _ in range(4)
        ]
        sent = 0

        async def caller(number: int) -> None:
            nonlocal sent
            while sent < total:
                sent += batch
                await stub.BatchSubmitTasks(requests[number % len(requests)])

        started = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(callers)))
        return LoadResult(sent, time.perf_counter() - started, [])


async def _singles(target: str, capability: str, total: int, callers: int) -> LoadResult:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        request = _request(capability, 0)
        latencies: list[float] = []
        remaining = total

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                began = time.perf_counter()
                await stub.SubmitTask(request)
                latencies.append((time.perf_counter() - began) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return LoadResult(total, time.perf_counter() - started, latencies)


def run_load(kind: str, target: str, capability: str, total: int, batch: int, callers: int) -> LoadResult:
    """Process entry point (the load runs in its own process, apart from the measuring one)."""
    if kind == "batch":
        coroutine = _batches(target, capability, total, batch, callers)
    else:
        coroutine = _singles(target, capability, total, callers)
    result: list[LoadResult] = []

    async def main() -> None:
        result.append(await coroutine)

    run_event_loop(main())
    return result[0]
