"""Jittered exponential backoff for reconnects."""

from __future__ import annotations

import random


class Backoff:
    """Delays doubling from ``initial`` to ``maximum``, each randomised by ±``jitter`` (a fraction)."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0, *, jitter: float = 0.5) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._next = initial

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the following one (up to the maximum)."""
        base = self._next
        self._next = min(self.maximum, self._next * 2)
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)

    def reset(self) -> None:
        """Back to the initial delay (after a connection that worked)."""
        self._next = self.initial
