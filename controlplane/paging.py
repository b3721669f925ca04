"""Opaque page tokens: where the previous page ended, bound to the filters it was made with."""

from __future__ import annotations

import base64
import hashlib
import json

from controlplane.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


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
    return after
