"""Field rules shared by the API and the agent link. Each check appends violations; callers raise once."""

from __future__ import annotations

import re

from controlplane.errors import FieldViolation, InvalidArgument

# Whole values only: each is used with `fullmatch` (a `$` would also let a trailing newline through).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
CAPABILITY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
CHANNEL_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")  # dot-separated segments (NATS subject tokens)
MAX_CHANNEL_LENGTH = 200
STATE_KEY_RE = re.compile(r"[A-Za-z0-9._:-]{1,256}")

MAX_MAP_ENTRIES = 64
MAX_LABEL_LENGTH = 256
MAX_METADATA_VALUE = 4096


class Violations:
    """Collects field violations; `raise_if_any()` turns them into one InvalidArgument."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.items: list[FieldViolation] = []

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(f"{self.prefix}{field_path}", description))

    def nested(self, prefix: str) -> Violations:
        child = Violations(f"{self.prefix}{prefix}")
        child.items = self.items
        return child

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)

    def name(self, field_path: str, value: str, *, required: bool = True, what: str = "name") -> None:
        if not value:
            if required:
                self.add(field_path, f"{what} is required")
            return
        if not NAME_RE.fullmatch(value):
            self.add(field_path, f"{what} must be 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit")

    def capability(self, field_path: str, value: str) -> None:
        if not value:
            self.add(field_path, "capability is required")
        elif not CAPABILITY_RE.fullmatch(value):
            self.add(
                field_path, "capability must be 1-200 characters of [A-Za-z0-9._-], starting with a letter or digit"
            )

    def channel(self, field_path: str, value: str) -> None:
        if not value:
            self.add(field_path, "channel is required")
        elif len(value) > MAX_CHANNEL_LENGTH or not CHANNEL_RE.fullmatch(value):
            self.add(
                field_path,
                "channel must be 1-200 characters of [A-Za-z0-9_.-], without leading/trailing or double dots",
            )

    def state_key(self, field_path: str, value: str) -> None:
        if not value:
            self.add(field_path, "key is required")
        elif not STATE_KEY_RE.fullmatch(value):
            self.add(field_path, "key must be 1-256 characters of [A-Za-z0-9._:-]")

    def text(self, field_path: str, value: str, *, max_length: int) -> None:
        if len(value) > max_length:
            self.add(field_path, f"must be at most {max_length} characters (got {len(value)})")

    def string_map(self, field_path: str, values: dict[str, str], *, max_value: int = MAX_LABEL_LENGTH) -> None:
        if len(values) > MAX_MAP_ENTRIES:
            self.add(field_path, f"at most {MAX_MAP_ENTRIES} entries (got {len(values)})")
        for key, value in values.items():
            if not key or len(key) > MAX_LABEL_LENGTH:
                self.add(f"{field_path}[{key!r}]", f"keys must be 1-{MAX_LABEL_LENGTH} characters")
            if len(value) > max_value:
                self.add(f"{field_path}[{key!r}]", f"values must be at most {max_value} characters")

    def range(self, field_path: str, value: float, *, low: float, high: float) -> None:
        if not low <= value <= high:
            self.add(field_path, f"must be between {_number(low)} and {_number(high)} (got {_number(value)})")

    def non_negative(self, field_path: str, value: float) -> None:
        if value < 0:
            self.add(field_path, f"must not be negative (got {_number(value)})")


def _number(value: float) -> str:
    """A number as a person writes it: 2147483647, not 2.14748e+09; 0.5 stays 0.5."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:g}"
