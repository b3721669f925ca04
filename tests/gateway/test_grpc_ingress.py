"""The gateway's gRPC ingress, end to end: the real binary with `--grpc-listen`, in front of a real control plane,
an SDK agent connected to the plane, and the Python client connected to the gateway.

Many concurrent submits through the ingress leave for the plane in batches (the Go tests pin down how); here
each caller must still get its own task, its own error and its own result, and every other call must behave
as it does on the plane itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent_runtime import Agent, InvalidArgument, MeshClient, NotFound, TaskContext, Unauthenticated
from tests.gateway.rest_mesh import Mesh, running_gateway, running_mesh

TOKEN = "ingress-token"


def echo_agent() -> Agent:
    agent = Agent("ingress-e2e", version="1.0.0", max_concurrency=64, token=TOKEN)

    @agent.task("ingress.echo")
    async def echo(ctx: TaskContext, data: Any) -> Any:
        return data

    return agent


@pytest.fixture
async def mesh(gateway_binary: Path, tmp_path: Path) -> AsyncIterator[Mesh]:
    async with running_mesh(gateway_binary, tmp_path, echo_agent(), token=TOKEN, auth_tokens=[TOKEN]) as started:
        yield started


@pytest.fixture
async def ingress(gateway_binary: Path, tmp_path: Path, mesh: Mesh) -> AsyncIterator[str]:
    with running_gateway(
        gateway_binary, mesh.plane.address, tmp_path / "ingress.log", "--grpc-listen", "127.0.0.1:0"
    ) as gateway:
        yield gateway.grpc_address


async def test_concurrent_submits_each_get_their_own_task_error_and_result(ingress: str) -> None:
    async with MeshClient(ingress, token=TOKEN, connections=4) as client:
        inputs: list[Any] = [{"n": n} for n in range(60)]
        submits = [client.submit("ingress.echo", data) for data in inputs]
        submits.insert(30, client.submit("", {"n": "no capability"}))
        outcomes = await asyncio.gather(*submits, return_exceptions=True)

        refused = outcomes.pop(30)
        assert isinstance(refused, InvalidArgument), refused
        assert [v.field for v in refused.violations] == ["target.capability"]
        handles = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(handles) == len(inputs), [o for o in outcomes if isinstance(o, BaseException)]
        assert len({h.id for h in handles}) == len(inputs)
        results = await asyncio.gather(*(h.result(timeout=30) for h in handles))
        assert results == inputs  # each caller's task ran with its own input


async def test_idempotency_and_the_task_calls_behave_as_on_the_plane(ingress: str, mesh: Mesh) -> None:
    async with MeshClient(ingress, token=TOKEN) as through, MeshClient(mesh.plane.address, token=TOKEN) as direct:
        first, again = await asyncio.gather(
            through.submit("ingress.echo", "once", idempotency_key="ingress-once"),
            through.submit("ingress.echo", "once", idempotency_key="ingress-once"),
        )
        assert first.id == again.id
        assert sorted([first.deduplicated, again.deduplicated]) == [False, True]
        assert await first.result(timeout=30) == "once"

        events = [event.state.name async for event in through.watch(first.id)]
        assert events == [event.state.name async for event in direct.watch(first.id)]
        assert events[-1] == "SUCCEEDED"
        assert (await through.get(first.id)).attempts == (await direct.get(first.id)).attempts
        with pytest.raises(NotFound):
            await through.get("no-such-task")


async def test_calls_without_the_token_are_refused_by_the_plane(ingress: str) -> None:
    async with MeshClient(ingress, token=None) as client:
        with pytest.raises(Unauthenticated):
            await client.submit("ingress.echo", 1)
        with pytest.raises(Unauthenticated):
            await client.get("anything")


async def test_an_agent_connected_through_the_ingress_runs_tasks(ingress: str) -> None:
    agent = Agent("ingress-agent", version="1.0.0", token=TOKEN)

    @agent.task("ingress.upper")
    async def upper(ctx: TaskContext, data: str) -> str:
        return data.upper()

    serving = asyncio.ensure_future(agent.serve(ingress))
    try:
        await agent.wait_connected(timeout=15)
        async with MeshClient(ingress, token=TOKEN) as client:
            task = await client.submit("ingress.upper", "through the gateway")
            assert await task.result(timeout=30) == "THROUGH THE GATEWAY"
    finally:
        await agent.stop()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await serving
