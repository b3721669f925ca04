"""The audit trail: entries of calls that write nothing else to the database (channel publishes),
group-committed, and the listing of every entry.

Calls that change stored rows record their audit entry in their own transaction instead.
"""

from __future__ import annotations

from controlplane import paging
from controlplane.batching import Batcher
from controlplane.domain.audit import AuditEntry, AuditFilter
from controlplane.errors import InvalidArgument, MeshplaneError, Unavailable
from controlplane.lifecycle import Component
from controlplane.settings import Settings
from controlplane.store.unit_of_work import Store, UnitOfWork
from controlplane.validation import Violations

# The longest value each filter can match (the columns' sizes).
_FILTER_LENGTHS = {"resource": 500, "actor": 300, "action": 100, "correlation_id": 200}


class AuditTrail(Component):
    name = "audit-trail"

    def __init__(self, store: Store, settings: Settings) -> None:
        super().__init__()
        self._store = store
        self._batcher: Batcher[AuditEntry, None] = Batcher(
            "audit-batcher",
            self._flush,
            max_items=settings.batch_max_size * 4,
            linger=settings.batch_linger.total_seconds(),
        )

    async def _start(self) -> None:
        await self._batcher.start()

    async def _stop(self) -> None:
        await self._batcher.stop()

    async def record(self, entry: AuditEntry) -> None:
        """Returns once the entry is committed; raises Unavailable when it could not be written."""
        try:
            await self._batcher.call(entry)
        except MeshplaneError:
            raise
        except Exception as exc:
            raise Unavailable(f"could not write the audit entry for {entry.action} on {entry.resource}") from exc

    async def _flush(self, entries: list[AuditEntry]) -> list[None]:
        async def write(uow: UnitOfWork) -> None:
            await uow.audit.record_many(entries)

        await self._store.run(write)
        return [None] * len(entries)

    async def list_page(
        self, audit_filter: AuditFilter, *, page_size: int, page_token: str
    ) -> tuple[list[AuditEntry], str]:
        """A page of matching entries, newest first, and the token of the next (older) page."""
        violations = Violations()
        for field_name, max_length in _FILTER_LENGTHS.items():
            violations.text(field_name, getattr(audit_filter, field_name), max_length=max_length)
        start, end = audit_filter.start_time, audit_filter.end_time
        if start is not None and end is not None and end <= start:
            violations.add("end_time", "must be after the start time")
        violations.raise_if_any()
        size = paging.page_size(page_size)
        filters = ["audit", audit_filter]
        after = paging.decode(page_token, filters)
        before_id = _entry_id(after) if after is not None else None
        async with self._store.reader() as uow:
            entries = await uow.audit.list_page(audit_filter, limit=size + 1, before_id=before_id)
        token = paging.encode(str(entries[size - 1].id), filters) if len(entries) > size else ""
        return entries[:size], token


def _entry_id(position: str) -> int:
    try:
        entry_id = int(position)
    except ValueError as exc:
        raise InvalidArgument.of("page_token", "malformed page token") from exc
    if not 0 < entry_id < 2**63:  # audit ids are positive BIGINTs: anything else is a forged token
        raise InvalidArgument.of("page_token", "malformed page token")
    return entry_id
