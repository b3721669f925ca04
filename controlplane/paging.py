"""Opaque page tokens: where the previous page ended, bound to the filters it was made with."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from controlplane.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """A page of a listing and the token of the next one ("" after the last); `token_after` makes the token of
    the page that starts after a given item, so a page can be cut shorter (see `cut`)."""

    items: list[T]
    next_page_token: str
    token_after: Callable[[T], str]

    def cut(self, count: int) -> Page[T]:
        """The first `count` items (at least one); the next page starts after the last of them."""
        count = max(count, 1)
        if count >= len(self.items):
            return self
        return Page(self.items[:count], self.token_after(self.items[count - 1]), self.token_after)


def fitting(sizes: list[int], budget: int) -> int:
    """How many of the leading items fit in `budget` bytes together (at least one: an item is never split)."""
    total = 0
    for count, size in enumerate(sizes):
        total += size
        if total > budget:
            return max(count, 1)
    return len(sizes)


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument.of("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _fingerprint(filters: object) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode(after: str, filters: object) -> str:
    raw = json.dumps({"a": after, "f": _fingerprint(filters)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, filters: object) -> str | None:
    """The position after which the next page starts; None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after, fingerprint = str(data["a"]), str(data["f"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument.of("page_token", "malformed page token") from exc
    if fingerprint != _fingerprint(filters):
        raise InvalidArgument.of("page_token", "page token was made with other filters")
    if "\x00" in after:  # no id or name holds one (and PostgreSQL text cannot): a forged token
        raise InvalidArgument.of("page_token", "malformed page token")
    return after
