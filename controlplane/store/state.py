"""State entries: versioned values with optional expiry."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.domain.payload import Payload
from controlplane.domain.state import StateEntry
from controlplane.store.schema import state_entries


def _entry_from_row(row: Any) -> StateEntry:
    return StateEntry(
        namespace=row.namespace,
        key=row.key,
        value=Payload(bytes(row.value_data), row.content_type),
        version=row.version,
        create_time=row.create_time,
        update_time=row.update_time,
        expire_time=row.expire_time,
    )


def _live(now: float) -> sa.ColumnElement[bool]:
    return sa.or_(state_entries.c.expire_time.is_(None), state_entries.c.expire_time > now)


class StateRepository:
    def __init__(self, conn: AsyncConnection, *, postgres: bool) -> None:
        self._conn = conn
        self._postgres = postgres

    async def get(self, namespace: str, key: str, *, now: float, for_update: bool = False) -> StateEntry | None:
        """The live entry; an expired one reads as absent."""
        query = sa.select(state_entries).where(
            state_entries.c.namespace == namespace, state_entries.c.key == key, _live(now)
        )
        if for_update and self._postgres:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return _entry_from_row(row) if row else None

    async def get_any(self, namespace: str, key: str, *, for_update: bool = False) -> StateEntry | None:
        """The stored row, expired or not (writers must see it to replace it)."""
        query = sa.select(state_entries).where(state_entries.c.namespace == namespace, state_entries.c.key == key)
        if for_update and self._postgres:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return _entry_from_row(row) if row else None

    async def insert(self, entry: StateEntry) -> None:
        await self._conn.execute(
            state_entries.insert().values(
                namespace=entry.namespace,
                key=entry.key,
                value_data=entry.value.data,
                content_type=entry.value.content_type,
                version=entry.version,
                create_time=entry.create_time,
                update_time=entry.update_time,
                expire_time=entry.expire_time,
            )
        )

    async def replace(self, entry: StateEntry, *, previous_version: int) -> bool:
        """Overwrite if the stored version is still `previous_version`."""
        result = await self._conn.execute(
            state_entries.update()
            .where(
                state_entries.c.namespace == entry.namespace,
                state_entries.c.key == entry.key,
                state_entries.c.version == previous_version,
            )
            .values(
                value_data=entry.value.data,
                content_type=entry.value.content_type,
                version=entry.version,
                create_time=entry.create_time,
                update_time=entry.update_time,
                expire_time=entry.expire_time,
            )
        )
        return bool(result.rowcount)

    async def delete(self, namespace: str, key: str, *, version: int) -> bool:
        result = await self._conn.execute(
            state_entries.delete().where(
                state_entries.c.namespace == namespace,
                state_entries.c.key == key,
                state_entries.c.version == version,
            )
        )
        return bool(result.rowcount)

    async def list_live(
        self, namespace: str, *, prefix: str, limit: int, after_key: str | None, now: float
    ) -> list[StateEntry]:
        query = (
            sa.select(state_entries)
            .where(state_entries.c.namespace == namespace, _live(now))
            .order_by(state_entries.c.key)
            .limit(limit)
        )
        if prefix:
            # Range instead of LIKE: keys may contain LIKE wildcards, and the range uses the primary key.
            query = query.where(state_entries.c.key >= prefix, state_entries.c.key < prefix + "\U0010ffff")
        if after_key:
            query = query.where(state_entries.c.key > after_key)
        return [_entry_from_row(row) for row in await self._conn.execute(query)]

    async def purge_expired(self, *, now: float, limit: int = 1000) -> int:
        """Delete up to `limit` entries whose TTL has passed, in one statement; returns how many went."""
        expired = (state_entries.c.expire_time.is_not(None), state_entries.c.expire_time <= now)
        victims = sa.select(state_entries.c.namespace, state_entries.c.key).where(*expired).limit(limit)
        result = await self._conn.execute(
            state_entries.delete().where(
                sa.tuple_(state_entries.c.namespace, state_entries.c.key).in_(victims), *expired
            )
        )
        return int(result.rowcount)
