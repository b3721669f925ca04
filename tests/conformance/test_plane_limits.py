"""What the plane refuses of an agent, refused by each SDK in the handler's own call (CONTRACT.md, "Limits").

The plane takes payloads of at most LIMIT bytes here, and its gRPC message limit is lowered to 4 x LIMIT, so that an
output over it (sent, it breaks the agent's stream) stays small in a test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import controlplane.app
from controlplane.app import ControlPlane
from meshplane.v1 import task_pb2
from tests.conformance.driver import Agents, Mesh, describe, output
from tests.support.eventually import eventually
from tests.support.plane import running_plane

LIMIT = 64 * 1024  # the plane's max_payload_bytes
OVER_GRPC_LIMIT = 4 * LIMIT + 1024  # more than the plane's gRPC message limit (4 x LIMIT here)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def plane(agents: Agents, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ControlPlane]:
    """As conftest's, with max_payload_bytes LIMIT and a gRPC message limit of 4 x LIMIT (the plane's is at least
    64 MiB otherwise)."""
    monkeypatch.setattr(controlplane.app, "_MAX_MESSAGE", 0)
    async with running_plane(tmp_path / "plane", max_payload_bytes=LIMIT) as started:
        try:
            yield started
        finally:
            await agents.close()
            async with Mesh(started.address) as mesh:
                await mesh.wait_all_disconnected()


async def failed_at_once(mesh: Mesh, capability: str, data: Any) -> task_pb2.TaskError:
    """Run a task that may be retried, and return its error: it must fail on its first attempt, not retryable."""
    task = await mesh.run(capability, data, max_attempts=3, timeout=20)
    assert task.state == task_pb2.TASK_STATE_FAILED, describe(task)
    assert task.attempt == 1 and not task.error.retryable, describe(task)
    return task.error


async def test_a_publish_the_plane_would_refuse_fails_in_the_handlers_call(
    plane: ControlPlane, mesh: Mesh, agents: Agents
) -> None:
    await agents.start(plane.address)

    for channel in ["..bad", ".lead", "trail.", "has space", "x" * 201, "line\n"]:
        error = await failed_at_once(mesh, "conf.publish", {"channel": channel, "data": 1})
        assert error.code == "invalid_argument", (channel, error)
    for headers in [
        {f"k{n}": "v" for n in range(65)},
        {"": "an empty key"},
        {"k" * 257: "a long key"},
        {"k": "v" * 4097},
    ]:
        error = await failed_at_once(mesh, "conf.publish", {"channel": "fine", "data": 1, "headers": headers})
        assert error.code == "invalid_argument", (list(headers)[:2], error)

    error = await failed_at_once(mesh, "conf.publish_nested", {"channel": "fine", "depth": 33})
    assert (error.code, error.message.endswith("JSON nested more than 32 levels deep")) == ("invalid_argument", True)

    error = await failed_at_once(mesh, "conf.publish_large", {"channel": "fine", "bytes": LIMIT + 1})
    assert error.code == "resource_exhausted", error
    assert f"payload is {LIMIT + 1} bytes; the limit is {LIMIT} bytes (max_payload_bytes)" in error.message, error


async def test_a_publish_the_plane_takes_is_delivered(plane: ControlPlane, mesh: Mesh, agents: Agents) -> None:
    """The SDKs are not stricter than the plane: a payload of exactly the limit, the most headers of the most
    characters (which the plane counts as code points: "😀" is one, not 4 bytes or 2 UTF-16 units), and JSON
    nested as deep as it takes (with brackets in strings, which do not nest)."""
    await agents.start(plane.address)
    channel = f"conf.limits.{uuid.uuid4().hex[:12]}"
    most = {**{f"k{n}": "v" for n in range(63)}, "😀" * 256: "😀" * 4096}
    async with mesh.subscription(channel) as out:
        exact = await mesh.run("conf.publish_large", {"channel": channel, "bytes": LIMIT})
        headed = await mesh.run("conf.publish", {"channel": channel, "data": 1, "headers": most})
        deepest = await mesh.run("conf.publish_nested", {"channel": channel, "depth": 32})
        brackets = await mesh.run("conf.publish", {"channel": channel, "data": {"s": '[{"\\' * 40}})
        for task in (exact, headed, deepest, brackets):
            assert task.state == task_pb2.TASK_STATE_SUCCEEDED, describe(task)
        await eventually(lambda: len(out.messages) == 4, timeout=10, message=f"all four messages on {channel}")
    nested: Any = 1
    for _ in range(32):
        nested = [nested]
    assert out.values() == ["x" * (LIMIT - 2), 1, nested, {"s": '[{"\\' * 40}]
    assert dict(out.messages[1].headers) == most


async def test_an_output_over_max_payload_bytes_fails_the_attempt_at_once(
    plane: ControlPlane, mesh: Mesh, agents: Agents
) -> None:
    agent = await agents.start(plane.address)
    session = (await mesh.instance(agent.name, agent.instance_id)).session_id  # type: ignore[union-attr]

    fits = await mesh.run("conf.output_large", {"bytes": LIMIT})
    assert fits.state == task_pb2.TASK_STATE_SUCCEEDED and output(fits) == "x" * (LIMIT - 2), describe(fits)
    for size in [LIMIT + 1, OVER_GRPC_LIMIT]:
        error = await failed_at_once(mesh, "conf.output_large", {"bytes": size})
        assert (error.code, error.message) == (
            "output_too_large",
            f"output is {size} bytes; the limit is {LIMIT} bytes (max_payload_bytes)",
        ), error

    # Nothing broke the agent's stream: it is still on the session it started with.
    instance = await mesh.instance(agent.name, agent.instance_id)
    assert instance is not None and instance.session_id == session
