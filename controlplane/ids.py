"""Identifiers: time-ordered ULIDs, so ordering by id is ordering by creation (FIFO)."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32


class _UlidGenerator:
    """Monotonic within a process: ids made in the same millisecond still sort in creation order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def new(self) -> str:
        with self._lock:
            now_ms = time.time_ns() // 1_000_000
            if now_ms <= self._last_ms:
                now_ms = self._last_ms
                self._last_random += 1
            else:
                self._last_ms = now_ms
                self._last_random = int.from_bytes(os.urandom(10), "big") >> 1  # room to increment
            value = (now_ms << 80) | (self._last_random & ((1 << 80) - 1))
        chars = []
        for _ in range(26):
            chars.append(_ALPHABET[value & 31])
            value >>= 5
        return "".join(reversed(chars))


_generator = _UlidGenerator()


def new_id() -> str:
    """A new 26-character, lexicographically time-ordered id."""
    return _generator.new()
