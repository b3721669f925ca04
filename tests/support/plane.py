"""An in-process control plane on ephemeral ports, for tests."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

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
    before = asyncio.all_tasks()
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()
        _assert_write_lock_free(plane, before)


def _assert_write_lock_free(plane: ControlPlane, before: set[asyncio.Task[Any]]) -> None:
    """A stopped plane holds no SQLite write transaction (a plane restarted on the same file would wait for it);
    if one does, the failure names the tasks the plane left running, one of which holds it."""
    url = sa.make_url(plane.settings.effective_database_url)
    if url.get_backend_name() != "sqlite" or not url.database or not Path(url.database).exists():
        return
    probe = sqlite3.connect(url.database, timeout=1.0)  # the flaw held it for 10 s and more; a blip passes
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        left = [t for t in asyncio.all_tasks() if t not in before and t is not asyncio.current_task()]
        stacks = "\n".join(f"{t.get_name()}: {t.get_coro()!r} at {t.get_stack(limit=8)!r}" for t in left)
        raise AssertionError(
            f"the stopped plane still holds the SQLite write lock ({exc}); tasks left:\n{stacks}"
        ) from exc
    finally:
        probe.close()
