"""An in-process control plane on ephemeral ports, for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from controlplane.app import ControlPlane
from controlplane.settings import Settings

# Fast clocks so timeouts and leases can be tested in seconds, not minutes.
TEST_SETTINGS: dict[str, Any] = {
    "listen": "127.0.0.1:0",
    "heartbeat_interval": 0.2,
    "lease_timeout": 1.5,
    "sweep_interval": 0.05,
    "drain_timeout": 5,
    "default_initial_backoff": 0.05,
    "default_max_backoff": 0.2,
}


def plane_settings(data_dir: Path, **overrides: Any) -> Settings:
    values = {**TEST_SETTINGS, "data_dir": data_dir, **overrides}
    return Settings(**values)


@asynccontextmanager
async def running_plane(data_dir: Path, **overrides: Any) -> AsyncIterator[ControlPlane]:
    """A started ControlPlane (SQLite + embedded NATS unless URLs are given); stopped on exit."""
    plane = ControlPlane(plane_settings(data_dir, **overrides))
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()
