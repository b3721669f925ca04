"""The Python SDK's conformance agent (tests/conformance/CONTRACT.md), built with the public API only.

python tests/conformance/agents/python/agent.py --target HOST:PORT --name NAME --instance-id ID --max-concurrency N
    [--token TOKEN] [--drain-timeout SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import Any

from agent_runtime import (
    Agent,
    ChannelContext,
    InvalidArgument,
    NonRetryableError,
    ResourceExhausted,
    TaskContext,
    TaskError,
    VersionConflict,
)

LANGUAGE = "python"


class Flaky(TaskError):
    """conf.flaky failing on purpose (retryable)."""


class Fatal(NonRetryableError):
    """conf.fatal failing on purpose (not retryable)."""


def json_text_of(size: int) -> str:
    """A string whose JSON encoding is `size` bytes (its quotes included)."""
    return "x" * (size - 2)


async def publish_or_fail(ctx: TaskContext, channel: str, data: Any, headers: dict[str, str] | None = None) -> None:
    """Publish; a publish the SDK refuses at once fails the attempt with the contract's code for its kind."""
    try:
        await ctx.publish(channel, data, headers=headers)
    except InvalidArgument as exc:
        raise NonRetryableError(str(exc), code="invalid_argument") from exc
    except ResourceExhausted as exc:
        raise NonRetryableError(str(exc), code="resource_exhausted") from exc


def build_agent(name: str, instance_id: str, max_concurrency: int, drain_timeout: float = 30.0) -> Agent:
    agent = Agent(
        name,
        version="conformance",
        instance_id=instance_id,
        max_concurrency=max_concurrency,
        labels={"lang": LANGUAGE},
        drain_timeout=drain_timeout,
    )
    running = 0
    peak = 0

    @agent.task("conf.echo")
    async def echo(ctx: TaskContext, data: Any) -> Any:
        return data

    @agent.task("conf.progress")
    async def progress(ctx: TaskContext, data: dict[str, int]) -> dict[str, int]:
        steps = data["steps"]
        for step in range(1, steps + 1):
            await ctx.progress(step / steps, f"step {step}")
        return {"steps": steps}

    @agent.task("conf.flaky")
    async def flaky(ctx: TaskContext, data: dict[str, int]) -> dict[str, int]:
        if ctx.attempt <= data.get("fail_times", 0):
            raise Flaky(f"attempt {ctx.attempt} fails on purpose")
        return {"attempt": ctx.attempt}

    @agent.task("conf.fatal")
    async def fatal(ctx: TaskContext, data: Any) -> None:
        raise Fatal("fatal")

    @agent.task("conf.sleep")
    async def sleep(ctx: TaskContext, data: dict[str, float]) -> dict[str, float]:
        seconds = data["seconds"]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.cancelled.wait(), seconds)  # returns early when cancelled
        return {"slept": seconds}  # after a cancellation the SDK reports "cancelled" whatever this says

    @agent.task("conf.sleep_first")
    async def sleep_first(ctx: TaskContext, data: dict[str, float]) -> dict[str, int]:
        if ctx.attempt == 1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.cancelled.wait(), data["seconds"])
        return {"attempt": ctx.attempt}

    @agent.task("conf.await_cancel")
    async def await_cancel(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
        try:
            await asyncio.sleep(data["seconds"])
        except asyncio.CancelledError:
            # Cancelled: say what the handler was told, then let the SDK report the cancellation.
            seen = {
                "task_id": ctx.task_id,
                "attempt": ctx.attempt,
                "reason": ctx.cancel_reason,
                "message": ctx.cancel_message,
            }
            await ctx.publish(data["channel"], seen)
            raise
        return {"cancelled": False}

    @agent.task("conf.concurrency")
    async def concurrency(ctx: TaskContext, data: dict[str, float]) -> dict[str, int]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(data["hold"])
        finally:
            running -= 1
        return {"peak": peak}

    @agent.task("conf.publish")
    async def publish(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
        await publish_or_fail(ctx, data["channel"], data["data"], data.get("headers"))
        return {}

    @agent.task("conf.publish_large")
    async def publish_large(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
        await publish_or_fail(ctx, data["channel"], json_text_of(data["bytes"]))
        return {}

    @agent.task("conf.publish_nested")
    async def publish_nested(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
        value: Any = 1
        for _ in range(data["depth"]):
            value = [value]
        await publish_or_fail(ctx, data["channel"], value)
        return {}

    @agent.task("conf.output_large")
    async def output_large(ctx: TaskContext, data: dict[str, int]) -> str:
        return json_text_of(data["bytes"])

    @agent.task("conf.state_cas")
    async def state_cas(ctx: TaskContext, data: dict[str, str]) -> dict[str, Any]:
        key = data["key"]
        first = await ctx.state.put(key, {"n": 1}, expected_version=0)
        try:
            await ctx.state.put(key, {"n": 1}, expected_version=0)
            conflict = False
        except VersionConflict:
            conflict = True
        read = await ctx.state.get(key)
        return {"first_version": first.version, "conflict": conflict, "read_version": read.version if read else 0}

    @agent.task("conf.whoami")
    async def whoami(ctx: TaskContext, data: Any) -> dict[str, Any]:
        return {"language": LANGUAGE, "instance_id": ctx.instance_id, "attempt": ctx.attempt, "task_id": ctx.task_id}

    @agent.on_channel("conf.broadcast")
    async def on_broadcast(ctx: ChannelContext, message: Any) -> None:
        await ctx.publish("conf.received", {"instance_id": instance_id, "language": LANGUAGE, "message": message})

    return agent


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--max-concurrency", type=int, required=True)
    parser.add_argument("--token", default=None)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    agent = build_agent(args.name, args.instance_id, args.max_concurrency, args.drain_timeout)
    serving = asyncio.ensure_future(agent.run_async(args.target, token=args.token))  # SIGTERM: drain, then return
    connected = asyncio.ensure_future(agent.wait_connected(timeout=None))
    await asyncio.wait({serving, connected}, return_when=asyncio.FIRST_COMPLETED)
    if connected.done() and not connected.cancelled() and connected.exception() is None:
        print(f"READY {args.instance_id}", flush=True)
    else:
        connected.cancel()
    await serving
    print("STOPPED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
