"""The demo agent ``meshplane up --demo`` starts in-process, built with the Python SDK."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

from agent_runtime import Agent, TaskContext, TaskError, __version__

DEMO_CAPABILITIES = ("demo.echo", "demo.sleep", "demo.flaky")
DEFAULT_FLAKY_FAILURES = 2


class SleepInput(BaseModel):
    """Input of demo.sleep."""

    seconds: float = Field(1.0, ge=0, le=3600, description="how long to sleep")


class FlakyInput(BaseModel):
    """Input of demo.flaky."""

    failures: int = Field(
        DEFAULT_FLAKY_FAILURES, ge=0, le=100, description="how many attempts fail before one succeeds"
    )


class FlakyError(TaskError):
    """demo.flaky failing on purpose (retryable)."""


def demo_agent(*, max_concurrency: int = 64) -> Agent:
    agent = Agent(
        "demo",
        version=__version__,
        max_concurrency=max_concurrency,
        description="Demo capabilities started by `meshplane up --demo`",
        labels={"demo": "true"},
    )

    @agent.task("demo.echo")
    async def echo(ctx: TaskContext, data: Any) -> Any:
        """Returns its input."""
        return data

    @agent.task("demo.sleep")
    async def sleep(ctx: TaskContext, data: SleepInput) -> dict[str, float]:
        """Sleeps `seconds`, reporting progress as it goes."""
        steps = max(1, min(100, round(data.seconds * 4)))
        for step in range(1, steps + 1):
            await asyncio.sleep(data.seconds / steps)
            slept = data.seconds * step / steps
            await ctx.progress(step / steps, f"slept {slept:.1f}s of {data.seconds:g}s")
        return {"slept": data.seconds}

    @agent.task("demo.flaky")
    async def flaky(ctx: TaskContext, data: FlakyInput | None) -> dict[str, int]:
        """Fails with a retryable error on its first attempts (2 by default), then succeeds."""
        failures = data.failures if data is not None else DEFAULT_FLAKY_FAILURES
        if ctx.max_attempts:
            failures = min(failures, ctx.max_attempts - 1)  # always succeed on the last attempt
        if ctx.attempt <= failures:
            raise FlakyError(f"attempt {ctx.attempt} fails on purpose ({failures} of them do)")
        return {"attempt": ctx.attempt}

    return agent
