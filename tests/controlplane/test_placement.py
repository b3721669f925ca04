"""The placer on its own: consistent hashing agrees across replicas that each see only their own sessions
plus the other replicas' instances."""

from __future__ import annotations

from controlplane.domain.agents import Capability, Registration, RemoteInstance
from controlplane.domain.payload import Payload
from controlplane.domain.scheduling import Strategy
from controlplane.link.session import AgentSession, SessionState
from controlplane.scheduling.placement import Placer
from controlplane.store.tasks import QueuedTask

CAP_A = frozenset({"cap.a"})


def _session(instance_id: str, replica_id: str, labels: dict[str, str] | None = None) -> AgentSession:
    registration = Registration("worker", "1", instance_id, (Capability("cap.a"),), labels or {}, max_concurrency=8)
    session = AgentSession(f"s-{instance_id}", registration, replica_id=replica_id)
    session.state = SessionState.ACTIVE
    return session


def _remote(session: AgentSession) -> RemoteInstance:
    registration = session.registration
    return RemoteInstance(
        session.instance_id, session.agent_name, registration.labels, registration.capability_names, session.replica_id
    )


def _task(routing_key: str, label_selector: dict[str, str] | None = None) -> QueuedTask:
    return QueuedTask(
        id="t",
        capability="cap.a",
        agent_name="",
        label_selector=label_selector or {},
        routing_key=routing_key,
        strategy=Strategy.CONSISTENT_HASH,
        priority=0,
        input=Payload(b"{}", "application/json"),
        correlation_id="",
        metadata={},
        traceparent="",
        tracestate="",
        attempt=0,
        max_attempts=3,
        start_to_close=60.0,
        heartbeat_timeout=0.0,
        deadline=None,
        event_seq=1,
        create_time=0.0,
    )


def test_exactly_one_replica_places_each_key_and_always_on_the_same_instance() -> None:
    on_a = [_session("a-1", "A"), _session("a-2", "A")]
    on_b = [_session("b-1", "B")]
    placer_a, placer_b = Placer(Strategy.LEAST_LOADED), Placer(Strategy.LEAST_LOADED)
    owners: dict[str, str] = {}
    for n in range(64):
        task = _task(f"key-{n}")
        by_a = placer_a.choose(task, on_a, remote=[_remote(s) for s in on_b])
        by_b = placer_b.choose(task, on_b, remote=[_remote(s) for s in on_a])
        assert (by_a is None) != (by_b is None), f"key-{n}: exactly one replica owns it"
        owner = by_a or by_b
        assert owner is not None
        owners[task.routing_key] = owner.instance_id
        again = placer_a.choose(task, on_a, remote=[_remote(s) for s in on_b]) or placer_b.choose(
            task, on_b, remote=[_remote(s) for s in on_a]
        )
        assert again is not None and again.instance_id == owner.instance_id
    assert set(owners.values()) == {"a-1", "a-2", "b-1"}, "keys spread over every instance of the cluster"


def test_a_remote_instance_the_task_cannot_use_does_not_hold_it_back() -> None:
    local = [_session("a-1", "A", {"zone": "eu"})]
    remote = [RemoteInstance("b-1", "worker", {"zone": "us"}, CAP_A, "B")]
    placer = Placer(Strategy.LEAST_LOADED)
    for n in range(32):
        assert placer.choose(_task(f"key-{n}", {"zone": "eu"}), local, remote=remote) is local[0]


def test_a_stale_remote_copy_of_a_local_instance_is_ignored() -> None:
    local = [_session("moved-1", "A")]
    stale = [RemoteInstance("moved-1", "worker", {}, CAP_A, "B")]  # the database still has it on B
    placer = Placer(Strategy.LEAST_LOADED)
    for n in range(16):
        assert placer.choose(_task(f"key-{n}"), local, remote=stale) is local[0]
