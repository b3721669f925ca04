"""Channels that have been used, and the audit trail of API mutations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.domain.audit import AuditEntry
from controlplane.domain.channels import Channel
from controlplane.store.schema import audit_events, channels


class ChannelRepository:
    def __init__(self, conn: AsyncConnection, *, postgres: bool) -> None:
        self._conn = conn
        self._postgres = postgres

    async def ensure(self, name: str, *, now: float) -> None:
        insert = postgresql.insert(channels) if self._postgres else sqlite.insert(channels)
        await self._conn.execute(insert.values(name=name, create_time=now).on_conflict_do_nothing())

    async def list_page(self, *, limit: int, after_name: str | None) -> list[Channel]:
        query = sa.select(channels).order_by(channels.c.name).limit(limit)
        if after_name:
            query = query.where(channels.c.name > after_name)
        return [Channel(row.name, row.create_time) for row in await self._conn.execute(query)]


class AuditRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def record(
        self,
        *,
        actor: str,
        action: str,
        resource: str,
        now: float,
        correlation_id: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        entry = AuditEntry(actor, action, resource, now, correlation_id, details)
        await self.record_many([entry])

    async def record_many(self, entries: Sequence[AuditEntry]) -> None:
        if entries:
            await self._conn.execute(
                audit_events.insert(),
                [
                    {
                        "time": e.time,
                        "actor": e.actor,
                        "action": e.action,
                        "resource": e.resource,
                        "correlation_id": e.correlation_id,
                        "details": e.details,
                    }
                    for e in entries
                ],
            )

    async def purge_before(self, cutoff: float, *, limit: int) -> int:
        """Delete up to `limit` entries recorded before `cutoff`, oldest first, in one statement."""
        old = (
            sa.select(audit_events.c.id).where(audit_events.c.time < cutoff).order_by(audit_events.c.time).limit(limit)
        )
        result = await self._conn.execute(audit_events.delete().where(audit_events.c.id.in_(old)))
        return int(result.rowcount)

    async def for_resource(self, resource: str) -> list[dict[str, Any]]:
        result = await self._conn.execute(
            sa.select(audit_events).where(audit_events.c.resource == resource).order_by(audit_events.c.id)
        )
        return [dict(row._mapping) for row in result]
