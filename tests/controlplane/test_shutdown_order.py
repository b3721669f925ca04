"""Work started with run_to_completion outlives a cancelled caller, and shutdown waits for it."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.lifecycle import run_to_completion, settle

pytestmark = pytest.mark.timeout(30)


async def _unit(started: asyncio.Event, finish: asyncio.Event, done: list[str]) -> None:
    started.set()
    await finish.wait()
    done.append("committed")


async def test_a_cancelled_caller_does_not_interrupt_the_unit_and_settle_waits_for_it() -> None:
    started, finish, done = asyncio.Event(), asyncio.Event(), []
    caller = asyncio.create_task(run_to_completion(_unit(started, finish, done)))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    settling = asyncio.create_task(settle(grace=60))
    finished, _ = await asyncio.wait({settling}, timeout=0.3)
    assert not finished, "settle returned while a unit of work was still running"
    finish.set()
    assert await settling == 0
    assert done == ["committed"]


async def test_settle_gives_up_after_its_grace(caplog: pytest.LogCaptureFixture) -> None:
    started, finish, done = asyncio.Event(), asyncio.Event(), []
    caller = asyncio.create_task(run_to_completion(_unit(started, finish, done)))
    await started.wait()
    assert await settle(grace=0.05) == 1
    assert "1 unit(s) of work still running" in caplog.text
    finish.set()
    await caller
    assert done == ["committed"]
    assert await settle(grace=0.05) == 0
