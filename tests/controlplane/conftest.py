"""Fixtures shared by the control plane's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from controlplane.app import ControlPlane
from tests.support.plane import running_plane


@pytest.fixture
async def quiet_plane(tmp_path: Path, database_url: str) -> AsyncIterator[ControlPlane]:
    """A plane whose dispatcher polls only every 30 s: work placed within a test's seconds was placed by
    its submit or by a round something woke, not by the fallback poll."""
    async with running_plane(tmp_path / "plane", database_url=database_url, sweep_interval=30) as started:
        yield started


@pytest.fixture
async def quiet_channel(quiet_plane: ControlPlane) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(quiet_plane.address) as opened:
        yield opened
