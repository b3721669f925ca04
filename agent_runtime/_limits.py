"""What the control plane refuses of an agent, checked before anything is sent (docs/agent-link.md §3, §7).

A publish goes out on the agent's stream, where the plane can only answer a refusal with an ``error`` frame, long
after the handler's ``publish`` call returned; and an output larger than the plane's gRPC message limit breaks the
stream instead of failing the task. So the SDK applies the plane's own rules first (controlplane/validation.py, the
channel service, the agent link servicer) and the handler learns at once. Keep these in step with the plane's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from agent_runtime._errors import FieldViolation, InvalidArgument, ResourceExhausted

MAX_CHANNEL_LENGTH = 200
# Dot-separated segments of [A-Za-z0-9_-]: no leading, trailing or double dot.
_CHANNEL_SEGMENTS = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
MAX_HEADERS = 64
MAX_HEADER_KEY_LENGTH = 256
MAX_HEADER_VALUE_LENGTH = 4096
OUTPUT_TOO_LARGE = "output_too_large"  # the task error code of an output over max_payload_bytes


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
