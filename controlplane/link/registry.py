"""The live sessions of this replica, indexed for the scheduler."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from controlplane.link.session import AgentSession, SessionState


class SessionRegistry:
    def __init__(self) -> None:
        self._by_session: dict[str, AgentSession] = {}
        self._by_instance: dict[str, AgentSession] = {}
        self._by_capability: dict[str, dict[str, AgentSession]] = defaultdict(dict)

    def __len__(self) -> int:
        return len(self._by_session)

    def __iter__(self) -> Iterable[AgentSession]:
        return iter(list(self._by_session.values()))

    def sessions(self) -> list[AgentSession]:
        return list(self._by_session.values())

    def holding_attempts(self) -> list[AgentSession]:
        """Sessions with attempts in flight (idle ones, usually most, are skipped at C speed)."""
        return [s for s in self._by_session.values() if s.in_flight]

    def add(self, session: AgentSession) -> AgentSession | None:
        """Register a session; returns the older session of the same instance, which it replaces."""
        previous = self._by_instance.get(session.instance_id)
        if previous is not None:
            self.remove(previous)
        self._by_session[session.session_id] = session
        self._by_instance[session.instance_id] = session
        for capability in session.registration.capability_names:
            self._by_capability[capability][session.session_id] = session
        return previous

    def remove(self, session: AgentSession) -> None:
        if self._by_session.pop(session.session_id, None) is None:
            return
        if self._by_instance.get(session.instance_id) is session:
            del self._by_instance[session.instance_id]
        for capability in session.registration.capability_names:
            members = self._by_capability.get(capability)
            if members is not None:
                members.pop(session.session_id, None)
                if not members:
                    del self._by_capability[capability]

    def get(self, session_id: str) -> AgentSession | None:
        return self._by_session.get(session_id)

    def by_instance(self, instance_id: str) -> AgentSession | None:
        return self._by_instance.get(instance_id)

    def capabilities_with_room(self, *, at_most: int | None = None) -> dict[str, int]:
        """capability -> free slots summed over active sessions that serve it.

        With `at_most`, counting stops there: a caller that takes at most that many needs no exact figure,
        and with thousands of idle sessions the exact sum is a walk over all of them.
        """
        room: dict[str, int] = {}
        for capability, members in self._by_capability.items():
            free = 0
            for session in members.values():
                free += session.free_slots
                if at_most is not None and free >= at_most:
                    free = at_most
                    break
            if free:
                room[capability] = free
        return room

    def capabilities(self) -> frozenset[str]:
        """The capabilities the registered sessions (in whatever state) serve."""
        return frozenset(self._by_capability)

    def capability_count(self) -> int:
        """How many capabilities the registered sessions serve."""
        return len(self._by_capability)

    def candidates(self, capability: str) -> list[AgentSession]:
        """Active sessions serving `capability` (with or without free slots)."""
        members = self._by_capability.get(capability)
        if not members:
            return []
        return [s for s in members.values() if s.state is SessionState.ACTIVE]
