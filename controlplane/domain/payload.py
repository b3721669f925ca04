"""Payloads: bytes with a content type. JSON payloads are stored as UTF-8 JSON text."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"


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
        """The decoded JSON value; raises ValueError when the payload is not valid JSON."""
        return json.loads(self.data)

    def __len__(self) -> int:
        return len(self.data)


EMPTY_JSON = Payload(b"null", JSON_CONTENT_TYPE)
