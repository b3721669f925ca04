"""The audit trail of calls that write nothing else to the database (channel publishes), group-committed.

Calls that change stored rows record their audit entry in their own transaction instead.
"""

from __future__ import annotations

from controlplane.batching import Batcher
from controlplane.domain.audit import AuditEntry
from controlplane.errors import MeshplaneError, Unavailable
from controlplane.lifecycle import Component
from controlplane.settings import Settings
from controlplane.store.unit_of_work import Store, UnitOfWork


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
