"""One transaction with every repository bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.lifecycle import run_to_completion
from controlplane.store.agents import AgentRepository, AgentRows, ReplicaRepository
from controlplane.store.channels import AuditRepository, ChannelRepository
from controlplane.store.database import Database
from controlplane.store.sql import Sql
from controlplane.store.state import StateRepository
from controlplane.store.tasks import TaskRepository, TaskRows


class UnitOfWork:
    def __init__(self, conn: AsyncConnection, *, postgres: bool) -> None:
        self.connection = conn
        self.tasks = TaskRepository(conn, postgres=postgres)
        self.agents = AgentRepository(conn, postgres=postgres)
        self.replicas = ReplicaRepository(conn, postgres=postgres)
        self.state = StateRepository(conn, postgres=postgres)
        self.channels = ChannelRepository(conn, postgres=postgres)
        self.audit = AuditRepository(conn)


class HotUnitOfWork:
    """One hot-path transaction (submit, claim, transitions, registration): rows through plain SQL only."""

    def __init__(self, sql: Sql, *, postgres: bool) -> None:
        self.tasks = TaskRows(sql, postgres=postgres)
        self.agents = AgentRows(sql, postgres=postgres)


T = TypeVar("T")


class Store:
    """The services' way into the database: `async with store.transaction() as uow: ...` commits on exit."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def is_postgres(self) -> bool:
        return self.database.is_postgres

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        async with self.database.transaction() as conn:
            yield UnitOfWork(conn, postgres=self.database.is_postgres)

    @asynccontextmanager
    async def hot_transaction(self, *, single_statement: bool = False) -> AsyncIterator[HotUnitOfWork]:
        """Like `transaction()`, for the hot path: on PostgreSQL a bare driver connection (see store.sql).

        `single_statement`: the block runs exactly one statement (atomic by itself; no BEGIN/COMMIT sent).
        Raises store.sql.DuplicateKey when a unique constraint was hit.
        """
        async with self.database.statements(single_statement=single_statement) as sql:
            yield HotUnitOfWork(sql, postgres=self.database.is_postgres)

    async def run(self, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """`work` in one transaction that a cancelled caller cannot interrupt half-way.

        For writes made on a request's behalf: if the client goes away mid-transaction, the transaction
        still commits or rolls back as a whole (and never leaves a connection holding a lock).
        """

        async def unit() -> T:
            async with self.transaction() as uow:
                return await work(uow)

        return await run_to_completion(unit())

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[UnitOfWork]:
        async with self.database.read() as conn:
            yield UnitOfWork(conn, postgres=self.database.is_postgres)
