"""A standalone nats-server for multi-replica tests (the real binary, on a random port)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from controlplane.bus.embedded import EmbeddedNats


@asynccontextmanager
async def nats_server(work_dir: Path) -> AsyncIterator[str]:
    server = EmbeddedNats(work_dir)
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()
