"""What the plane would refuse of an agent is refused in the handler's own call: a publish raises at once, and an
output over max_payload_bytes fails the attempt at once (not retryable), instead of an `error` frame the handler
never sees or a stream the output breaks on every resend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import controlplane.app
from agent_runtime import (
    Agent,
    ChannelContext,
    InvalidArgument,
    MeshClient,
    ResourceExhausted,
    TaskContext,
    TaskFailed,
    TaskState,
    _limits,
)
from controlplane.app import ControlPlane
from controlplane.domain.payload import Payload
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)

LIMIT = 1024  # the plane's max_payload_bytes (its least)
# The plane's gRPC message limit is max(64 MiB, 4 x max_payload_bytes); lowered so that an output over it (which
# breaks the agent's stream when sent) stays small in a test.
GRPC_LIMIT = 64 * 1024


@pytest.fixture
async def plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ControlPlane]:
    """A plane taking payloads of at most LIMIT bytes (the `serve` and `client` fixtures use this one)."""
    monkeypatch.setattr(controlplane.app, "_MAX_MESSAGE", GRPC_LIMIT)
    async with running_plane(tmp_path / "plane", max_payload_bytes=LIMIT) as started:
        yield started


def text_of(size: int) -> str:
    """A JSON string value whose encoding is `size` bytes (its quotes included)."""
    return "x" * (size - 2)


# Headers by name (the handlers build them: the largest would not fit in a task input of LIMIT bytes).
HEADERS: dict[str, dict[str, str]] = {
    "none": {},
    "too_many": {f"k{n}": "v" for n in range(65)},
    "bad": {"": "empty key", "k" * 257: "long key", "long": "v" * 4097},
    # The most the plane takes, counted as it counts: code points, not bytes or UTF-16 units.
    "most": {**{f"k{n}": "v" for n in range(63)}, "😀" * 256: "😀" * 4096},
}


def refusal(error: Exception) -> dict[str, Any]:
    """What a handler saw of a refused publish (the SDK error's class and text)."""
    return {"error": type(error).__name__, "message": str(error)}


async def test_a_publish_to_a_channel_name_or_with_headers_the_plane_refuses_raises_at_once(
    serve: Any, client: MeshClient
) -> None:
    agent = Agent("bad-publisher")

    @agent.task("publish.to")
    async def publish_to(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
        try:
            await ctx.publish(data["channel"], {"n": 1}, headers=HEADERS[data.get("headers", "none")])
        except InvalidArgument as exc:
            return {**refusal(exc), "fields": [v.field for v in exc.violations]}
        return {"published": True}

    @agent.task("publish.sync")
    def publish_from_a_thread(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
        try:
            ctx.publish(data["channel"], {"n": 1})
        except InvalidArgument as exc:
            return refusal(exc)
        return {"published": True}

    async with serve(agent):
        for name in ["..bad", ".lead", "trail.", "a..b", "", "has space", "x" * 201, "ünï", "line\n"]:
            seen = await (await client.submit("publish.to", {"channel": name})).result(timeout=10)
            assert seen["error"] == "InvalidArgument" and seen["fields"] == ["channel"], (name, seen)
        assert "channel must be 1-200 characters of [A-Za-z0-9_.-]" in seen["message"]

        seen = await (await client.submit("publish.to", {"channel": "fine", "headers": "too_many"})).result(timeout=10)
        assert (seen["error"], seen["fields"]) == ("InvalidArgument", ["headers"])
        assert "at most 64 entries (got 65)" in seen["message"]
        seen = await (await client.submit("publish.to", {"channel": "fine", "headers": "bad"})).result(timeout=10)
        assert seen["fields"] == ["headers['']", f"headers[{'k' * 257!r}]", "headers['long']"], seen

        from_thread = await (await client.submit("publish.sync", {"channel": "a..b"})).result(timeout=10)
        assert from_thread["error"] == "InvalidArgument", from_thread


async def test_a_publish_over_max_payload_bytes_raises_at_once_and_one_at_the_limit_is_delivered(
    serve: Any, client: MeshClient
) -> None:
    agent = Agent("big-publisher")
    replies: asyncio.Queue[Any] = asyncio.Queue()

    @agent.task("publish.sized")
    async def publish_sized(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
        try:
            await ctx.publish("sized", text_of(data["bytes"]), headers=HEADERS[data.get("headers", "none")])
        except ResourceExhausted as exc:
            return refusal(exc)
        return {"published": True}

    @agent.on_channel("ask")
    async def reply_sized(ctx: ChannelContext, size: int) -> None:
        try:
            await ctx.publish("sized", text_of(size))
        except ResourceExhausted as exc:
            await replies.put(refusal(exc))

    async with serve(agent), client.subscribe("sized") as subscription:
        over = await (await client.submit("publish.sized", {"bytes": LIMIT + 1})).result(timeout=10)
        assert over == {
            "error": "ResourceExhausted",
            "message": f"payload is {LIMIT + 1} bytes; the limit is {LIMIT} bytes (max_payload_bytes)",
        }
        await client.publish("ask", LIMIT + 1)
        assert (await asyncio.wait_for(replies.get(), 10))["error"] == "ResourceExhausted"

        # What the plane takes, the SDK takes too: a payload of exactly the limit, the most headers it takes.
        exact = await (await client.submit("publish.sized", {"bytes": LIMIT, "headers": "most"})).result(timeout=10)
        assert exact == {"published": True}
        message = await asyncio.wait_for(anext(subscription), 10)
        assert message.data == text_of(LIMIT) and message.headers == HEADERS["most"]


async def test_an_output_over_max_payload_bytes_fails_the_attempt_at_once_without_retry(
    serve: Any, client: MeshClient
) -> None:
    agent = Agent("big-outputs")

    @agent.task("out.sized")
    async def sized(ctx: TaskContext, size: int) -> str:
        return text_of(size)

    @agent.task("out.sized_sync")
    def sized_sync(ctx: TaskContext, size: int) -> str:
        return text_of(size)

    async with serve(agent):
        session = agent.session_id
        assert await (await client.submit("out.sized", LIMIT)).result(timeout=10) == text_of(LIMIT)
        # Over max_payload_bytes, and over the plane's gRPC message limit: sent, it would break the stream.
        for capability, size in [
            ("out.sized", LIMIT + 1),
            ("out.sized", GRPC_LIMIT + 1),
            ("out.sized_sync", 2 * LIMIT),
        ]:
            task = await client.submit(capability, size, max_attempts=3)
            with pytest.raises(TaskFailed) as failed:
                await task.wait(timeout=10)
            info = failed.value.task
            assert (info.state, info.attempt) == (TaskState.FAILED, 1), info
            assert info.error is not None
            assert (info.error.code, info.error.retryable) == ("output_too_large", False)
            assert info.error.message == f"output is {size} bytes; the limit is {LIMIT} bytes (max_payload_bytes)"
        # None of it broke the stream: the agent is still on the session it started with.
        assert agent.session_id == session


@pytest.mark.parametrize(
    ("text", "too_deep"),
    [
        (b"[" * 32 + b"1" + b"]" * 32, False),
        (b"[" * 33 + b"1" + b"]" * 33, True),
        (b'{"a":' * 32 + b"1" + b"}" * 32, False),
        (b'{"a":' * 33 + b"1" + b"}" * 33, True),
        (b"[" * 100_000 + b"]" * 100_000, True),  # deeper than Python's own parser goes
        (b'["' + b"[{" * 40 + b'"]', False),  # brackets in a string do not nest
        (b'["\\"' + b"[" * 40 + b'"]', False),  # nor after an escaped quote
        (rb'["\\",' + b"[" * 40 + b"]" * 41, True),  # a string ending in an escaped backslash ends there
        (b"[" * 20 + b"]" * 20 + b"[" * 20 + b"]" * 20, False),  # many brackets, none deep
        (b"[" * 40 + b"not json", False),  # the plane says what is wrong with that
    ],
)
def test_json_nested_deeper_than_the_plane_takes_is_told_apart(text: bytes, too_deep: bool) -> None:
    problem = _limits.json_depth_problem(text)
    assert problem == ("JSON nested more than 32 levels deep" if too_deep else None)
    if too_deep and len(text) < 1000:  # (the plane calls the 100,000-deep one "not valid JSON": refused too)
        assert problem == Payload(text).json_problem()  # the plane's own words
