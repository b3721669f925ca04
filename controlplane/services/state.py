"""Key/value state: versioned writes, compare-and-set, TTL."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from controlplane import paging
from controlplane.clock import wall_clock
from controlplane.domain.payload import Payload
from controlplane.domain.state import StateEntry
from controlplane.errors import NotFound, ResourceExhausted, VersionMismatch
from controlplane.store.unit_of_work import Store, UnitOfWork
from controlplane.validation import Violations

MAX_TTL_SECONDS = 10 * 365 * 24 * 3600


def _check_address(namespace: str, key: str) -> None:
    violations = Violations()
    violations.name("namespace", namespace, what="namespace")
    violations.state_key("key", key)
    violations.raise_if_any()


class StateService:
    def __init__(self, store: Store, *, max_payload_bytes: int, clock: Callable[[], float] = wall_clock) -> None:
        self._store = store
        self._max_payload_bytes = max_payload_bytes
        self._clock = clock

    async def get(self, namespace: str, key: str) -> StateEntry:
        _check_address(namespace, key)
        async with self._store.reader() as uow:
            entry = await uow.state.get(namespace, key, now=self._clock())
        if entry is None:
            raise NotFound("state entry", f"{namespace}/{key}")
        return entry

    async def put(
        self,
        namespace: str,
        key: str,
        value: Payload,
        *,
        ttl: float | None,
        expected_version: int | None,
        actor: str,
        correlation_id: str = "",
    ) -> StateEntry:
        violations = Violations()
        violations.name("namespace", namespace, what="namespace")
        violations.state_key("key", key)
        if ttl is not None:
            violations.range("ttl", ttl, low=0, high=MAX_TTL_SECONDS)
        if expected_version is not None:
            violations.non_negative("expected_version", expected_version)
        if value.is_json:
            problem = value.json_problem()
            if problem is not None:
                violations.add("value", problem)
        violations.raise_if_any()
        if len(value) > self._max_payload_bytes:
            raise ResourceExhausted(
                f"value is {len(value)} bytes; the limit is {self._max_payload_bytes} bytes (max_payload_bytes)"
            )
        subject = f"namespaces/{namespace}/states/{key}"
        now = self._clock()

        async def write(uow: UnitOfWork) -> StateEntry:
            stored = await uow.state.get_any(namespace, key, for_update=True)
            live = stored if stored is not None and (stored.expire_time is None or stored.expire_time > now) else None
            current_version = live.version if live is not None else 0
            if expected_version is not None and expected_version != current_version:
                raise VersionMismatch(subject, expected_version, live.version if live else None)
            entry = StateEntry(
                namespace=namespace,
                key=key,
                value=value,
                # Versions keep growing across expiry and deletion, so a stale CAS can never match again.
                version=(stored.version if stored else 0) + 1,
                create_time=live.create_time if live else now,
                update_time=now,
                expire_time=now + ttl if ttl else None,
            )
            if stored is None:
                await uow.state.insert(entry)
            elif not await uow.state.replace(entry, previous_version=stored.version):
                raise VersionMismatch(subject, expected_version or current_version, None)
            await uow.audit.record(
                actor=actor,
                action="state.put",
                resource=subject,
                now=now,
                correlation_id=correlation_id,
                details={"version": entry.version},
            )
            return entry

        try:
            return await self._store.run(write)
        except IntegrityError as exc:
            # A concurrent first write of the same key won.
            raise VersionMismatch(subject, expected_version or 0, None) from exc

    async def delete(
        self, namespace: str, key: str, *, expected_version: int | None, actor: str, correlation_id: str = ""
    ) -> None:
        _check_address(namespace, key)
        subject = f"namespaces/{namespace}/states/{key}"
        now = self._clock()

        async def remove(uow: UnitOfWork) -> None:
            stored = await uow.state.get(namespace, key, now=now, for_update=True)
            if stored is None:
                raise NotFound("state entry", f"{namespace}/{key}")
            if expected_version is not None and expected_version != stored.version:
                raise VersionMismatch(subject, expected_version, stored.version)
            if not await uow.state.delete(namespace, key, version=stored.version):
                raise VersionMismatch(subject, expected_version or stored.version, None)
            await uow.audit.record(
                actor=actor,
                action="state.delete",
                resource=subject,
                now=now,
                correlation_id=correlation_id,
                details={"version": stored.version},
            )

        await self._store.run(remove)

    async def list_page(
        self, namespace: str, *, prefix: str, page_size: int, page_token: str
    ) -> paging.Page[StateEntry]:
        violations = Violations()
        violations.name("namespace", namespace, what="namespace")
        violations.text("key_prefix", prefix, max_length=256)
        violations.raise_if_any()
        size = paging.page_size(page_size)
        filters = [namespace, prefix]
        after = paging.decode(page_token, filters)
        async with self._store.reader() as uow:
            entries = await uow.state.list_live(
                namespace, prefix=prefix, limit=size + 1, after_key=after, now=self._clock()
            )

        def token_after(entry: StateEntry) -> str:
            return paging.encode(entry.key, filters)

        return paging.Page(entries[:size], token_after(entries[size - 1]) if len(entries) > size else "", token_after)
