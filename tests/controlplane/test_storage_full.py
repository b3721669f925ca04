"""The database runs out of space: clients are told RESOURCE_EXHAUSTED naming it (not INTERNAL), nothing of a
refused call is half-written, reads go on, the operator hears of it in one line, and writes work again once
there is room.

SQLite's max_page_count is set on the plane's write connections to fill "the disk" for real (SQLITE_FULL).
PostgreSQL's disk_full (53100) cannot be caused without a file system of its own: its error is classified here.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from agent_runtime import Agent, MeshClient, TaskContext, TaskState
from controlplane.app import ControlPlane
from controlplane.store.transient import storage_full_reason, unavailable_reason
from meshplane.v1 import common_pb2, task_pb2, task_service_pb2
from tests.controlplane.helpers import get_task, submit, tasks_stub
from tests.sdk.conftest import serving, task_state, task_state_is
from tests.support.eventually import eventually
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)


async def _limit_pages(plane: ControlPlane, pages: int) -> None:
    """Every write connection the plane opens from now on holds the file to `pages` pages."""
    engine = plane.database.engine

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA max_page_count = {pages}")
        cursor.close()

    event.listen(engine.sync_engine, "connect", on_connect)
    await engine.dispose()  # pooled connections are replaced by ones that hold the limit


async def _page_count(plane: ControlPlane) -> int:
    async with plane.database.engine.connect() as conn:
        return int((await conn.exec_driver_sql("PRAGMA page_count")).scalar_one())


def _big_submit() -> task_service_pb2.SubmitTaskRequest:
    data = b'{"x": "' + b"a" * 400_000 + b'"}'
    return task_service_pb2.SubmitTaskRequest(
        target=task_pb2.TaskTarget(capability="nobody.serves.this"),
        input=common_pb2.Payload(data=data, content_type="application/json"),
    )


async def test_a_full_database_refuses_writes_with_resource_exhausted_and_keeps_what_it_has(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="controlplane")
    async with running_plane(tmp_path / "plane") as plane, grpc.aio.insecure_channel(plane.address) as channel:
        kept = await submit(channel, capability="nobody.serves.this", data={"kept": True})
        await _limit_pages(plane, await _page_count(plane) + 2)

        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await tasks_stub(channel).SubmitTask(_big_submit())
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert caught.value.details() == (
                "the SQLite database is out of space (database or disk is full); nothing of this call was stored"
            )

        listed = await tasks_stub(channel).ListTasks(task_service_pb2.ListTasksRequest(page_size=100))
        assert [t.id for t in listed.tasks] == [kept.id]  # nothing of the refused calls, and reads work
        assert (await get_task(channel, kept.id)).state == task_pb2.TASK_STATE_QUEUED

        await _limit_pages(plane, 1_000_000)  # room again
        again = (await tasks_stub(channel).SubmitTask(_big_submit())).task
        assert (await get_task(channel, again.id)).state == task_pb2.TASK_STATE_QUEUED

    refusals = [r for r in caplog.records if r.getMessage().startswith("refusing calls that write")]
    assert [r.levelname for r in refusals] == ["WARNING"]  # one line for the three, not a traceback each
    assert "out of space" in refusals[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_postgres_disk_full_is_storage_full_not_an_outage() -> None:
    error = asyncpg.exceptions.DiskFullError('could not extend file "base/16384/16385": No space left on device')
    assert storage_full_reason(error) == (
        'the database is out of disk space (53100: could not extend file "base/16384/16385": No space left on device)'
    )
    assert unavailable_reason(error) is None
    wrapped = OperationalError("INSERT ...", {}, error)  # as SQLAlchemy raises it
    assert storage_full_reason(wrapped) is not None


def test_other_errors_are_not_storage_full() -> None:
    import sqlite3

    assert storage_full_reason(sqlite3.OperationalError("database is locked")) is None
    assert storage_full_reason(asyncpg.exceptions.UniqueViolationError("duplicate key")) is None
    assert storage_full_reason(ValueError("database or disk is full")) is None


async def test_a_result_the_full_database_cannot_take_is_resent_and_applied_once_there_is_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The result is not acknowledged: the plane closes the session, the agent reconnects and resends it (it
    keeps its task), again while the database stays full; once there is room it is applied, once."""
    caplog.set_level(logging.WARNING, logger="controlplane")
    release = asyncio.Event()
    runs = 0
    agent = Agent("filler", reconnect_max_delay=0.2)

    @agent.task("work.big")
    async def big(ctx: TaskContext, data: Any) -> dict[str, str]:
        nonlocal runs
        runs += 1
        await release.wait()
        return {"x": "b" * 400_000}

    async with (
        running_plane(tmp_path / "plane") as plane,
        serving(agent, plane.address),
        MeshClient(plane.address) as client,
    ):
        task = await client.submit("work.big", {})
        await eventually(lambda: task_state_is(client, task.id, TaskState.RUNNING), message="running")
        first_session = agent.session_id
        await _limit_pages(plane, await _page_count(plane) + 2)

        release.set()
        await eventually(lambda: agent.session_id not in (None, first_session), message="closed, reconnected")
        second_session = agent.session_id
        await eventually(lambda: agent.session_id not in (None, second_session), message="resent, refused again")
        assert await task_state(client, task.id) is TaskState.RUNNING

        await _limit_pages(plane, 1_000_000)
        assert await client.result(task.id, timeout=20) == {"x": "b" * 400_000}
        stored = await client.get(task.id)
        assert [a.outcome for a in stored.attempts] == ["SUCCEEDED"]
    assert runs == 1
    refusals = [r for r in caplog.records if "its agent reconnects and resends them" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelname == "WARNING"  # one line for every refusal
    assert "out of space" in refusals[0].getMessage()


@pytest.mark.parametrize("says", ["disk I/O error", "attempt to write a readonly database"])
def test_sqlite_files_the_file_system_refuses_are_an_outage(says: str) -> None:
    """A data dir made read-only (or a failing disk) under a running SQLite plane: UNAVAILABLE with one reason,
    which also turns health NOT_SERVING through the sweep (it was INTERNAL, a traceback per call)."""
    wrapped = OperationalError("INSERT ...", {}, sqlite3.OperationalError(says))  # as SQLAlchemy raises it
    assert unavailable_reason(wrapped) == (
        f"the SQLite database's files cannot be read or written ({says}): their permissions, or the disk?"
    )
    assert storage_full_reason(wrapped) is None
