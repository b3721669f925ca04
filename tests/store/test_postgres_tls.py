"""PostgreSQL over TLS: the URL's TLS options reach both of the plane's pools (SQLAlchemy's and the hot path's).

The server here turns plain TCP connections away, so a pool that ignored the option could not connect at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from controlplane.devtools.postgres import PostgresServer, find_pg_bin
from controlplane.store.database import Database
from meshplane.v1 import task_pb2
from tests.controlplane.helpers import submit
from tests.controlplane.test_lifecycle import wait_state
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane
from tests.support.toolchain import require_tool, toolchain_missing

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

SSL_IN_USE = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def tls_server() -> Iterator[PostgresServer]:
    if find_pg_bin() is None:
        toolchain_missing("PostgreSQL server binaries (initdb/postgres) not found: apt-get install postgresql")
    require_tool("openssl", "makes the test server's self-signed certificate")
    server = PostgresServer(tls_only=True).start()
    try:
        yield server
    finally:
        server.stop()


async def _assert_both_pools_use_tls(database: Database) -> None:
    try:
        async with database.transaction() as conn:
            assert (await conn.exec_driver_sql(SSL_IN_USE)).scalar() is True
        async with database.statements() as sql:
            assert (await sql.fetch(SSL_IN_USE, []))[0][0] is True
    finally:
        await database.dispose()


@pytest.mark.parametrize("option", ["ssl=require", "sslmode=require", "ssl=true"])
async def test_both_pools_connect_over_tls(tls_server: PostgresServer, option: str) -> None:
    database = Database(f"{tls_server.create_database()}?{option}")
    await _assert_both_pools_use_tls(database)


async def test_the_server_certificate_is_verified_against_a_given_ca(tls_server: PostgresServer) -> None:
    ca = tls_server.data_dir / "server.crt"  # self-signed: its own CA, unknown to the system's CAs
    database = Database(f"{tls_server.create_database()}?sslmode=verify-ca&sslrootcert={ca}")
    await _assert_both_pools_use_tls(database)


async def test_a_plain_connection_is_refused(tls_server: PostgresServer) -> None:
    database = Database(f"{tls_server.create_database()}?sslmode=disable")
    try:
        with pytest.raises(Exception, match="no encryption"):
            await database.ping()
    finally:
        await database.dispose()


async def test_a_plane_runs_tasks_on_a_tls_only_database(tls_server: PostgresServer, tmp_path: Path) -> None:
    url = f"{tls_server.create_database()}?ssl=require"
    async with (
        running_plane(tmp_path / "plane", database_url=url) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        agent = LinkAgent(plane.address)
        await agent.connect()
        agent.serve_echo()
        task = await submit(channel, data={"over": "tls"})
        done = await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)
        assert done.output.json.struct_value["over"] == "tls"
        await agent.close()
