"""What the control plane refuses of an agent, checked before anything is sent (docs/agent-link.md §3, §7).

A publish goes out on the agent's stream, where the plane can only answer a refusal with an ``error`` frame, long
after the handler's ``publish`` call returned; and an output larger than the plane's gRPC message limit breaks the
stream instead of failing the task. So the SDK applies the plane's own rules first (controlplane/validation.py, the
channel service, the agent link servicer) and the handler learns at once. Keep these in step with the plane's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from agent_runtime._errors import FieldViolation, InvalidArgument, ResourceExhausted

MAX_CHANNEL_LENGTH = 200
# Dot-separated segments of [A-Za-z0-9_-]: no leading, trailing or double dot.
_CHANNEL_SEGMENTS = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
MAX_HEADERS = 64
MAX_HEADER_KEY_LENGTH = 256
MAX_HEADER_VALUE_LENGTH = 4096
OUTPUT_TOO_LARGE = "output_too_large"  # the task error code of an output over max_payload_bytes
MAX_JSON_DEPTH = 32  # objects and arrays within each other, in a JSON payload


def channel_problem(name: str) -> str | None:
    """Why the plane would refuse ``name`` as a channel name, or None when it takes it."""
    if len(name) <= MAX_CHANNEL_LENGTH and _CHANNEL_SEGMENTS.fullmatch(name):
        return None
    return (
        f"channel must be 1-{MAX_CHANNEL_LENGTH} characters of [A-Za-z0-9_.-], "
        f"without leading/trailing or double dots (got {name!r})"
    )


def _header_violations(headers: Mapping[str, str]) -> list[FieldViolation]:
    violations = []
    if len(headers) > MAX_HEADERS:
        violations.append(FieldViolation("headers", f"at most {MAX_HEADERS} entries (got {len(headers)})"))
    for key, value in headers.items():
        if not key or len(key) > MAX_HEADER_KEY_LENGTH:
            violations.append(FieldViolation(f"headers[{key!r}]", f"keys must be 1-{MAX_HEADER_KEY_LENGTH} characters"))
        if len(value) > MAX_HEADER_VALUE_LENGTH:
            violations.append(
                FieldViolation(f"headers[{key!r}]", f"values must be at most {MAX_HEADER_VALUE_LENGTH} characters")
            )
    return violations


def check_publish(channel: str, headers: Mapping[str, str]) -> None:
    """Raise InvalidArgument (naming every offending field) for a channel name or headers the plane refuses."""
    violations = _header_violations(headers)
    problem = channel_problem(channel)
    if problem is not None:
        violations.insert(0, FieldViolation("channel", problem))
    if violations:
        raise InvalidArgument("", violations=tuple(violations))


def json_depth_problem(data: bytes) -> str | None:
    """The plane's words for JSON text nesting objects and arrays more than MAX_JSON_DEPTH levels deep, or None."""
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return None  # too few brackets to nest that deep (the usual case, decided without a parse)
    too_deep = f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        value = json.loads(data)
    except RecursionError:
        return too_deep  # nested deeper than Python's own parser goes
    except ValueError:
        return None  # bytes given as JSON that are not: the plane says so itself
    level: list[tuple[Any, int]] = [(value, 1)]
    while level:
        item, depth = level.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > MAX_JSON_DEPTH:
            return too_deep
        level.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return None


def check_json_depth(data: bytes) -> None:
    """Raise InvalidArgument for a published JSON payload nesting deeper than the plane takes."""
    problem = json_depth_problem(data)
    if problem is not None:
        raise InvalidArgument("", violations=(FieldViolation("payload", problem),))


def too_large(what: str, size: int, limit: int) -> str | None:
    """The plane's words for a ``what`` of ``size`` bytes over ``limit`` (its max_payload_bytes), or None when it
    fits. A limit of 0 is one the plane did not announce (an older plane): nothing is checked then."""
    if limit <= 0 or size <= limit:
        return None
    return f"{what} is {size} bytes; the limit is {limit} bytes (max_payload_bytes)"


def check_payload_size(size: int, limit: int) -> None:
    """Raise ResourceExhausted for a published payload of ``size`` bytes over ``limit``, as the plane would."""
    problem = too_large("payload", size, limit)
    if problem is not None:
        raise ResourceExhausted(problem, code="RESOURCE_EXHAUSTED")
