"""Fixtures for SDK tests: a real control plane (SQLite + embedded NATS), agents served on it, a client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent_runtime import Agent, MeshClient, TaskState
from controlplane.app import ControlPlane
from tests.support.plane import running_plane


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    async with running_plane(tmp_path / "plane") as started:
        yield started


@pytest.fixture
async def client(plane: ControlPlane) -> AsyncIterator[MeshClient]:
    async with MeshClient(plane.address) as opened:
        yield opened


@contextlib.asynccontextmanager
async def serving(agent: Agent, address: str, **options: Any) -> AsyncIterator[asyncio.Task[None]]:
    """``agent`` served on ``address`` (registered when the block starts), stopped at the end."""
    task = asyncio.ensure_future(agent.serve(address, **options))
    connected = asyncio.ensure_future(agent.wait_connected(timeout=10))
    try:
        await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
        if not connected.done():
            connected.cancel()
            task.result()  # serve() ended before registering: show why
        await connected
        yield task
    finally:
        await agent.stop()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 10)


@pytest.fixture
def serve(plane: ControlPlane) -> Callable[..., contextlib.AbstractAsyncContextManager[asyncio.Task[None]]]:
    """``async with serve(agent): ...`` on the test's control plane."""

    def start(agent: Agent, **options: Any) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
        return serving(agent, plane.address, **options)

    return start


async def task_state(client: MeshClient, task_id: str) -> TaskState:
    return (await client.get(task_id)).state


async def task_state_is(client: MeshClient, task_id: str, state: TaskState) -> bool:
    return await task_state(client, task_id) is state
