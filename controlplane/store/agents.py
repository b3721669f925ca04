"""Agents, agent instances (sessions) and control plane replicas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from controlplane.domain.agents import Agent, AgentInstance, Capability, InstanceStatus, Registration, RemoteInstance
from controlplane.store.bulk import Bulk, Col
from controlplane.store.schema import agent_instances, agents, replicas
from controlplane.store.sql import AlchemySql, Sql

_AGENT_COLS = tuple(
    Col(name, kind)
    for name, kind in [
        ("name", "text"), ("version", "text"), ("description", "text"), ("capabilities", "json"),
        ("labels", "json"), ("create_time", "time"), ("update_time", "time"),
    ]
)  # fmt: skip
_INSTANCE_COLS = tuple(
    Col(name, kind)
    for name, kind in [
        ("instance_id", "text"), ("agent_name", "text"), ("version", "text"), ("session_id", "text"),
        ("status", "smallint"), ("sdk_language", "text"), ("sdk_version", "text"), ("node", "text"),
        ("pid", "int"), ("labels", "json"), ("capabilities", "json"), ("max_concurrency", "int"),
        ("weight", "int"), ("replica_id", "text"), ("in_flight", "int"), ("load", "float"),
        ("connect_time", "time"), ("last_seen_time", "time"), ("disconnect_time", "time"),
    ]
)  # fmt: skip
_LIVENESS_KEY = (Col("instance_id", "text"), Col("session_id", "text"))
_LIVENESS_SETS = (Col("last_seen_time", "time"), Col("in_flight", "int"), Col("load", "float"))


def _capability_to_json(capability: Capability) -> dict[str, Any]:
    data: dict[str, Any] = {"name": capability.name, "description": capability.description}
    if capability.input_schema is not None:
        data["input_schema"] = capability.input_schema
    if capability.output_schema is not None:
        data["output_schema"] = capability.output_schema
    return data


def _capability_from_json(data: dict[str, Any]) -> Capability:
    return Capability(
        name=data["name"],
        description=data.get("description", ""),
        input_schema=data.get("input_schema"),
        output_schema=data.get("output_schema"),
    )


def _agent_from_row(row: Any) -> Agent:
    return Agent(
        name=row.name,
        version=row.version,
        description=row.description,
        capabilities=[_capability_from_json(c) for c in row.capabilities or []],
        labels=dict(row.labels or {}),
        create_time=row.create_time,
        update_time=row.update_time,
    )


def _instance_from_row(row: Any) -> AgentInstance:
    return AgentInstance(
        instance_id=row.instance_id,
        agent_name=row.agent_name,
        version=row.version,
        session_id=row.session_id,
        status=InstanceStatus(row.status),
        sdk_language=row.sdk_language,
        sdk_version=row.sdk_version,
        node=row.node,
        pid=row.pid,
        labels=dict(row.labels or {}),
        capabilities=list(row.capabilities or []),
        max_concurrency=row.max_concurrency,
        weight=row.weight,
        replica_id=row.replica_id,
        connect_time=row.connect_time,
        last_seen_time=row.last_seen_time,
        in_flight=row.in_flight,
        load=row.load,
        disconnect_time=row.disconnect_time,
    )


@dataclass(frozen=True, slots=True)
class InstanceLiveness:
    """What is periodically persisted about a live session (heartbeats stay in memory in between)."""

    instance_id: str
    session_id: str
    last_seen_time: float
    in_flight: int
    load: float


@dataclass(frozen=True, slots=True)
class Connected:
    """A session that registered: its agent and instance rows are upserted as connected on it."""

    registration: Registration
    session_id: str


class AgentRows:
    """Registration on the hot path (plain SQL): many sessions' agent and instance rows in two statements."""

    def __init__(self, sql: Sql, *, postgres: bool) -> None:
        self._bulk = Bulk(sql, postgres=postgres)

    async def register(self, connected: Sequence[Connected], *, replica_id: str, now: float) -> None:
        """Upsert each agent and instance as connected on its session; for an instance or agent named more
        than once, the last registration wins (as it would one after another)."""
        agent_rows: dict[str, tuple[Any, ...]] = {}
        instance_rows: dict[str, tuple[Any, ...]] = {}
        for entry in connected:
            reg = entry.registration
            capabilities = [_capability_to_json(c) for c in reg.capabilities]
            agent_rows[reg.agent_name] = (
                reg.agent_name, reg.agent_version, reg.description, capabilities, reg.labels, now, now
            )  # fmt: skip
            instance_rows[reg.instance_id] = (
                reg.instance_id, reg.agent_name, reg.agent_version, entry.session_id, int(InstanceStatus.CONNECTED),
                reg.sdk_language, reg.sdk_version, reg.node, reg.pid, reg.labels, sorted(reg.capability_names),
                reg.max_concurrency, reg.weight, replica_id, 0, 0.0, now, now, None,
            )  # fmt: skip
        batch = self._bulk.batch()
        batch.upsert("agents", _AGENT_COLS, list(agent_rows.values()), conflict=("name",), keep=("create_time",))
        batch.upsert("agent_instances", _INSTANCE_COLS, list(instance_rows.values()), conflict=("instance_id",))
        await batch.execute()


