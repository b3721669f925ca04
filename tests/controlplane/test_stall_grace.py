"""A control plane whose own event loop stalled (paused, frozen, blocked) does not blame its agents for it.

The agents that keep beating run on threads of their own (sync gRPC), as real agents run in their own
processes: they go on beating while the plane is paused (a `meshplane up` process, SIGSTOP) or while the test
blocks the event loop it shares with an in-process plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from controlplane.app import ControlPlane
from controlplane.link.session import SessionState
from controlplane.stall_grace import StallGrace
from meshplane.v1 import agent_link_pb2 as al
from meshplane.v1 import agent_link_pb2_grpc, common_pb2, task_pb2
from tests.cli.conftest import cli_env, start_mesh
from tests.controlplane.helpers import submit
from tests.controlplane.test_lifecycle import retry, seconds, wait_state
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent, json_payload

pytestmark = pytest.mark.timeout(60)

STALL = 3.0  # seconds the plane's loop is blocked: twice the test plane's 1.5 s lease, three task heartbeat timeouts


class ThreadedAgent:
    """A raw agent-link client on its own threads: it heartbeats its session and its attempts every
    `beat_every` seconds whatever the test's event loop is doing."""

    def __init__(
        self,
        address: str,
        *,
        beat_every: float,
        capability: str,
        instance_id: str = "",
        held: tuple[al.Assignment, ...] = (),
    ) -> None:
        self.capability = capability
        self.instance_id = instance_id or f"steady-{uuid.uuid4().hex[:8]}"
        self.held = held  # attempts it says it still runs when it registers (a reconnect's)
        self.assignments: list[al.Assignment] = list(held)
        self.cancellations: list[al.Cancellation] = []
        self.acks: list[tuple[str, int]] = []
        self.registered = threading.Event()
        self.ended = threading.Event()
        self.end_code: grpc.StatusCode | None = None
        self._beat_every = beat_every
        self._frames: queue.SimpleQueue[al.ConnectRequest | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._channel = grpc.insecure_channel(address)
        self._threads: list[threading.Thread] = []
        self._call: grpc.Future | None = None

    def start(self) -> None:
        self._frames.put(self._register_frame())
        stub = agent_link_pb2_grpc.AgentLinkServiceStub(self._channel)
        call = self._call = stub.Connect(iter(self._frames.get, None))
        for target in (lambda: self._receive(call), self._beat):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _register_frame(self) -> al.ConnectRequest:
        return al.ConnectRequest(
            register=al.Register(
                agent_name="steady",
                agent_version="1.0.0",
                instance_id=self.instance_id,
                capabilities=[common_pb2.Capability(name=self.capability)],
                max_concurrency=1,
                sdk=common_pb2.SdkInfo(language="test", version="0"),
                held_tasks=[al.TaskRef(task_id=a.task_id, attempt=a.attempt) for a in self.held],
            )
        )

    def _receive(self, call: grpc.Call) -> None:
        try:
            for frame in call:
                kind = frame.WhichOneof("frame")
                if kind == "registered":
                    self.registered.set()
                elif kind == "assignments":
                    self.assignments.extend(frame.assignments.assignments)
                elif kind == "cancellations":
                    self.cancellations.extend(frame.cancellations.cancellations)
                elif kind == "result_acks":
                    self.acks.extend((t.task_id, t.attempt) for t in frame.result_acks.tasks)
            self.end_code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            self.end_code = exc.code()
        finally:
            self.ended.set()

    def _beat(self) -> None:
        while not self._stop.wait(self._beat_every):
            self._frames.put(al.ConnectRequest(heartbeat=al.Heartbeat(in_flight=len(self.assignments), load=0.1)))
            beats = [
                al.TaskUpdate(task_id=a.task_id, attempt=a.attempt, kind=al.TASK_UPDATE_KIND_HEARTBEAT)
                for a in list(self.assignments)
            ]
            if beats:
                self._frames.put(al.ConnectRequest(task_updates=al.TaskUpdates(updates=beats)))

    def started(self, assignment: al.Assignment) -> None:
        update = al.TaskUpdate(task_id=assignment.task_id, attempt=assignment.attempt, kind=al.TASK_UPDATE_KIND_STARTED)
        self._frames.put(al.ConnectRequest(task_updates=al.TaskUpdates(updates=[update])))

    def succeed(self, assignment: al.Assignment) -> None:
        result = al.TaskResult(task_id=assignment.task_id, attempt=assignment.attempt, output=json_payload("done"))
        self._frames.put(al.ConnectRequest(task_results=al.TaskResults(results=[result])))

    def break_stream(self) -> None:
        """The connection drops (no half-close): the plane sees the stream end and keeps the lease running."""
        self._stop.set()
        assert self._call is not None
        self._call.cancel()

    def close(self) -> None:
        self._stop.set()
        self._frames.put(None)  # half-close: the plane ends the stream
        self.ended.wait(5)
        self._channel.close()
        for thread in self._threads:
            thread.join(5)


@contextlib.asynccontextmanager
async def threaded_agent(
    address: str, *, beat_every: float = 0.2, capability: str = "demo.echo"
) -> AsyncIterator[ThreadedAgent]:
    agent = ThreadedAgent(address, beat_every=beat_every, capability=capability)
    agent.start()
    try:
        yield agent
    finally:
        await asyncio.to_thread(agent.close)  # off the loop: the plane in it ends the stream


def _session_state(plane: ControlPlane, instance_id: str) -> SessionState | None:
    session = plane.registry.by_instance(instance_id)
    return None if session is None else session.state


async def _running_attempt(channel: grpc.aio.Channel, agent: ThreadedAgent) -> tuple[str, al.Assignment]:
    """A task with a 1 s heartbeat timeout (shorter than the stall), started on `agent`, which beats it."""
    task = await submit(channel, retry_policy=retry(1), timeouts=task_pb2.TaskTimeouts(heartbeat=seconds(1.0)))
    await eventually(lambda: agent.assignments, message="the task assigned")
    [assignment] = agent.assignments
    agent.started(assignment)
    await wait_state(channel, task.id, task_pb2.TASK_STATE_RUNNING)
    return task.id, assignment


async def _kept_its_attempt(channel: grpc.aio.Channel, agent: ThreadedAgent, task_id: str) -> None:
    """The agent is still connected, and its result for its one attempt is taken (not a stale attempt's)."""
    assert not agent.ended.is_set(), f"the beating agent's stream ended ({agent.end_code})"
    agent.succeed(agent.assignments[0])
    done = await wait_state(channel, task_id, task_pb2.TASK_STATE_SUCCEEDED)
    assert len(done.attempts) == 1, f"its attempt was kept, not timed out: {done.attempts}"
    assert agent.cancellations == []
    await eventually(lambda: agent.acks == [(task_id, 1)], message="the result acknowledged")


async def test_a_paused_plane_keeps_the_sessions_and_attempts_of_agents_that_kept_beating(tmp_path: Path) -> None:
    """SIGSTOP, then SIGCONT, a `meshplane up` process: the sweep would run before the heartbeats that waited
    in the sockets are read (gRPC's own threads were stopped too), and close every session."""
    env = cli_env(
        MESHPLANE_GATEWAY_BIN=str(tmp_path / "no-gateway"),
        MESHPLANE_HEARTBEAT_INTERVAL="0.2s",
        MESHPLANE_LEASE_TIMEOUT="1.5s",
        MESHPLANE_SWEEP_INTERVAL="0.05s",
    )
    mesh = start_mesh(tmp_path / "mesh", env=env, demo=False)
    try:
        async with (
            grpc.aio.insecure_channel(mesh.address) as channel,
            threaded_agent(mesh.address) as steady,
            threaded_agent(mesh.address, capability="idle.only") as idle,
        ):
            await eventually(lambda: steady.registered.is_set() and idle.registered.is_set(), message="registered")
            task_id, _ = await _running_attempt(channel, steady)
            # A witness that silence was judged after the pause: a session that really is silent.
            silent = LinkAgent(mesh.address, name="silent", heartbeat=False)
            await silent.connect()

            mesh.process.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(STALL)  # the length of the pause, not a wait for the plane
            finally:
                mesh.process.send_signal(signal.SIGCONT)

            await eventually(silent.ended.is_set, message="the really silent session closed after the pause")
            assert not idle.ended.is_set(), f"the idle agent's stream ended ({idle.end_code})"
            await _kept_its_attempt(channel, steady, task_id)
            await silent.kill()
    finally:
        mesh.stop()
    stalls = [line for line in mesh.log.read_text().splitlines() if "event loop was stalled for " in line]
    # (One line per stall; a busy test machine may add one for a lag of its own over the test's 0.2s tolerance.)
    assert stalls, "the pause was logged"
    assert "silence checks of agent sessions and task heartbeats restart from now" in stalls[0]


async def test_a_blocked_loop_keeps_the_attempts_of_agents_that_kept_beating(
    sqlite_plane: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    """A long blocking call on the plane's event loop (the test's): gRPC's own threads go on receiving, and
    each session's first waiting frame is read before the sweep, but the attempts' heartbeats after it."""
    plane = sqlite_plane
    caplog.set_level(logging.WARNING, logger="controlplane.scheduling.sweeper")
    async with (
        grpc.aio.insecure_channel(plane.address) as channel,
        threaded_agent(plane.address) as steady,
    ):
        await eventually(steady.registered.is_set, message="the steady agent registered")
        task_id, _ = await _running_attempt(channel, steady)
        silent = LinkAgent(plane.address, name="silent", heartbeat=False)  # the witness, as above
        await silent.connect()

        time.sleep(STALL)  # blocks the loop the plane runs on

        await eventually(
            lambda: _session_state(plane, silent.instance_id) in (None, SessionState.CLOSED),
            message="the really silent session closed after the stall",
        )
        assert _session_state(plane, steady.instance_id) is SessionState.ACTIVE
        await _kept_its_attempt(channel, steady, task_id)
        await silent.kill()
    stalls = [r.getMessage() for r in caplog.records if "event loop was stalled for " in r.getMessage()]
    assert stalls and stalls[0].startswith("the control plane's event loop was stalled for "), stalls


async def test_an_agent_reconnecting_during_a_stall_keeps_its_task(sqlite_plane: ControlPlane) -> None:
    """The stream breaks, then the plane's loop stalls past the closed session's lease while the agent reconnects
    to keep its task: its registration waits unread until the loop runs again, and the lease, run out during the
    stall, must not take the task back before it is read."""
    plane = sqlite_plane
    async with grpc.aio.insecure_channel(plane.address) as channel:
        first = ThreadedAgent(plane.address, beat_every=0.2, capability="demo.echo")
        first.start()
        try:
            await eventually(first.registered.is_set, message="registered")
            task_id, assignment = await _running_attempt(channel, first)
            first.break_stream()
            await eventually(
                lambda: _session_state(plane, first.instance_id) in (None, SessionState.CLOSED),
                message="the broken stream's session closed",
            )
        finally:
            await asyncio.to_thread(first.close)
        again = ThreadedAgent(
            plane.address, beat_every=0.2, capability="demo.echo", instance_id=first.instance_id, held=(assignment,)
        )
        reconnect = threading.Timer(0.3, again.start)  # during the stall, from a thread of its own
        reconnect.start()
        try:
            time.sleep(STALL)  # blocks the loop the plane runs on; the lease (1.5 s) runs out meanwhile

            await eventually(again.registered.is_set, message="the reconnect registered")
            await _kept_its_attempt(channel, again, task_id)
        finally:
            reconnect.join()
            await asyncio.to_thread(again.close)


async def test_a_stall_while_the_sweep_awaits_the_database_is_noticed_too(
    sqlite_plane: ControlPlane, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep measures only its own sleeps; a stall that comes while a sweep is under way (its steps await
    the database) is noticed by the sweeper's other timer."""
    plane = sqlite_plane
    caplog.set_level(logging.WARNING, logger="controlplane.scheduling.sweeper")
    sweeping, carry_on = asyncio.Event(), asyncio.Event()
    sweep_once = plane.sweeper.sweep_once

    async def a_long_sweep() -> None:
        sweeping.set()
        await carry_on.wait()  # as a sweep step awaiting the database would
        await sweep_once()

    monkeypatch.setattr(plane.sweeper, "sweep_once", a_long_sweep)
    await asyncio.wait_for(sweeping.wait(), 10)
    time.sleep(1.0)  # blocks the loop the plane runs on, five heartbeat intervals, mid-sweep
    await eventually(
        lambda: any("event loop was stalled for " in r.getMessage() for r in caplog.records),
        message="the stall noticed",
    )
    carry_on.set()


async def test_a_really_silent_session_is_still_closed_after_the_grace(sqlite_plane: ControlPlane) -> None:
    plane = sqlite_plane
    async with grpc.aio.insecure_channel(plane.address) as channel:
        silent = LinkAgent(plane.address, name="silent", heartbeat=False)
        await silent.connect()
        task = await submit(channel, retry_policy=retry(3))
        await silent.started(await silent.next_assignment())
        await wait_state(channel, task.id, task_pb2.TASK_STATE_RUNNING)

        time.sleep(STALL)  # blocks the loop the plane runs on

        await eventually(silent.ended.is_set, message="the silent session closed after the stall")
        assert silent.end_code == grpc.StatusCode.UNAVAILABLE
        requeued = await wait_state(channel, task.id, task_pb2.TASK_STATE_QUEUED)
        assert requeued.attempts[0].outcome == task_pb2.ATTEMPT_OUTCOME_LOST
        assert requeued.attempts[0].error.code == "lease_expired"
        await silent.kill()


# ------------------------------------------------------------ the rule, with numbers for the clock

INTERVAL, HEARTBEAT = 1.0, 5.0


def _grace() -> StallGrace:
    return StallGrace(tolerance=HEARTBEAT, grace=HEARTBEAT)


def test_a_sweep_that_wakes_about_on_time_is_no_stall() -> None:
    grace = _grace()
    assert grace.woke(asleep_since=100.0, interval=INTERVAL, now=101.0 + HEARTBEAT) == 0.0
    assert grace.may_judge(106.0)


def test_after_a_stall_silence_is_judged_only_a_grace_after_the_resume() -> None:
    grace = _grace()
    assert grace.woke(asleep_since=100.0, interval=INTERVAL, now=131.0) == pytest.approx(30.0)
    assert not grace.may_judge(131.0)
    assert not grace.may_judge(131.0 + HEARTBEAT - 0.1)
    assert grace.may_judge(131.0 + HEARTBEAT)


def test_a_second_stall_within_the_grace_restarts_it() -> None:
    grace = _grace()
    grace.woke(asleep_since=100.0, interval=INTERVAL, now=131.0)
    assert grace.woke(asleep_since=132.0, interval=INTERVAL, now=140.0) == pytest.approx(7.0)
    assert not grace.may_judge(144.0)
    assert grace.may_judge(145.0)
