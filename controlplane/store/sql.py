"""Plain SQL on a connection, whichever driver holds it: the hot path's statements run through this.

SQLAlchemy's connection costs ~0.4 ms of CPU per transaction on top of the driver (pool events,
greenlet hops, result objects); the hot path (submit, claim, transitions) only needs SQL text, parameters
and rows, so on PostgreSQL it runs on asyncpg connections directly. `AlchemySql` gives the same interface
over an SQLAlchemy connection (SQLite, and any PostgreSQL transaction opened through SQLAlchemy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection


class DuplicateKey(Exception):
    """A statement of the transaction hit a unique constraint (a concurrent insert won the race)."""


class Sql(Protocol):
    async def run(self, sql: str, params: Sequence[Any]) -> None:
        """Execute one statement."""

    async def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Execute one statement once per parameter row."""

    async def fetch(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """Execute one statement and return its rows (positional)."""


class AlchemySql:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def run(self, sql: str, params: Sequence[Any]) -> None:
        await self._conn.exec_driver_sql(sql, tuple(params))

    async def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.exec_driver_sql(sql, [tuple(row) for row in rows])

    async def fetch(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        return (await self._conn.exec_driver_sql(sql, tuple(params))).all()


class AsyncpgSql:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def run(self, sql: str, params: Sequence[Any]) -> None:
        await self._conn.execute(sql, *params)

    async def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        return await self._conn.fetch(sql, *params)  # type: ignore[no-any-return]
