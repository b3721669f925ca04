"""Per-namespace key/value state with versions and TTL."""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.domain.payload import Payload


@dataclass(frozen=True, slots=True)
class StateEntry:
    namespace: str
    key: str
    value: Payload
    version: int
    create_time: float
    update_time: float
    expire_time: float | None = None
