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
