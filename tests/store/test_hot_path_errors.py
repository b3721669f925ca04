"""The hot path's bare asyncpg connections when the driver loses track of one: asyncpg's InternalClientError
(seen after the server ended a pooled connection's session) drops that connection, and the caller is told
UNAVAILABLE (retry), which the next transaction can do on a fresh connection.

The error cannot be made to happen on demand, so the test raises it where a statement would."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from controlplane.errors import Unavailable
from controlplane.store.database import Database
from tests.support.eventually import eventually
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


async def _backend_pid(database: Database) -> int:
    async with database.statements(single_statement=True) as sql:
        [[pid]] = await sql.fetch("SELECT pg_backend_pid()", [])
    return int(pid)


async def test_a_connection_the_driver_lost_track_of_is_dropped_and_the_caller_told_to_retry(
    postgres_server: PostgresServer,
) -> None:
    database = Database(postgres_server.create_database())
    try:
        pooled = await _backend_pid(database)
        with pytest.raises(Unavailable) as refused:
            async with database.statements() as sql:
                [[pid]] = await sql.fetch("SELECT pg_backend_pid()", [])
                assert pid == pooled
                raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")
        assert refused.value.message == (
            "the database connection broke (cannot switch to state 12; another operation (2) is in progress); retry"
        )

        assert await _backend_pid(database) != pooled  # the retry runs on a fresh connection

        async def gone() -> bool:
            async with database.statements(single_statement=True) as sql:
                rows = await sql.fetch("SELECT 1 FROM pg_stat_activity WHERE pid = $1", [pooled])
            return not rows

        await eventually(gone, message="the broken connection closed, not returned to the pool")
    finally:
        await database.dispose()


def test_asyncpg_pool_retries_are_logged_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """In a database outage asyncpg's pool logs each retry of its connection floor with a traceback; the plane
    keeps the line, with the error's first line, and drops the traceback."""
    assert Database  # imported: the module installs the filter, as in any plane
    caplog.set_level(logging.WARNING, logger="asyncpg.pool")
    try:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
    except ConnectionRefusedError:
        logging.getLogger("asyncpg.pool").warning(
            "Failed to restore the pool connection floor; retrying", exc_info=True
        )
    [record] = [r for r in caplog.records if r.name == "asyncpg.pool"]
    assert record.exc_info is None and not caplog.text.count("Traceback")
    assert record.getMessage() == (
        "Failed to restore the pool connection floor; retrying "
        "(ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5432))"
    )


async def test_the_urls_application_name_names_both_pools_connections(postgres_server: PostgresServer) -> None:
    """The URL's `application_name` is what the server shows for the plane's connections (pg_stat_activity, the
    server's logs), on the hot path's pool and SQLAlchemy's; without one, "meshplane"."""
    for url, expected in (
        (postgres_server.create_database() + "?application_name=plane-r1", "plane-r1"),
        (postgres_server.create_database(), "meshplane"),
    ):
        database = Database(url)
        try:
            async with database.statements(single_statement=True) as sql:
                [[hot]] = await sql.fetch("SELECT current_setting('application_name')", [])
            async with database.read() as conn:
                other = (await conn.exec_driver_sql("SELECT current_setting('application_name')")).scalar()
            assert (hot, other) == (expected, expected)
        finally:
            await database.dispose()
