"""Payloads: bytes with a content type. JSON payloads are stored as UTF-8 JSON text."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"
# How deep JSON payloads may nest (objects and arrays within each other). Deeper ones are refused when they
# come in: protobuf's Value, the form clients read JSON in, stops decoding at about 50 levels.
MAX_JSON_DEPTH = 32


@dataclass(slots=True)
class Payload:
    """An opaque body and its MIME type."""

    data: bytes
    content_type: str = JSON_CONTENT_TYPE

    @property
    def is_json(self) -> bool:
        return self.content_type == JSON_CONTENT_TYPE or self.content_type.endswith("+json")

    @classmethod
    def from_json(cls, value: Any) -> Payload:
        return cls(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(), JSON_CONTENT_TYPE)

    def json_value(self) -> Any:
        """The decoded JSON value; raises ValueError when the payload is not valid JSON (NaN and Infinity,
        which Python's json module would take, included: JSON has no such numbers)."""
        return _STRICT_JSON.decode(self.data.decode())  # UnicodeDecodeError is a ValueError too

    def json_problem(self) -> str | None:
        """Why this JSON payload cannot be taken (not JSON, or nested too deep), or None when it can."""
        try:
            value = self.json_value()
        except _NotFinite as exc:
            return f"content type is application/json but the data holds {exc}, which JSON has no number for"
        except (ValueError, RecursionError):
            return "content type is application/json but the data is not valid JSON"
        if _nests_deeper_than(value, MAX_JSON_DEPTH, self.data):
            return f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
        return None

    def __len__(self) -> int:
        return len(self.data)


EMPTY_JSON = Payload(b"null", JSON_CONTENT_TYPE)


class _NotFinite(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotFinite(name)  # NaN, Infinity, -Infinity


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise _NotFinite(text)  # 1e999: too large for a double
    return number


_STRICT_JSON = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)  # built once: json.loads
# with hooks would build a decoder per call


def _nests_deeper_than(value: Any, limit: int, text: bytes) -> bool:
    """Whether objects and arrays in `value` (decoded from `text`) nest more than `limit` levels deep."""
    if text.count(b"[") + text.count(b"{") <= limit:
        return False  # too few brackets to nest that deep (the usual case, decided without a walk)
    level: list[tuple[Any, int]] = [(value, 1)]
    while level:
        item, depth = level.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        level.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
