"""The wall clock the plane stamps what it stores with."""

from __future__ import annotations

import time


def wall_clock() -> float:
    """Epoch seconds in whole microseconds, as both stores keep times: a time handed out in a write's answer,
    before it is stored, is the time later reads show (time.time()'s finer part rounded one way there and
    another way by each database path)."""
    return time.time_ns() // 1000 / 1_000_000
