"""Audit entries: who changed what, when, under which correlation id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    action: str  # e.g. "state.put", "channel.publish"
    resource: str  # e.g. "namespaces/n/states/k", "channels/orders"
    time: float
    correlation_id: str = ""
    details: dict[str, Any] | None = None
    id: int = 0  # its position in the trail, once recorded


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries to list: every field set must match; times are epoch seconds (end exclusive)."""

    resource: str = ""
    actor: str = ""
    action: str = ""
    correlation_id: str = ""
    start_time: float | None = None
    end_time: float | None = None
