"""Payloads on the wire: JSON as UTF-8 bytes with ``application/json``; bytes as they are."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from google.protobuf import struct_pb2
from pydantic import BaseModel

from agent_runtime._errors import MeshplaneError
from meshplane.v1 import common_pb2

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

# JSON has no NaN or Infinity: refuse them rather than write text no JSON parser accepts.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class NotSerializable(MeshplaneError, TypeError):
    """A value that cannot travel as JSON (NaN or Infinity, a set, a lone surrogate, ...): a client's ``submit``,
    ``publish`` or ``put_state`` raises it before sending anything, and a handler returning one fails its attempt
    (non-retryable ``output_not_serializable``). Still a TypeError, as it always was."""


def to_jsonable(value: Any) -> Any:
    """Pydantic models and dataclasses become plain JSON data; everything else is left as it is."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def encode(value: Any, content_type: str | None = None) -> common_pb2.Payload:
    """A Python value as a Payload: bytes stay bytes, anything else is JSON."""
    if isinstance(value, bytes | bytearray | memoryview):
        return common_pb2.Payload(data=bytes(value), content_type=content_type or BINARY_CONTENT_TYPE)
    try:
        data = _dumps(to_jsonable(value)).encode()
    except (TypeError, ValueError) as exc:
        why = str(exc)
        if why.startswith("Out of range float values"):  # what json says of NaN and +-Infinity
            why = "NaN and Infinity are not JSON numbers"
        elif isinstance(exc, UnicodeEncodeError):
            why = f"it holds {exc.object[exc.start : exc.end]!r}, a lone surrogate that UTF-8 cannot carry"
        raise NotSerializable(f"cannot encode {type(value).__name__} as JSON: {why}") from exc
    return common_pb2.Payload(data=data, content_type=content_type or JSON_CONTENT_TYPE)


def is_json(content_type: str) -> bool:
    return not content_type or content_type == JSON_CONTENT_TYPE or content_type.endswith("+json")


def decode(payload: common_pb2.Payload) -> Any:
    """A Payload as Python: JSON (either form) decoded, other content types as bytes."""
    kind = payload.WhichOneof("kind")
    if kind == "data":
        if is_json(payload.content_type):
            return json.loads(payload.data) if payload.data else None
        return payload.data
    if kind == "json":
        return value_to_python(payload.json)
    return None


def raw_json(payload: common_pb2.Payload) -> bytes | None:
    """The payload's JSON text when it travels as bytes (validated straight from bytes, without a detour)."""
    if payload.WhichOneof("kind") == "data" and is_json(payload.content_type) and payload.data:
        return payload.data
    return None


def whole_number(number: float) -> int | float:
    """A JSON number that travelled as a double, as it was written: 3, not 3.0 (up to 2**53, where doubles stop
    holding every integer exactly)."""
    if math.isfinite(number) and number.is_integer() and abs(number) < 2**53:
        return int(number)
    return number


def value_to_python(value: struct_pb2.Value) -> Any:
    """A protobuf Value as plain Python; integral numbers come back as int, not 1.0."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return whole_number(value.number_value)
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: value_to_python(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [value_to_python(v) for v in value.list_value.values]
    return None


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {k: value_to_python(v) for k, v in struct.fields.items()}


def dict_to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(json.loads(_dumps(data)))
    return struct
