"""Channels that have been used, and the audit trail of API mutations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.domain.audit import AuditEntry, AuditFilter
from controlplane.domain.channels import Channel
from controlplane.store.schema import audit_events, channels


class ChannelRepository:
    def __init__(self, conn: AsyncConnection, *, postgres: bool) -> None:
        self._conn = conn
        self._postgres = postgres

    async def touch(self, names: Sequence[str], *, now: float) -> None:
        """Record a use of each channel: its row is created if missing, its last use set to `now`."""
        if not names:
            return
        insert = postgresql.insert(channels) if self._postgres else sqlite.insert(channels)
        rows = [{"name": name, "create_time": now, "last_use_time": now} for name in sorted(set(names))]
        await self._conn.execute(
            insert.values(rows).on_conflict_do_update(
                index_elements=[channels.c.name], set_={"last_use_time": insert.excluded.last_use_time}
            )
        )

    async def list_page(self, *, limit: int, after_name: str | None) -> list[Channel]:
        query = sa.select(channels).order_by(channels.c.name).limit(limit)
        if after_name:
            query = query.where(channels.c.name > after_name)
        return [Channel(row.name, row.create_time, row.last_use_time) for row in await self._conn.execute(query)]

    async def purge_unused_since(self, cutoff: float, *, limit: int) -> int:
        """Delete up to `limit` channels last used before `cutoff`, least recently used first, in one statement."""
        old = (
            sa.select(channels.c.name)
            .where(channels.c.last_use_time < cutoff)
            .order_by(channels.c.last_use_time)
            .limit(limit)
        )
        # The cutoff again: a use recorded meanwhile on another replica keeps the channel (PostgreSQL
        # re-checks a row updated under the delete).
        result = await self._conn.execute(
            channels.delete().where(channels.c.name.in_(old), channels.c.last_use_time < cutoff)
        )
        return int(result.rowcount)


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

    async def list_page(self, audit_filter: AuditFilter, *, limit: int, before_id: int | None) -> list[AuditEntry]:
        """Up to `limit` entries matching `audit_filter`, newest first, older than entry `before_id` if given."""
        f = audit_filter
        conditions = [
            column == value
            for column, value in (
                (audit_events.c.resource, f.resource),
                (audit_events.c.actor, f.actor),
                (audit_events.c.action, f.action),
                (audit_events.c.correlation_id, f.correlation_id),
            )
            if value
        ]
        if f.start_time is not None:
            conditions.append(audit_events.c.time >= f.start_time)
        if f.end_time is not None:
            conditions.append(audit_events.c.time < f.end_time)
        if before_id is not None:
            conditions.append(audit_events.c.id < before_id)
        query = sa.select(audit_events).where(*conditions).order_by(audit_events.c.id.desc()).limit(limit)
        return [
            AuditEntry(
                actor=row.actor,
                action=row.action,
                resource=row.resource,
                time=row.time,
                correlation_id=row.correlation_id,
                details=row.details,
                id=row.id,
            )
            for row in await self._conn.execute(query)
        ]

    async def for_resource(self, resource: str) -> list[dict[str, Any]]:
        result = await self._conn.execute(
            sa.select(audit_events).where(audit_events.c.resource == resource).order_by(audit_events.c.id)
        )
        return [dict(row._mapping) for row in result]
