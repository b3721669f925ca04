"""PostgreSQL reached through PgBouncer (pool_mode=session): the plane starts, runs tasks, and keeps the hot
path's plan settings, which it sets after connecting (PgBouncer refuses startup parameters it does not know)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy.engine import make_url

from controlplane.devtools.postgres import PostgresServer
from controlplane.store.database import HOT_SESSION_SETTINGS, Database
from meshplane.v1 import task_pb2
from tests.controlplane.helpers import get_task, output_of, submit
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.pgbouncer import PgBouncer, find_pgbouncer
from tests.support.plane import running_plane
from tests.support.toolchain import toolchain_missing

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]


@pytest.fixture
def pgbouncer(postgres_server: PostgresServer) -> Iterator[PgBouncer]:
    binary = find_pgbouncer()
    if binary is None:
        toolchain_missing("pgbouncer not found: apt-get install pgbouncer")
    bouncer = PgBouncer(binary, postgres_server).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


def database_through(bouncer: PgBouncer) -> str:
    return bouncer.url(make_url(bouncer.server.create_database()).database or "")


async def hot_session_settings(database: Database) -> dict[str, str]:
    names = list(HOT_SESSION_SETTINGS)
    async with database.statements() as sql:
        [row] = await sql.fetch("SELECT " + ", ".join(f"current_setting('{name}')" for name in names), [])
    return dict(zip(names, row, strict=True))


async def test_hot_path_settings_hold_on_a_direct_connection(postgres_server: PostgresServer) -> None:
    database = Database(postgres_server.create_database(), pool_size=2)
    try:
        assert await hot_session_settings(database) == HOT_SESSION_SETTINGS
    finally:
        await database.dispose()


async def test_the_plane_runs_tasks_through_pgbouncer(pgbouncer: PgBouncer, tmp_path: Path) -> None:
    async with running_plane(tmp_path, database_url=database_through(pgbouncer)) as plane:
        assert plane.database is not None
        assert await hot_session_settings(plane.database) == HOT_SESSION_SETTINGS
        agent = LinkAgent(plane.address, capabilities=["demo.echo"])
        await agent.connect()
        agent.serve_echo()
        async with grpc.aio.insecure_channel(plane.address) as channel:
            # Concurrent submits: several pooled connections, each through the bouncer.
            tasks = await asyncio.gather(*(submit(channel, data={"n": n}) for n in range(30)))

            async def all_succeeded() -> bool:
                states = [(await get_task(channel, task.id)).state for task in tasks]
                return all(state == task_pb2.TASK_STATE_SUCCEEDED for state in states)

            await eventually(all_succeeded, message="every task succeeded")
            outputs = [output_of(await get_task(channel, task.id)) for task in tasks]
        assert outputs == [{"n": n} for n in range(30)]
        await agent.close()
