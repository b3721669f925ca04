"""Agents and their instances: registration records, listing, draining, liveness snapshots."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from controlplane import paging
from controlplane.batching import Batcher
from controlplane.clock import wall_clock
from controlplane.domain.agents import Agent, AgentInstance, AgentStatus, InstanceStatus, Registration
from controlplane.errors import FailedPrecondition, NotFound
from controlplane.lifecycle import Component
from controlplane.link.registry import SessionRegistry
from controlplane.link.session import SessionState
from controlplane.store.agents import Connected, InstanceLiveness
from controlplane.store.unit_of_work import Store, UnitOfWork
from controlplane.validation import CAPABILITY_RE, Violations

MAX_CONCURRENCY_LIMIT = 10_000
MAX_CAPABILITIES = 256
logger = logging.getLogger(__name__)
LIVENESS_REFRESH = 30.0  # seconds between last-seen writes of an otherwise unchanged session


class DrainSender(Protocol):
    async def drain_instance(
        self, *, replica_id: str, session_id: str, instance_id: str, timeout: float, reason: str
    ) -> None: ...


def validate_registration(reg: Registration) -> None:
    """Every rule of the register frame, reported with field paths (`register.<field>`)."""
    violations = Violations("register.")
    violations.name("agent_name", reg.agent_name, what="agent name")
    violations.name("instance_id", reg.instance_id, what="instance id")
    violations.text("agent_version", reg.agent_version, max_length=100)
    violations.text("description", reg.description, max_length=2000)
    violations.string_map("labels", reg.labels)
    violations.range("max_concurrency", reg.max_concurrency, low=1, high=MAX_CONCURRENCY_LIMIT)
    violations.range("weight", reg.weight, low=1, high=1000)
    if len(reg.capabilities) > MAX_CAPABILITIES:
        violations.add("capabilities", f"at most {MAX_CAPABILITIES} capabilities")
    seen: set[str] = set()
    for index, capability in enumerate(reg.capabilities):
        if not CAPABILITY_RE.fullmatch(capability.name):
            violations.add(
                f"capabilities[{index}].name",
                "must be 1-200 characters of [A-Za-z0-9._-], starting with a letter or digit",
            )
        elif capability.name in seen:
            violations.add(f"capabilities[{index}].name", f"duplicate capability {capability.name!r}")
        seen.add(capability.name)
    for index, channel in enumerate(reg.subscriptions):
        violations.channel(f"subscriptions[{index}]", channel)
    violations.raise_if_any()


class AgentService(Component):
    name = "agent-service"

    def __init__(
        self,
        store: Store,
        registry: SessionRegistry,
        drains: DrainSender,
        *,
        replica_id: str,
        default_drain_timeout: float,
        batch_max: int = 500,
        clock: Callable[[], float] = wall_clock,
    ) -> None:
        super().__init__()
        self._store = store
        self._registry = registry
        self._drains = drains
        self._replica_id = replica_id
        self._default_drain_timeout = default_drain_timeout
        self._clock = clock
        self._persisted: dict[str, tuple[int, float, float]] = {}  # session -> in_flight, load, written at
        # Agents reconnect in crowds (a replica went away, a fleet restarted): their registrations share
        # transactions instead of paying one each.
        self.connect_batcher: Batcher[Connected, bool] = Batcher(
            "connect-batcher", self._flush_connects, max_items=batch_max
        )

    async def _start(self) -> None:
        await self.connect_batcher.start()

    async def _stop(self) -> None:
        await self.connect_batcher.stop()

    async def record_connect(self, reg: Registration, *, session_id: str) -> bool:
        """Record the instance as connected on this session. Returns whether it still owns assigned or
        running tasks (a fresh agent does not, and needs no rebinding)."""
        return await self.connect_batcher.call(Connected(reg, session_id))

    async def _flush_connects(self, connected: list[Connected]) -> list[bool]:
        async with self._store.hot_transaction() as uow:
            await uow.agents.register(connected, replica_id=self._replica_id, now=self._clock())
            owning = await uow.tasks.instances_owning_active([c.registration.instance_id for c in connected])
        return [c.registration.instance_id in owning for c in connected]

    async def record_status(self, instance_id: str, session_id: str, status: InstanceStatus) -> None:
        async with self._store.transaction() as uow:
            await uow.agents.set_status(
                instance_id,
                session_id,
                status,
                now=self._clock(),
                disconnected=status is InstanceStatus.DISCONNECTED,
            )

    async def record_liveness(self) -> int:
        """Persist what changed about this replica's sessions: in-flight count and load at once, last-seen
        only every LIVENESS_REFRESH seconds (heartbeats themselves stay in memory). Returns rows written."""
        now = self._clock()
        rows: list[InstanceLiveness] = []
        persisted: dict[str, tuple[int, float, float]] = {}
        for session in self._registry.sessions():
            if session.state is SessionState.CLOSED:
                continue
            in_flight, load = len(session.in_flight), session.load
            previous = self._persisted.get(session.session_id)
            if previous is None or previous[:2] != (in_flight, load) or now - previous[2] >= LIVENESS_REFRESH:
                rows.append(
                    InstanceLiveness(session.instance_id, session.session_id, session.last_seen_wall, in_flight, load)
                )
                previous = (in_flight, load, now)
            persisted[session.session_id] = previous
        if rows:
            async with self._store.transaction() as uow:
                await uow.agents.record_liveness(rows)
        self._persisted = persisted  # sessions gone since are forgotten
        return len(rows)

    async def disconnect_ghosts(self, *, seen_before: float) -> int:
        """Instances this replica's rows show connected on sessions it does not have, last seen before
        `seen_before`, are marked disconnected. Their disconnect was never written: the database was out when
        their session closed, or the session was an earlier process's of this replica id (killed, then
        restarted). Until then they were counted as connected, and sticky placement waited for them."""
        async with self._store.reader() as uow:
            marked = await uow.agents.marked_connected(self._replica_id, seen_before=seen_before)
        ghosts = [(instance_id, session_id) for instance_id, session_id in marked if not self._holds(session_id)]
        if not ghosts:
            return 0
        async with self._store.transaction() as uow:
            disconnected = await uow.agents.disconnect_sessions(ghosts, now=self._clock())
        if disconnected:
            logger.warning(
                "%d agent instance(s) shown connected here on sessions long gone are now disconnected: %s",
                disconnected,
                ", ".join(sorted(instance_id for instance_id, _ in ghosts)[:10]),
            )
        return disconnected

    # -- reads

    async def _with_status(self, agents: Sequence[Agent]) -> list[Agent]:
        async with self._store.reader() as uow:
            counts = await uow.agents.connected_counts([a.name for a in agents])
        for agent in agents:
            connected, draining = counts.get(agent.name, (0, 0))
            agent.connected_instances = connected
            if connected == 0:
                agent.status = AgentStatus.OFFLINE
            elif draining == connected:
                agent.status = AgentStatus.DRAINING
            else:
                agent.status = AgentStatus.ONLINE
        return list(agents)

    async def current_session(self, instance_id: str) -> str | None:
        """The session the store shows `instance_id` registered on last (registrations overwrite it: the last
        one wins), or None when the instance is unknown."""
        async with self._store.reader() as uow:
            instance = await uow.agents.get_instance(instance_id)
        return instance.session_id if instance is not None else None

    async def get_agent(self, name: str) -> Agent:
        async with self._store.reader() as uow:
            agent = await uow.agents.get_agent(name)
        if agent is None:
            raise NotFound("agent", name)
        return (await self._with_status([agent]))[0]

    async def list_agents(self, *, capability: str, page_size: int, page_token: str) -> tuple[list[Agent], str]:
        size = paging.page_size(page_size)
        after = paging.decode(page_token, [capability])
        async with self._store.reader() as uow:
            agents = await uow.agents.list_agents(limit=size + 1, after_name=after, capability=capability)
        token = paging.encode(agents[size - 1].name, [capability]) if len(agents) > size else ""
        return await self._with_status(agents[:size]), token

    def _ghost(self, instance: AgentInstance) -> bool:
        """Shown connected to this replica on a session it does not have (its end was never written: the
        database was out then, or the replica was killed and restarted under its id; the sweep marks it soon)."""
        return instance.replica_id == self._replica_id and not self._holds(instance.session_id)

    def _holds(self, session_id: str) -> bool:
        """This replica has that session."""
        return self._registry.get(session_id) is not None

    def _overlay_live(self, instance: AgentInstance) -> AgentInstance:
        session = self._registry.by_instance(instance.instance_id)
        if session is not None and session.session_id == instance.session_id:
            instance.in_flight = len(session.in_flight)
            instance.load = session.load
            instance.last_seen_time = session.last_seen_wall
        return instance

    async def list_instances(
        self, agent_name: str, *, include_disconnected: bool, page_size: int, page_token: str
    ) -> tuple[list[AgentInstance], str]:
        wildcard = agent_name == "-"
        if not wildcard:
            await self.get_agent(agent_name)  # NOT_FOUND for an unknown agent
        size = paging.page_size(page_size)
        filters = [agent_name, include_disconnected]
        after = paging.decode(page_token, filters)
        async with self._store.reader() as uow:
            instances = await uow.agents.list_instances(
                agent_name=None if wildcard else agent_name,
                include_disconnected=include_disconnected,
                limit=size + 1,
                after_id=after,
            )
        token = paging.encode(instances[size - 1].instance_id, filters) if len(instances) > size else ""
        return [self._overlay_live(i) for i in instances[:size]], token

    async def drain(
        self,
        agent_name: str,
        instance_id: str,
        *,
        timeout: float | None,
        reason: str,
        actor: str,
        correlation_id: str = "",
    ) -> AgentInstance:
        violations = Violations()
        violations.name("agent_name", agent_name, what="agent name")
        violations.name("instance_id", instance_id, what="instance id")
        if timeout is not None:
            violations.range("timeout", timeout, low=0, high=24 * 3600)
        violations.raise_if_any()
        async with self._store.reader() as uow:
            instance = await uow.agents.get_instance(instance_id)
        if instance is None or instance.agent_name != agent_name:
            raise NotFound("agent instance", f"{agent_name}/{instance_id}")
        if instance.status is InstanceStatus.DISCONNECTED or self._ghost(instance):
            raise FailedPrecondition(f"agent instance {agent_name}/{instance_id} is not connected")
        await self._drains.drain_instance(
            replica_id=instance.replica_id,
            session_id=instance.session_id,
            instance_id=instance_id,
            timeout=timeout or self._default_drain_timeout,
            reason=reason or "drained by operator",
        )
        now = self._clock()

        async def work(uow: UnitOfWork) -> None:
            # An operator's drain is no sign of the agent's life: last_seen stays (a ghost's still ages out).
            await uow.agents.set_status(instance_id, instance.session_id, InstanceStatus.DRAINING, now=None)
            await uow.audit.record(
                actor=actor,
                action="agent.drain",
                resource=f"agents/{agent_name}/instances/{instance_id}",
                now=now,
                correlation_id=correlation_id,
                details={"reason": reason},
            )

        await self._store.run(work)
        instance.status = InstanceStatus.DRAINING
        return self._overlay_live(instance)
