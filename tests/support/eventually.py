"""Poll a condition instead of sleeping: `await eventually(lambda: x == 3)`."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "",
) -> T:
    """Call `check` until it returns something truthy (returned) or `timeout` passes (AssertionError).

    An exception raised by `check` counts as "not yet"; the last one is chained to the failure.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    last_value: object = None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value  # type: ignore[return-value]
            last_value = value
        except AssertionError as exc:
            last_error = exc
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            what = message or getattr(check, "__name__", "condition")
            raise AssertionError(f"{what} not met within {timeout}s (last value: {last_value!r})") from last_error
        await asyncio.sleep(interval)