class AgentRepository:
    def __init__(self, conn: AsyncConnection, *, postgres: bool) -> None:
        self._conn = conn
        self._postgres = postgres
        self._bulk = Bulk(AlchemySql(conn), postgres=postgres)

    async def set_status(
        self,
        instance_id: str,
        session_id: str,
        status: InstanceStatus,
        *,
        now: float | None,
        disconnected: bool = False,
    ) -> bool:
        """Change an instance's status if it is still on `session_id` (a newer session wins). `now` is when the
        session was last seen, if this change is news from it (None: last_seen stays)."""
        values: dict[str, Any] = {"status": int(status)}
        if now is not None:
            values["last_seen_time"] = now
        if disconnected:
            assert now is not None, "a disconnect is seen when it happens"
            values["disconnect_time"] = now
            values["in_flight"] = 0
        result = await self._conn.execute(
            agent_instances.update()
            .where(agent_instances.c.instance_id == instance_id, agent_instances.c.session_id == session_id)
            .values(values)
        )
        return bool(result.rowcount)

    async def record_liveness(self, rows: Sequence[InstanceLiveness]) -> None:
        """One set-based UPDATE for all rows (each row only if its instance is still on that session)."""
        await self._bulk.update(
            "agent_instances",
            _LIVENESS_KEY,
            _LIVENESS_SETS,
            [(r.instance_id, r.session_id, r.last_seen_time, r.in_flight, r.load) for r in rows],
        )

    async def disconnect_replica(self, replica_id: str, *, now: float) -> int:
        result = await self._conn.execute(
            agent_instances.update()
            .where(
                agent_instances.c.replica_id == replica_id,
                agent_instances.c.status != int(InstanceStatus.DISCONNECTED),
            )
            .values(status=int(InstanceStatus.DISCONNECTED), disconnect_time=now, in_flight=0)
        )
        return int(result.rowcount or 0)

    async def marked_connected(self, replica_id: str, *, seen_before: float) -> list[tuple[str, str]]:
        """(instance_id, session_id) of the instances shown connected or draining on `replica_id`, last seen
        before `seen_before`."""
        query = sa.select(agent_instances.c.instance_id, agent_instances.c.session_id).where(
            agent_instances.c.replica_id == replica_id,
            agent_instances.c.status != int(InstanceStatus.DISCONNECTED),
            agent_instances.c.last_seen_time < seen_before,
        )
        return [(row.instance_id, row.session_id) for row in await self._conn.execute(query)]

    async def disconnect_sessions(self, sessions: Sequence[tuple[str, str]], *, now: float) -> int:
        """Mark each (instance_id, session_id) disconnected, if the instance is still on that session."""
        disconnected = 0
        for instance_id, session_id in sessions:
            result = await self._conn.execute(
                agent_instances.update()
                .where(
                    agent_instances.c.instance_id == instance_id,
                    agent_instances.c.session_id == session_id,
                    agent_instances.c.status != int(InstanceStatus.DISCONNECTED),
                )
                .values(status=int(InstanceStatus.DISCONNECTED), disconnect_time=now, in_flight=0)
            )
            disconnected += int(result.rowcount or 0)
        return disconnected

    async def purge_disconnected_before(self, cutoff: float, *, limit: int) -> int:
        """Delete up to `limit` instances disconnected before `cutoff`, longest gone first, in one statement."""
        gone = (
            sa.select(agent_instances.c.instance_id)
            .where(
                agent_instances.c.status == int(InstanceStatus.DISCONNECTED),
                agent_instances.c.disconnect_time < cutoff,
            )
            .order_by(agent_instances.c.disconnect_time)
            .limit(limit)
        )
        # The conditions again: an instance that reconnected meanwhile (the same instance id) stays.
        result = await self._conn.execute(
            agent_instances.delete().where(
                agent_instances.c.instance_id.in_(gone),
                agent_instances.c.status == int(InstanceStatus.DISCONNECTED),
                agent_instances.c.disconnect_time < cutoff,
            )
        )
        return int(result.rowcount)

    async def get_agent(self, name: str) -> Agent | None:
        row = (await self._conn.execute(sa.select(agents).where(agents.c.name == name))).first()
        return _agent_from_row(row) if row else None

    async def list_agents(self, *, limit: int, after_name: str | None, capability: str = "") -> list[Agent]:
        query = sa.select(agents).order_by(agents.c.name).limit(limit)
        if after_name:
            query = query.where(agents.c.name > after_name)
        rows = [_agent_from_row(row) for row in await self._conn.execute(query)]
        if capability:  # capabilities are JSON; filter here to stay portable across both databases
            rows = [a for a in rows if any(c.name == capability for c in a.capabilities)]
        return rows

    async def connected_counts(self, names: Sequence[str]) -> dict[str, tuple[int, int]]:
        """agent name -> (connected instances, of which draining)."""
        if not names:
            return {}
        query = (
            sa.select(agent_instances.c.agent_name, agent_instances.c.status, sa.func.count())
            .where(
                agent_instances.c.agent_name.in_(list(names)),
                agent_instances.c.status != int(InstanceStatus.DISCONNECTED),
            )
            .group_by(agent_instances.c.agent_name, agent_instances.c.status)
        )
        counts: dict[str, tuple[int, int]] = {}
        for name, status, count in await self._conn.execute(query):
            connected, draining = counts.get(name, (0, 0))
            connected += count
            if status == int(InstanceStatus.DRAINING):
                draining += count
            counts[name] = (connected, draining)
        return counts

    async def get_instance(self, instance_id: str) -> AgentInstance | None:
        row = (
            await self._conn.execute(sa.select(agent_instances).where(agent_instances.c.instance_id == instance_id))
        ).first()
        return _instance_from_row(row) if row else None

    async def connected_elsewhere(self, *, replica_id: str, replicas_seen_since: float) -> list[RemoteInstance]:
        """Instances connected (not draining) to other replicas that are alive."""
        query = (
            sa.select(
                agent_instances.c.instance_id,
                agent_instances.c.agent_name,
                agent_instances.c.labels,
                agent_instances.c.capabilities,
                agent_instances.c.replica_id,
            )
            .join(replicas, replicas.c.replica_id == agent_instances.c.replica_id)
            .where(
                agent_instances.c.status == int(InstanceStatus.CONNECTED),
                agent_instances.c.replica_id != replica_id,
                replicas.c.last_seen_time >= replicas_seen_since,
            )
        )
        return [
            RemoteInstance(
                row.instance_id,
                row.agent_name,
                dict(row.labels or {}),
                frozenset(row.capabilities or ()),
                row.replica_id,
            )
            for row in await self._conn.execute(query)
        ]

    async def list_instances(
        self, *, agent_name: str | None, include_disconnected: bool, limit: int, after_id: str | None
    ) -> list[AgentInstance]:
        query = sa.select(agent_instances).order_by(agent_instances.c.instance_id).limit(limit)
        if agent_name:
            query = query.where(agent_instances.c.agent_name == agent_name)
        if not include_disconnected:
            query = query.where(agent_instances.c.status != int(InstanceStatus.DISCONNECTED))
        if after_id:
            query = query.where(agent_instances.c.instance_id > after_id)
        return [_instance_from_row(row) for row in await self._conn.execute(query)]


class ReplicaRepository:
    def __init__(self, conn: AsyncConnection, *, postgres: bool) -> None:
        self._conn = conn
        self._postgres = postgres

    async def heartbeat(self, replica_id: str, *, address: str, now: float) -> None:
        insert = postgresql.insert(replicas) if self._postgres else sqlite.insert(replicas)
        stmt = insert.values(replica_id=replica_id, address=address, start_time=now, last_seen_time=now)
        await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[replicas.c.replica_id],
                set_={"last_seen_time": stmt.excluded.last_seen_time, "address": stmt.excluded.address},
            )
        )

    async def silent_since(self, cutoff: float, *, exclude: str) -> list[str]:
        query = sa.select(replicas.c.replica_id).where(
            replicas.c.last_seen_time < cutoff, replicas.c.replica_id != exclude
        )
        return list((await self._conn.scalars(query)).all())

    async def remove(self, replica_id: str) -> None:
        await self._conn.execute(replicas.delete().where(replicas.c.replica_id == replica_id))
