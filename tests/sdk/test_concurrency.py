"""The agent never runs more handlers at once than its max_concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent_runtime import Agent, MeshClient, TaskContext, TaskSpec
from tests.support.eventually import eventually

pytestmark = pytest.mark.timeout(60)


async def test_max_concurrency_bounds_concurrent_handler_executions(serve: Any, client: MeshClient) -> None:
    agent = Agent("bounded", max_concurrency=3)
    running = 0
    peak = 0
    gate = asyncio.Event()

    @agent.task("work.slow")
    async def slow(ctx: TaskContext, data: Any) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await gate.wait()
            return int(data)
        finally:
            running -= 1

    async with serve(agent):
        handles = await client.submit_many([TaskSpec("work.slow", i) for i in range(12)])
        await eventually(lambda: running == 3, message="three handlers running")
        await eventually(lambda: _queued(client, 9), message="the other nine wait in the queue")
        assert running == 3
        gate.set()
        results = [await h.result(timeout=20) for h in handles]

    assert results == list(range(12))
    assert peak == 3


async def _queued(client: MeshClient, count: int) -> bool:
    return len(await client.list_tasks(state="queued", capability="work.slow")) == count


async def test_sync_handlers_respect_max_concurrency_too(serve: Any, client: MeshClient) -> None:
    import threading
    import time

    agent = Agent("bounded-sync", max_concurrency=2)
    lock = threading.Lock()
    running = 0
    peak = 0

    @agent.task("work.block")
    def block(ctx: TaskContext, data: Any) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.1)
        with lock:
            running -= 1

    async with serve(agent):
        handles = await client.submit_many([TaskSpec("work.block") for _ in range(6)])
        for handle in handles:
            await handle.wait(timeout=20)

    assert peak == 2
