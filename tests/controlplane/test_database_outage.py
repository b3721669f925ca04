"""The database goes away: clients are told UNAVAILABLE (retry), not INTERNAL; the plane's loops say so in one
line; and once it is back the plane carries on with everything it had accepted, including results agents
sent while it was away. Also a database that turns new connections away, one that is read-only (a standby), and
statements it gives up on (an administrator's lock or statement timeout)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from agent_runtime import Agent, MeshClient, TaskContext, TaskState, Unavailable
from controlplane.app import LIVENESS_SERVICE, ControlPlane
from meshplane.v1 import task_pb2, task_service_pb2
from tests.controlplane.helpers import get_task, output_of, submit, tasks_stub
from tests.gateway.rest_mesh import GatewayProcess
from tests.sdk.conftest import serving, task_state, task_state_is
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane
from tests.support.postgres import PostgresServer, throwaway_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own: it is stopped and started again in the middle."""
    with throwaway_postgres() as server:
        yield server


@contextlib.asynccontextmanager
async def _database_of_role_plane(own_postgres: PostgresServer) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """A database owned by a role `plane` of its own (which the test may then restrict): an administrator's
    connection to it, and the URL the plane logs in with."""
    database = make_url(own_postgres.create_database()).database
    admin = await asyncpg.connect(own_postgres.url(str(database), driver="postgresql"))
    try:
        await admin.execute("CREATE ROLE plane LOGIN")
        await admin.execute(f'ALTER DATABASE "{database}" OWNER TO plane')
        yield admin, own_postgres.url(str(database)).replace(f"//{own_postgres.user}@", "//plane@")
    finally:
        await admin.close()


async def _end_the_planes_sessions(admin: asyncpg.Connection) -> None:
    """An administrator ends the sessions of role `plane` (see _database_of_role_plane)."""
    await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'plane'")
    await eventually(
        lambda: admin.fetchval("SELECT count(*) = 0 FROM pg_stat_activity WHERE usename = 'plane'"),
        message="the plane's sessions ended",
    )


async def _refused(call: Callable[[], Awaitable[Any]]) -> grpc.aio.AioRpcError:
    """The call's error; an AssertionError (which `eventually` retries, unlike pytest.raises' failure, a
    BaseException) if it succeeded."""
    try:
        await call()
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


def _outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "controlplane.scheduling.sweeper"
        and r.levelno == logging.WARNING
        and "skipped: " in r.getMessage()
    ]


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _health_is(channel: grpc.aio.Channel, service: str, status: int) -> bool:
    answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return bool(answer.status == status)


async def _all_succeeded(channel: grpc.aio.Channel, task_ids: list[str]) -> bool:
    states = [(await get_task(channel, task_id)).state for task_id in task_ids]
    return all(state == task_pb2.TASK_STATE_SUCCEEDED for state in states)


