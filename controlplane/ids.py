"""Identifiers: 26-character, time-ordered (ULID-like), so ordering by id is ordering by creation (FIFO)."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32: characters sort in value order
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # every 10-bit value as two characters
_SHIFTS = range(120, -1, -10)


class _IdGenerator:
    """48 bits of milliseconds then 80 random bits; monotonic within a process even in the same millisecond."""

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
        return _encode(value)


def _encode(value: int) -> str:
    """128 bits as 26 characters (130 bits, two leading zeros), most significant first: sorts like the number."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


_generator = _IdGenerator()


def new_id() -> str:
    """A new 26-character, lexicographically time-ordered id."""
    return _generator.new()


def lowest_id_at(epoch_seconds: float) -> str:
    """The smallest id made at `epoch_seconds`: every id made before that time sorts below it."""
    return _encode(max(0, int(epoch_seconds * 1000)) << 80)
