"""SQLite: a transaction interrupted mid-statement must not keep the database's one write lock."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from controlplane.store.database import Database

pytestmark = pytest.mark.timeout(60)

# A statement whose first row takes a while (it counts three million generated rows), so a cancellation lands
# while SQLite is still stepping it: the statement is left unfinished on the connection.
SLOW_COUNT = sa.text(
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) SELECT count(*) FROM n"
)


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """What the flaw needs: the interrupted statement's cursor outlives the connection's close (it is kept by
    the cancellation's traceback, a reference cycle) until the cyclic garbage collector happens to run."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def write_lock_free(path: Path) -> bool:
    probe = sqlite3.connect(path, timeout=0.5)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


async def cancel_mid_statement(database: Database) -> None:
    """A write transaction (one row into `marks`) cancelled while its next statement runs."""
    async with database.transaction() as conn:
        await conn.execute(sa.text("CREATE TABLE IF NOT EXISTS marks (n INTEGER)"))
    started = asyncio.Event()

    async def interrupted() -> None:
        async with database.transaction() as conn:
            await conn.execute(sa.text("INSERT INTO marks VALUES (0)"))
            started.set()
            await conn.execute(SLOW_COUNT)

    task = asyncio.create_task(interrupted())
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_closed_database_leaves_no_write_lock_behind(tmp_path: Path, no_cyclic_gc: None) -> None:
    path = tmp_path / "plane.db"
    database = Database(f"sqlite+aiosqlite:///{path}")
    await cancel_mid_statement(database)
    await database.dispose()
    assert write_lock_free(path)


async def test_the_writer_recovers_at_once_from_a_transaction_interrupted_mid_statement(
    tmp_path: Path, no_cyclic_gc: None
) -> None:
    path = tmp_path / "plane.db"
    database = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await cancel_mid_statement(database)
        assert write_lock_free(path)
        async with database.transaction() as conn:  # a new writer connection, not waiting out the busy timeout
            await conn.execute(sa.text("INSERT INTO marks VALUES (1)"))
        async with database.read() as conn:
            # the interrupted transaction's row is gone, the new one is there
            assert (await conn.execute(sa.text("SELECT n FROM marks"))).scalars().all() == [1]
    finally:
        await database.dispose()