async def test_while_the_database_is_down_clients_get_unavailable_and_nothing_accepted_is_lost(
    own_postgres: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, gateway_binary: Path
) -> None:
    caplog.set_level(logging.INFO, logger="controlplane.scheduling")
    async with (
        running_plane(tmp_path, database_url=own_postgres.create_database()) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        gateway = GatewayProcess(gateway_binary, plane.address, tmp_path / "gateway.log").start()
        try:
            await _outage(own_postgres, plane, channel, gateway, caplog)
        finally:
            gateway.stop()


async def _outage(
    own_postgres: PostgresServer,
    plane: ControlPlane,
    channel: grpc.aio.Channel,
    gateway: GatewayProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    accepted = await submit(channel, data={"n": 1})  # queued: no agent yet

    await asyncio.to_thread(own_postgres.halt)
    stub = tasks_stub(channel)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "SubmitTask (hot path)": lambda: submit(channel, data={"n": 2}),
        "GetTask (reader)": lambda: get_task(channel, accepted.id),
        "CancelTask (transaction)": lambda: stub.CancelTask(task_service_pb2.CancelTaskRequest(task_id=accepted.id)),
    }
    for name, call in calls.items():
        for _ in range(2):  # the first finds its pooled connection cut, the second cannot open one
            error = await _refused(call)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, f"{name}: {error.code()} {error.details()}"
            assert "retry" in (error.details() or ""), name

    async with MeshClient(plane.address, timeout=15) as client:  # the SDK (and CLI) say what the plane said
        with pytest.raises(Unavailable) as refused:
            await client.get(accepted.id)
    assert str(refused.value).startswith(f"control plane at {plane.address} is unavailable: "), str(refused.value)
    assert str(refused.value).endswith("; retry")

    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as http:  # REST: 503, the same message
        response = await http.post("/v1/tasks", json={"target": {"capability": "demo.echo"}, "input": {"json": 4}})
    assert response.status_code == 503, response.text
    assert response.json()["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert response.json()["message"].endswith("; retry")

    # The plane's own loops say so in one line when the outage starts, without a traceback, and then keep
    # quiet (for a minute) however many of their steps fail: here two more whole sweeps.
    await eventually(lambda: _outage_lines(caplog), message="the sweeper's one-line warning")
    # Readiness follows the database (clients and new agent connections go to other replicas); liveness does
    # not (a restart would not bring the database back).
    await eventually(lambda: _health_is(channel, "", NOT_SERVING), message="health NOT_SERVING in the outage")
    assert await _health_is(channel, "meshplane.v1.TaskService", NOT_SERVING)
    assert await _health_is(channel, LIVENESS_SERVICE, SERVING)
    assert "meshplane_database_up 0.0" in plane.metrics.render().decode()  # something to alert on
    await plane.sweeper.sweep_once()
    await plane.sweeper.sweep_once()
    [line] = _outage_lines(caplog)
    assert line.startswith("sweep step ") and " skipped: the database connection " in line
    tracebacks = [r.getMessage() for r in caplog.records if r.name.startswith("controlplane.scheduling") and r.exc_info]
    assert tracebacks == []

    await asyncio.to_thread(own_postgres.resume)
    await eventually(
        lambda: any(r.getMessage().startswith("the sweeper works again after ") for r in caplog.records),
        message="the sweeper's line saying the outage is over",
    )
    later = await eventually(lambda: submit(channel, data={"n": 3}), message="a submit once the database is back")
    await eventually(lambda: _health_is(channel, "", SERVING), message="health SERVING once the database is back")
    assert "meshplane_database_up 1.0" in plane.metrics.render().decode()
    assert await _health_is(channel, "meshplane.v1.AgentLinkService", SERVING)
    # The refused cancel changed nothing.
    assert (await get_task(channel, accepted.id)).state == task_pb2.TASK_STATE_QUEUED

    agent = LinkAgent(plane.address, capabilities=["demo.echo"])
    await agent.connect()
    agent.serve_echo()
    try:
        await eventually(lambda: _all_succeeded(channel, [accepted.id, later.id]), message="both tasks ran")
        assert [output_of(await get_task(channel, t.id)) for t in (accepted, later)] == [{"n": 1}, {"n": 3}]
    finally:
        await agent.close()


async def test_a_database_that_turns_new_connections_away_gets_clients_unavailable(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    # The plane logs in as a role of its own, which the test can then refuse connections ("too many
    # connections for role", SQLSTATE 53300) while cutting those it has.
    async with (
        _database_of_role_plane(own_postgres) as (admin, plane_url),
        running_plane(tmp_path, database_url=plane_url) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        accepted = await submit(channel, data={"n": 1})

        await admin.execute("ALTER ROLE plane CONNECTION LIMIT 0")
        await _end_the_planes_sessions(admin)
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "SubmitTask (hot path)": lambda: submit(channel, data={"n": 2}),
            "GetTask (reader)": lambda: get_task(channel, accepted.id),
        }
        for name, call in calls.items():
            for _ in range(2):  # a cut connection first, then a refused one
                error = await _refused(call)
                assert error.code() == grpc.StatusCode.UNAVAILABLE, f"{name}: {error.code()} {error.details()}"
                assert "retry" in (error.details() or ""), name

        await admin.execute("ALTER ROLE plane CONNECTION LIMIT -1")
        later = await eventually(lambda: submit(channel, data={"n": 3}), message="a submit once connections are let in")
        assert (await get_task(channel, accepted.id)).state == task_pb2.TASK_STATE_QUEUED
        assert later.id != accepted.id


async def test_a_database_that_refuses_the_running_planes_login_gets_clients_unavailable(
    own_postgres: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A password rotated or the role locked while the plane runs: its new connections are refused (SQLSTATE
    class 28). Clients are told UNAVAILABLE (retry), not INTERNAL, and the plane logs no traceback per call."""
    caplog.set_level(logging.INFO, logger="controlplane")
    async with (
        _database_of_role_plane(own_postgres) as (admin, plane_url),
        running_plane(tmp_path, database_url=plane_url) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        accepted = await submit(channel, data={"n": 1})

        await admin.execute("ALTER ROLE plane NOLOGIN")
        await _end_the_planes_sessions(admin)
        for _ in range(2):  # a cut connection first, then a refused login
            error = await _refused(lambda: get_task(channel, accepted.id))
            assert error.code() == grpc.StatusCode.UNAVAILABLE, f"{error.code()} {error.details()}"
            assert (error.details() or "").endswith("; retry")
        assert "refuses the plane's login" in (error.details() or "")

        await admin.execute("ALTER ROLE plane LOGIN")
        await eventually(lambda: submit(channel, data={"n": 2}), message="a submit once the login works again")
    tracebacks = [r.getMessage() for r in caplog.records if r.name.startswith("controlplane") and r.exc_info]
    assert tracebacks == []


async def test_results_an_agent_sends_during_an_outage_are_applied_once_it_is_over(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    """The plane cannot persist the result, so it closes the session without acknowledging it; the agent
    reconnects once the database is back, keeps its running task and resends the result: each runs once."""
    gates = {"early": asyncio.Event(), "late": asyncio.Event()}
    runs: collections.Counter[str] = collections.Counter()
    agent = Agent("outlasting", max_concurrency=4, reconnect_max_delay=0.3)

    @agent.task("work.gated")
    async def gated(ctx: TaskContext, data: dict[str, str]) -> dict[str, Any]:
        runs[data["gate"]] += 1
        await gates[data["gate"]].wait()
        return {"gate": data["gate"], "attempt": ctx.attempt}

    # A long lease: nothing is re-queued for want of a session while the database is away.
    database_url = own_postgres.create_database()
    async with (
        running_plane(tmp_path, database_url=database_url, lease_timeout=20) as plane,
        serving(agent, plane.address),
        MeshClient(plane.address) as client,
    ):
        early = await client.submit("work.gated", {"gate": "early"})
        late = await client.submit("work.gated", {"gate": "late"})
        for task in (early, late):
            await eventually(
                lambda t=task: task_state_is(client, t.id, TaskState.RUNNING), message=f"{task.id} running"
            )
        first_session = agent.session_id

        await asyncio.to_thread(own_postgres.halt)
        gates["early"].set()  # its result reaches a plane that cannot write it
        await eventually(lambda: agent.session_id != first_session, message="the plane closed the session")
        assert runs["early"] == 1 and agent.in_flight == 1  # `late` still running, `early`'s result unacknowledged

        await asyncio.to_thread(own_postgres.resume)
        await eventually(lambda: agent.session_id not in (None, first_session), message="the agent reconnected")
        await eventually(lambda: task_state_is(client, early.id, TaskState.SUCCEEDED), message="early's result resent")
        assert await task_state(client, late.id) is TaskState.RUNNING  # kept through the outage, not re-queued
        gates["late"].set()
        assert await client.result(late.id, timeout=10) == {"gate": "late", "attempt": 1}
        for task_id in (early.id, late.id):
            stored = await client.get(task_id)
            assert [a.outcome for a in stored.attempts] == ["SUCCEEDED"]  # one attempt each
    assert runs == {"early": 1, "late": 1}


async def test_after_an_outage_longer_than_the_lease_agents_get_a_lease_to_come_back_with_their_tasks(
    own_postgres: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The plane closes a session whose report it cannot store; once the database is back, the agent may take
    a while to reconnect (its backoff grew through the outage). Its task, not updated for longer than the
    lease by then, is not taken back before a lease has passed since the outage ended, as after a restart."""
    caplog.set_level(logging.INFO, logger="controlplane")
    lease = 1.0
    async with (
        # The sweeps are run by hand here (the sweeper's own loop waits an hour between them).
        running_plane(
            tmp_path,
            database_url=own_postgres.create_database(),
            lease_timeout=lease,
            heartbeat_interval=0.3,
            sweep_interval=3600,
        ) as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        accepted = await submit(channel, data={"n": 1})
        agent = LinkAgent(plane.address, capabilities=["demo.echo"])
        await agent.connect()
        assignment = await agent.next_assignment()
        await agent.started(assignment)
        await eventually(lambda: _state_is(channel, accepted.id, task_pb2.TASK_STATE_RUNNING), message="running")

        await asyncio.to_thread(own_postgres.halt)
        await agent.progress(assignment, 0.5)  # a report the plane cannot store: it closes the session
        await asyncio.wait_for(agent.ended.wait(), 15)
        await eventually(
            lambda: any(r.getMessage().startswith("the lease of session ") for r in caplog.records),
            message="the session's lease ran out during the outage (one line, no traceback)",
        )
        await plane.sweeper.sweep_once()
        assert plane.sweeper.errors.in_outage

        await asyncio.to_thread(own_postgres.resume)
        await eventually(lambda: _sweep_ends_outage(plane), message="a sweep once the database is back")
        await plane.sweeper.sweep_once()
        seen = await get_task(channel, accepted.id)
        assert seen.state == task_pb2.TASK_STATE_RUNNING, f"not taken back yet: {seen.attempts}"

        back = LinkAgent(
            plane.address,
            capabilities=["demo.echo"],
            instance_id=agent.instance_id,
            held=[(assignment.task_id, assignment.attempt)],
        )
        registered = await back.connect()
        assert registered is not None
        assert [t.task_id for t in registered.kept_tasks] == [accepted.id], "the agent keeps its task"
        await back.succeed(assignment, {"n": "once"})
        await eventually(lambda: _all_succeeded(channel, [accepted.id]), message="the kept task's result")
        assert len((await get_task(channel, accepted.id)).attempts) == 1, "run once"
        await back.close()
    tracebacks = [r.getMessage() for r in caplog.records if r.name.startswith("controlplane") and r.exc_info]
    assert tracebacks == []


async def _state_is(channel: grpc.aio.Channel, task_id: str, state: int) -> bool:
    return bool((await get_task(channel, task_id)).state == state)


async def _sweep_ends_outage(plane: ControlPlane) -> bool:
    await plane.sweeper.sweep_once()
    return not plane.sweeper.errors.in_outage


async def test_a_read_only_database_gets_clients_unavailable_and_the_loops_one_line(
    own_postgres: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes refused as read-only (a standby after a failover, or default_transaction_read_only): retryable,
    not INTERNAL; reads go on; the sweeper, whose writing steps alone fail, says so once."""
    caplog.set_level(logging.INFO, logger="controlplane.scheduling")
    admin = await asyncpg.connect(own_postgres.url("postgres", driver="postgresql"))
    try:
        async with (
            running_plane(tmp_path, database_url=own_postgres.create_database()) as plane,
            grpc.aio.insecure_channel(plane.address) as channel,
        ):
            accepted = await submit(channel, data={"n": 1})
            await admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            await admin.execute("SELECT pg_reload_conf()")

            stub = tasks_stub(channel)
            for call in (
                lambda: submit(channel, data={"n": 2}),
                lambda: stub.CancelTask(task_service_pb2.CancelTaskRequest(task_id=accepted.id)),
            ):
                error = await eventually(lambda c=call: _refused(c), message="a write refused")
                assert error.code() == grpc.StatusCode.UNAVAILABLE, f"{error.code()} {error.details()}"
                assert "the database is read-only" in (error.details() or "") and "25006" in (error.details() or "")
                assert (error.details() or "").endswith("; retry")
            assert (await get_task(channel, accepted.id)).state == task_pb2.TASK_STATE_QUEUED  # reads go on

            # The replica heartbeat (a write) is due now and then; in between, the other steps read and succeed.
            await eventually(lambda: plane.sweeper.errors.unlogged >= 3, message="three more refused heartbeats")
            lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
            assert [m for m in lines if "read-only" in m] == [
                next(
                    m for m in lines if m.startswith("sweep step replica-heartbeat skipped: the database is read-only")
                )
            ], lines
            assert not [m for m in lines if "works again" in m], lines
            assert not [r for r in caplog.records if r.exc_info]

            await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
            await admin.execute("SELECT pg_reload_conf()")
            later = await eventually(lambda: submit(channel, data={"n": 3}), message="a submit once writable")
            assert later.id != accepted.id
            await eventually(
                lambda: any(r.getMessage().startswith("the sweeper works again after ") for r in caplog.records),
                message="the sweeper's line saying the outage is over",
            )
    finally:
        await admin.close()


@pytest.mark.parametrize(
    ("setting", "sqlstate"), [("lock_timeout", "55P03"), ("statement_timeout", "57014")], ids=["lock", "statement"]
)
async def test_a_statement_the_database_gives_up_on_gets_clients_unavailable(
    own_postgres: PostgresServer, tmp_path: Path, setting: str, sqlstate: str
) -> None:
    """An administrator's timeout (here the plane's role waits at most 300 ms) ends a statement stuck behind a
    lock: retryable, not INTERNAL, and nothing of the call is written; once the lock is gone it goes through."""
    async with _database_of_role_plane(own_postgres) as (admin, plane_url):
        await admin.execute(f"ALTER ROLE plane SET {setting} = '300ms'")
        async with (
            running_plane(tmp_path, database_url=plane_url) as plane,
            grpc.aio.insecure_channel(plane.address) as channel,
        ):
            accepted = await submit(channel, data={"n": 1})
            stub = tasks_stub(channel)
            cancel = task_service_pb2.CancelTaskRequest(task_id=accepted.id, reason="changed my mind")
            holder = admin.transaction()
            await holder.start()
            await admin.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", accepted.id)
            try:
                error = await _refused(lambda: stub.CancelTask(cancel))
                assert error.code() == grpc.StatusCode.UNAVAILABLE, f"{error.code()} {error.details()}"
                assert f"the database gave up on a statement: a timeout, lock wait or deadlock ({sqlstate}:" in (
                    error.details() or ""
                )
                assert (error.details() or "").endswith("; retry")
                assert (await get_task(channel, accepted.id)).state == task_pb2.TASK_STATE_QUEUED  # reads go on
            finally:
                await holder.rollback()
            cancelled = (await stub.CancelTask(cancel)).task
            assert cancelled.state == task_pb2.TASK_STATE_CANCELLED
