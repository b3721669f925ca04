"""SilenceWatch: sessions silent for a whole lease are found; ones that spoke are looked at again later."""

from __future__ import annotations

import pytest

from controlplane.domain.agents import Capability, Registration
from controlplane.link.session import AgentSession
from controlplane.link.silence import SilenceWatch

pytestmark = pytest.mark.timeout(10)

LEASE = 10.0


def _session(name: str, last_seen: float) -> AgentSession:
    registration = Registration("worker", "1", name, (Capability("cap.a"),), {}, max_concurrency=1)
    session = AgentSession(f"session-{name}", registration, replica_id="r1")
    session.last_seen = last_seen
    return session


def test_a_session_is_silent_only_after_a_whole_lease_without_a_word() -> None:
    watch = SilenceWatch(LEASE)
    quiet, chatty = _session("quiet", 100.0), _session("chatty", 100.0)
    watch.watch(quiet)
    watch.watch(chatty)

    assert watch.silent(105.0) == []
    chatty.last_seen = 108.0  # it spoke
    assert watch.silent(110.5) == [quiet]
    assert watch.silent(117.0) == [], "a lease after it spoke has not passed yet"
    assert watch.silent(118.5) == [chatty]


def test_closed_sessions_are_forgotten_and_found_ones_are_not_reported_twice() -> None:
    watch = SilenceWatch(LEASE)
    closed, silent = _session("closed", 0.0), _session("silent", 0.0)
    watch.watch(closed)
    watch.watch(silent)
    closed.close("replaced")

    assert watch.silent(11.0) == [silent]
    assert watch.silent(50.0) == []
    assert len(watch) == 0


def test_many_sessions_are_looked_at_only_when_their_lease_could_have_run_out() -> None:
    watch = SilenceWatch(LEASE)
    sessions = [_session(f"s{i}", float(i)) for i in range(1000)]
    for session in sessions:
        watch.watch(session)
    assert watch.silent(10.5) == [sessions[0]]
    assert [s.instance_id for s in watch.silent(20.5)] == [f"s{i}" for i in range(1, 11)]
    assert len(watch) == 1000 - 11
