"""Which sessions have been silent for a whole lease, without walking every session on every sweep.

Each session is looked at when its lease could first run out; if it spoke since, it is looked at again a
lease after it last spoke. With thousands of sessions heartbeating, a sweep touches only the few whose
time has come (walking all of them every second was a steady share of an idle plane's CPU).
"""

from __future__ import annotations

import heapq
import itertools

from controlplane.link.session import AgentSession, SessionState


class SilenceWatch:
    def __init__(self, lease_timeout: float) -> None:
        self._lease = lease_timeout
        self._due: list[tuple[float, int, AgentSession]] = []  # (when to look, tie-breaker, session)
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._due)

    def watch(self, session: AgentSession) -> None:
        heapq.heappush(self._due, (session.last_seen + self._lease, next(self._order), session))

    def silent(self, now: float) -> list[AgentSession]:
        """Open sessions whose last sign of life (monotonic `last_seen`) is more than a lease before `now`."""
        found: list[AgentSession] = []
        while self._due and self._due[0][0] < now:
            _, _, session = heapq.heappop(self._due)
            if session.state is SessionState.CLOSED:
                continue  # forgotten: its stream handler cleans up
            expires = session.last_seen + self._lease
            if expires < now:
                found.append(session)
            else:
                heapq.heappush(self._due, (expires, next(self._order), session))
        return found
