"""Shared fixtures: stores on SQLite and PostgreSQL, a running control plane, gRPC stubs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from controlplane.app import ControlPlane
from tests.support.plane import running_plane
from tests.support.postgres import PostgresServer, find_pg_bin
from tests.support.toolchain import toolchain_missing


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if find_pg_bin() is None:
        toolchain_missing("PostgreSQL server binaries (initdb/postgres) not found: apt-get install postgresql")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on SQLite and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


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
