"""Shared fixtures: stores on SQLite and PostgreSQL, a running control plane, gRPC stubs."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from controlplane.app import ControlPlane
from controlplane.store import migrate
from controlplane.store.database import Database
from controlplane.store.unit_of_work import Store
from tests.support.plane import running_plane
from tests.support.postgres import PostgresServer, throwaway_postgres
from tests.support.toolchain import require_tool


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with throwaway_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on SQLite and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A migrated store on each of the two databases (see `database_url`)."""
    database = Database(database_url, pool_size=5)
    await migrate.upgrade(database)
    try:
        yield Store(database)
    finally:
        await database.dispose()


@pytest.fixture
async def plane(tmp_path: Path, database_url: str) -> AsyncIterator[ControlPlane]:
    async with running_plane(tmp_path / "plane", database_url=database_url) as started:
        yield started


@pytest.fixture
async def sqlite_plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    async with running_plane(tmp_path / "plane") as started:
        yield started


@pytest.fixture
async def channel(plane: ControlPlane) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(plane.address) as opened:
        yield opened


@pytest.fixture(scope="session")
def gateway_binary() -> Path:
    """`make gateway-build`, once per session (skipped without Go; a failure under CI=true)."""
    require_tool("go", "the REST gateway is a Go module (install Go >= 1.26)")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        ["make", "--no-print-directory", "gateway-build"], cwd=root, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"make gateway-build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    binary = root / ".tools" / "bin" / "meshplane-gateway"
    assert binary.is_file()
    return binary
