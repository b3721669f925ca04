"""Placement strategies: pick a session for a task among those that can serve it."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Mapping

from controlplane.domain.agents import RemoteInstance
from controlplane.domain.scheduling import Strategy
from controlplane.link.session import AgentSession
from controlplane.store.tasks import QueuedTask


def matches(session: AgentSession, task: QueuedTask) -> bool:
    """Capability is implied by the candidate list; check agent name and label selector."""
    return _selects(task, session.registration.agent_name, session.registration.labels)


def _selects(task: QueuedTask, agent_name: str, labels: Mapping[str, str]) -> bool:
    if task.agent_name and agent_name != task.agent_name:
        return False
    return all(labels.get(key) == value for key, value in task.label_selector.items())


def _rendezvous_score(key: str, instance_id: str) -> int:
    digest = hashlib.blake2b(f"{key}\x00{instance_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Placer:
    """Chooses sessions; keeps the little state round-robin needs."""

    def __init__(self, default: Strategy, rng: random.Random | None = None) -> None:
        self.default = default
        self._rng = rng or random.Random()
        self._turn: dict[str, int] = defaultdict(int)

    def is_sticky(self, task: QueuedTask) -> bool:
        """Placed by consistent hashing on its routing key (the owner may be on another replica)."""
        return (task.strategy or self.default) is Strategy.CONSISTENT_HASH and bool(task.routing_key)

    def choose(
        self,
        task: QueuedTask,
        candidates: list[AgentSession],
        memo: dict[tuple[object, ...], list[AgentSession]] | None = None,
        remote: list[RemoteInstance] | None = None,
    ) -> AgentSession | None:
        """The session to run `task`, or None if it must wait (no match, no room, its sticky owner is full,
        or its sticky owner is an instance on another replica: `remote`, the instances there).

        `memo` (one per dispatch round) keeps the matching sessions of each kind of task, so a batch of
        alike tasks filters the candidates once.
        """
        if memo is None:
            eligible = [s for s in candidates if matches(s, task)]
        else:
            key = (task.capability, task.agent_name, tuple(sorted(task.label_selector.items())))
            found = memo.get(key)
            if found is None:
                found = memo[key] = [s for s in candidates if matches(s, task)]
            eligible = found
        if not eligible:
            return None
        strategy = task.strategy or self.default
        if strategy is Strategy.CONSISTENT_HASH and task.routing_key:
            # Sticky: the same key goes to the same instance while it lives, even if that means waiting —
            # for room, or for the replica the instance is connected to.
            routing_key = task.routing_key
            best, owner = max(
                ((_rendezvous_score(routing_key, s.instance_id), s) for s in eligible), key=lambda pair: pair[0]
            )
            local = {s.instance_id for s in eligible}
            for instance in remote or ():
                if (
                    instance.instance_id not in local
                    and _rendezvous_score(routing_key, instance.instance_id) > best
                    and _selects(task, instance.agent_name, instance.labels)
                ):
                    return None
            return owner if owner.free_slots else None
        with_room = [s for s in eligible if s.free_slots]
        if not with_room:
            return None
        if strategy is Strategy.ROUND_ROBIN:
            with_room.sort(key=lambda s: s.instance_id)
            turn = self._turn[task.capability]
            self._turn[task.capability] = turn + 1
            return with_room[turn % len(with_room)]
        if strategy is Strategy.WEIGHTED:
            return self._rng.choices(with_room, weights=[max(1, s.registration.weight) for s in with_room])[0]
        # LEAST_LOADED (and CONSISTENT_HASH without a key): lowest utilisation, then fewest in flight.
        return min(with_room, key=lambda s: (s.utilisation, len(s.in_flight), self._rng.random()))
