"""The conformance scenarios of tests/conformance/CONTRACT.md, run once per SDK language.

Each scenario starts a real control plane (SQLite + embedded NATS, fast test clocks), launches the
language's conformance agent as a subprocess, and drives it through the control plane's public gRPC
API. A language without a launcher (or without its toolchain) is skipped locally and fails under
``CI=true``.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from google.protobuf import duration_pb2

from controlplane.app import ControlPlane
from meshplane.v1 import agent_pb2, task_pb2
from tests.conformance.driver import CAPABILITIES, AgentProcess, Agents, Launcher, Mesh, describe, output
from tests.support.eventually import eventually
from tests.support.link_agent import payload_value
from tests.support.plane import running_plane

SUCCEEDED = task_pb2.TASK_STATE_SUCCEEDED
RUNNING = task_pb2.TASK_STATE_RUNNING


def assert_succeeded(task: task_pb2.Task) -> None:
    assert task.state == SUCCEEDED, describe(task)


async def wait_running(mesh: Mesh, task_id: str) -> None:
    await eventually(
        lambda: _is_running(mesh, task_id), timeout=15, message=f"task {task_id} RUNNING (the agent sent STARTED)"
    )


async def _is_running(mesh: Mesh, task_id: str) -> bool:
    return await mesh.state_of(task_id) == RUNNING


@pytest.mark.timeout(60)
async def test_echo(language: str, plane: ControlPlane, mesh: Mesh, agents: Agents) -> None:
    agent = await agents.start(plane.address)

    data = {"text": "héllo ✓", "n": 42, "x": 1.5, "list": [1, "two", None, True], "nested": {"a": {"b": []}}}
    task = await mesh.run("conf.echo", data)
    assert_succeeded(task)
    assert output(task) == data
    assert task.attempts[-1].agent_instance_id == agent.instance_id

    who = await mesh.run("conf.whoami", {})
    assert_succeeded(who)
    assert output(who) == {"language": language, "instance_id": agent.instance_id, "attempt": 1, "task_id": who.id}

    instance = await mesh.instance(agent.name, agent.instance_id)
    assert instance is not None
    assert instance.status == agent_pb2.AGENT_INSTANCE_STATUS_CONNECTED
    assert instance.sdk.language == language
    assert instance.labels["lang"] == language
    assert instance.max_concurrency == 4
    assert set(instance.capabilities) >= CAPABILITIES


@pytest.mark.timeout(60)
async def test_progress_events_are_visible_through_watch(plane: ControlPlane, mesh: Mesh, agents: Agents) -> None:
    await agents.start(plane.address)

    task = await mesh.submit("conf.progress", {"steps": 3})
    events = await mesh.events(task.id)
    final = await mesh.get(task.id)
    assert_succeeded(final)
    assert output(final) == {"steps": 3}

    progress = [(round(e.progress, 3), e.message) for e in events if e.type == task_pb2.TASK_EVENT_TYPE_PROGRESS]
    assert progress == [(0.333, "step 1"), (0.667, "step 2"), (1.0, "step 3")], events
    kinds = [task_pb2.TaskEventType.Name(e.type) for e in events]
    assert kinds.index("TASK_EVENT_TYPE_STARTED") < kinds.index("TASK_EVENT_TYPE_PROGRESS"), kinds
    assert kinds[-1] == "TASK_EVENT_TYPE_SUCCEEDED", kinds


@pytest.mark.timeout(60)
async def test_retryable_failure_is_retried_until_it_succeeds(plane: ControlPlane, mesh: Mesh, agents: Agents) -> None:
    await agents.start(plane.address)

    task = await mesh.run("conf.flaky", {"fail_times": 2}, max_attempts=3)
    assert_succeeded(task)
    assert task.attempt == 3
    assert output(task) == {"attempt": 3}
    outcomes = [task_pb2.AttemptOutcome.Name(a.outcome) for a in task.attempts]
    assert outcomes == ["ATTEMPT_OUTCOME_FAILED", "ATTEMPT_OUTCOME_FAILED", "ATTEMPT_OUTCOME_SUCCEEDED"], describe(task)
    for failed in task.attempts[:2]:
        assert failed.error.code == "Flaky", describe(task)
        assert failed.error.retryable, describe(task)


@pytest.mark.timeout(60)
async def test_non_retryable_failure_fails_at_once(plane: ControlPlane, mesh: Mesh, agents: Agents) -> None:
    await agents.start(plane.address)

    task = await mesh.run("conf.fatal", {}, max_attempts=3)
    assert task.state == task_pb2.TASK_STATE_FAILED, describe(task)
    assert task.attempt == 1, describe(task)
    assert len(task.attempts) == 1, describe(task)
    assert (task.error.code, task.error.message, task.error.retryable) == ("Fatal", "fatal", False), describe(task)


@pytest.mark.timeout(60)
async def test_cancelling_a_running_task_frees_the_agents_slot(plane: ControlPlane, mesh: Mesh, agents: Agents) -> None:
    # One slot: the follow-up task can only run once the agent answered the cancelled attempt.
    await agents.start(plane.address, max_concurrency=1)

    task = await mesh.submit("conf.sleep", {"seconds": 30})
    await wait_running(mesh, task.id)
    await mesh.cancel(task.id)
    cancelled = await mesh.wait_terminal(task.id, timeout=10)
    assert cancelled.state == task_pb2.TASK_STATE_CANCELLED, describe(cancelled)

    echo = await mesh.run("conf.echo", {"after": "cancel"}, timeout=10)
    assert_succeeded(echo)
    assert output(echo) == {"after": "cancel"}


@pytest.mark.timeout(60)
async def test_the_cancel_reason_reaches_the_handler(plane: ControlPlane, mesh: Mesh, agents: Agents) -> None:
    await agents.start(plane.address)
    channel = f"conf.cancelled.{uuid.uuid4().hex[:12]}"
    async with mesh.subscription(channel) as seen:
        # A client's cancel: the handler sees the code "cancelled" and the client's words.
        cancelled = await mesh.submit("conf.await_cancel", {"channel": channel, "seconds": 30})
        await wait_running(mesh, cancelled.id)
        await mesh.cancel(cancelled.id, reason="operator says stop")
        await eventually(lambda: seen.messages, timeout=10, message="the cancelled handler's report")
        final = await mesh.wait_terminal(cancelled.id, timeout=10)
        assert final.state == task_pb2.TASK_STATE_CANCELLED, describe(final)
        assert final.cancel_reason == "operator says stop", describe(final)

        # The plane's own cancel (a heartbeat timeout, the handler sending none): a code, no message.
        heartbeat = duration_pb2.Duration(seconds=1)
        timed_out = await mesh.submit(
            "conf.await_cancel",
            {"channel": channel, "seconds": 30},
            max_attempts=1,
            timeouts=task_pb2.TaskTimeouts(heartbeat=heartbeat),
        )
        await eventually(lambda: len(seen.messages) >= 2, timeout=15, message="the timed-out handler's report")
        final = await mesh.wait_terminal(timed_out.id, timeout=10)
        assert final.attempts[0].outcome == task_pb2.ATTEMPT_OUTCOME_TIMED_OUT, describe(final)

    assert seen.values() == [
        {"task_id": cancelled.id, "attempt": 1, "reason": "cancelled", "message": "operator says stop"},
        {"task_id": timed_out.id, "attempt": 1, "reason": "timed_out", "message": ""},
    ]


@pytest.mark.timeout(120)
async def test_control_plane_restart_with_a_task_in_flight_loses_nothing(
    launcher: Launcher, agents: Agents, tmp_path: Path
) -> None:
    data_dir = tmp_path / "plane"
    async with running_plane(data_dir) as first:
        address = first.address
        agent = await agents.start(address)
        async with Mesh(address) as mesh:
            task = await mesh.submit("conf.sleep", {"seconds": 3})
            await wait_running(mesh, task.id)
    # The plane is gone while the task runs; it comes back on the same address and data.
    async with running_plane(data_dir, listen=address), Mesh(address) as mesh:
        final = await mesh.wait_terminal(task.id, timeout=60)
        assert_succeeded(final)
        assert output(final) == {"slept": 3}

        async def reconnected() -> bool:
            instance = await mesh.instance(agent.name, agent.instance_id)
            return instance is not None and instance.status == agent_pb2.AGENT_INSTANCE_STATUS_CONNECTED

        await eventually(reconnected, timeout=30, message="the agent reconnected to the restarted plane")
        assert agent.returncode is None, agent.describe()

        try:
            echo = await mesh.run("conf.echo", {"after": "restart"})
            assert_succeeded(echo)
            # Subscriptions are restored on the new session too.
            await assert_broadcast_round_trip(mesh, agent.instance_id, agent.language)
        finally:
            await agents.close()
            await mesh.wait_all_disconnected()


@pytest.mark.timeout(60)
async def test_drain_finishes_in_flight_work_then_reconnects(plane: ControlPlane, mesh: Mesh, agents: Agents) -> None:
    agent = await agents.start(plane.address)
    before = await mesh.instance(agent.name, agent.instance_id)
    assert before is not None
    old_session = before.session_id

    task = await mesh.submit("conf.sleep", {"seconds": 2})
    await wait_running(mesh, task.id)
    await mesh.drain(agent.name, agent.instance_id, timeout=20)

    final = await mesh.wait_terminal(task.id)
    assert_succeeded(final)
    assert final.attempt == 1, describe(final)  # finished on the draining session, not re-run
    assert final.attempts[0].session_id == old_session

    async def new_session() -> str:
        instance = await mesh.instance(agent.name, agent.instance_id)
        connected = instance is not None and instance.status == agent_pb2.AGENT_INSTANCE_STATUS_CONNECTED
        return instance.session_id if connected and instance.session_id != old_session else ""

    session = await eventually(new_session, timeout=20, message="the agent reconnected with a new session")
    echo = await mesh.run("conf.echo", {"after": "drain"})
    assert_succeeded(echo)
    assert echo.attempts[-1].session_id == session
    assert agent.returncode is None, agent.describe()


@pytest.mark.timeout(60)
async def test_sigterm_finishes_in_flight_work_and_exits_cleanly(
    plane: ControlPlane, mesh: Mesh, agents: Agents
) -> None:
    agent = await agents.start(plane.address)
    task = await mesh.submit("conf.sleep", {"seconds": 2})
    await wait_running(mesh, task.id)

    agent.terminate()

    async def draining() -> bool:
        instance = await mesh.instance(agent.name, agent.instance_id)
        return instance is not None and instance.status == agent_pb2.AGENT_INSTANCE_STATUS_DRAINING

    await eventually(draining, timeout=10, message="the agent told the plane it is draining")
    late = await mesh.submit("conf.echo", {"late": True})  # must not be given to a draining agent

    final = await mesh.wait_terminal(task.id)
    assert_succeeded(final)
    assert final.attempt == 1, describe(final)
    assert output(final) == {"slept": 2}

    code = await agent.wait_exit()
    assert code == 0, agent.describe()
    assert agent.stdout_lines[-1:] == ["STOPPED"], agent.describe()
    late_task = await mesh.get(late.id)
    assert late_task.state == task_pb2.TASK_STATE_QUEUED, describe(late_task)


async def assert_handed_back_and_run_elsewhere(mesh: Mesh, task_id: str, stopped: AgentProcess, other: str) -> None:
    """The stopped agent answered the attempt with `agent_stopped` (retryable), so the plane re-queued the task at
    once (an agent that vanished instead would show `lease_expired`), and the other agent ran it."""
    final = await mesh.wait_terminal(task_id, timeout=20)
    assert_succeeded(final)
    first, second = final.attempts
    assert first.agent_instance_id == stopped.instance_id, describe(final)
    assert first.outcome == task_pb2.ATTEMPT_OUTCOME_FAILED, describe(final)
    assert (first.error.code, first.error.retryable) == ("agent_stopped", True), describe(final)
    assert second.agent_instance_id == other, describe(final)
    assert output(final) == {"attempt": 2}
    code = await stopped.wait_exit()
    assert code == 0 and stopped.stdout_lines[-1:] == ["STOPPED"], stopped.describe()


async def start_on_one_agent_then_another(
    mesh: Mesh, agents: Agents, flags: list[str]
) -> tuple[AgentProcess, str, str]:
    """An agent (given `flags`) running a `conf.sleep_first` of 30 s, then a second agent; (the first, the task's id,
    the second's instance id)."""
    first = await agents.start(mesh.address, max_concurrency=1, flags=flags)
    task = await mesh.submit("conf.sleep_first", {"seconds": 30}, max_attempts=2)
    await wait_running(mesh, task.id)
    second = await agents.start(mesh.address)
    return first, task.id, second.instance_id


@pytest.mark.timeout(60)
async def test_a_task_still_running_when_the_drain_timeout_passes_is_handed_back_and_run_elsewhere(
    plane: ControlPlane, mesh: Mesh, agents: Agents
) -> None:
    stopped, task_id, other = await start_on_one_agent_then_another(mesh, agents, ["--drain-timeout", "1"])
    stopped.terminate()
    await assert_handed_back_and_run_elsewhere(mesh, task_id, stopped, other)


@pytest.mark.timeout(60)
async def test_a_hard_stop_hands_the_running_task_back_and_another_agent_runs_it(
    plane: ControlPlane, mesh: Mesh, agents: Agents
) -> None:
    stopped, task_id, other = await start_on_one_agent_then_another(mesh, agents, [])
    stopped.terminate()  # a drain, of 30 s

    async def draining() -> bool:
        instance = await mesh.instance(stopped.name, stopped.instance_id)
        return instance is not None and instance.status == agent_pb2.AGENT_INSTANCE_STATUS_DRAINING

    await eventually(draining, timeout=10, message="the agent told the plane it is draining")
    stopped.terminate()  # the second signal: stop at once
    await assert_handed_back_and_run_elsewhere(mesh, task_id, stopped, other)


@pytest.mark.timeout(60)
async def test_max_concurrency_is_respected(plane: ControlPlane, mesh: Mesh, agents: Agents) -> None:
    agent = await agents.start(plane.address, max_concurrency=2)

    tasks = [await mesh.submit("conf.concurrency", {"hold": 0.5}) for _ in range(6)]
    finals = await asyncio.gather(*(mesh.wait_terminal(t.id) for t in tasks))
    for final in finals:
        assert_succeeded(final)
    peaks = [output(final)["peak"] for final in finals]
    assert max(peaks) == 2, peaks
    instance = await mesh.instance(agent.name, agent.instance_id)
    assert instance is not None and instance.max_concurrency == 2


async def assert_broadcast_round_trip(mesh: Mesh, instance_id: str, language: str) -> None:
    """Publish on conf.broadcast until the agent's echo arrives on conf.received (at-most-once delivery)."""
    message = {"hello": "agents", "nonce": uuid.uuid4().hex}
    expected = {"instance_id": instance_id, "language": language, "message": message}
    async with mesh.subscription("conf.received") as received:

        async def echoed() -> bool:
            if expected in received.values():
                return True
            await mesh.publish("conf.broadcast", message)
            return False

        await eventually(echoed, timeout=15, interval=0.3, message="the agent's conf.received echo")
        echo = next(m for m in received.messages if payload_value(m.payload) == expected)
        assert echo.publisher.endswith(f"/{instance_id}"), echo.publisher


@pytest.mark.timeout(60)
async def test_channel_broadcast_is_received(language: str, plane: ControlPlane, mesh: Mesh, agents: Agents) -> None:
    agent = await agents.start(plane.address)
    await assert_broadcast_round_trip(mesh, agent.instance_id, language)

    # And a task publishes through the SDK.
    channel = f"conf.out.{uuid.uuid4().hex[:12]}"
    data = {"k": [1, 2, {"z": None}], "s": "✓"}
    async with mesh.subscription(channel) as out:
        task = await mesh.run("conf.publish", {"channel": channel, "data": data})
        assert_succeeded(task)
        assert output(task) == {}
        await eventually(lambda: out.messages, timeout=10, message=f"a message on {channel}")
        assert out.values() == [data]
        assert out.messages[0].publisher == f"agent/{agent.name}/{agent.instance_id}"


@pytest.mark.timeout(60)
async def test_state_compare_and_set_conflict(plane: ControlPlane, mesh: Mesh, agents: Agents) -> None:
    agent = await agents.start(plane.address)
    key = f"cas-{uuid.uuid4().hex[:12]}"

    task = await mesh.run("conf.state_cas", {"key": key})
    assert_succeeded(task)
    assert output(task) == {"first_version": 1, "conflict": True, "read_version": 1}

    entry = await mesh.get_state(agent.name, key)  # the agent's namespace is its name
    assert entry.version == 1
    assert payload_value(entry.value) == {"n": 1}
