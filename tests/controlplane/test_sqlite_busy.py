"""Another process holds the embedded SQLite database's write lock longer than the busy timeout (10 s): writes
are answered UNAVAILABLE (retry), not INTERNAL; reads go on; once the lock is gone writes go through again and
nothing accepted before is lost."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from controlplane.app import ControlPlane
from meshplane.v1 import task_service_pb2
from tests.controlplane.helpers import get_task, submit, tasks_stub

pytestmark = pytest.mark.timeout(90)


@contextmanager
def write_lock_held(database: Path) -> Iterator[None]:
    """Another process's writer: SQLite's write lock taken (BEGIN IMMEDIATE) and held until the block ends."""
    with closing(sqlite3.connect(database, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


async def test_writes_wait_out_a_held_sqlite_lock_then_get_unavailable_and_reads_go_on(
    sqlite_plane: ControlPlane,
) -> None:
    database = sqlite_plane.settings.data_dir / "meshplane.db"
    async with grpc.aio.insecure_channel(sqlite_plane.address) as channel:
        accepted = await submit(channel, "nobody.serves.this", {"before": True})

        with write_lock_held(database):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await submit(channel, "nobody.serves.this", {"during": True})
            assert (await get_task(channel, accepted.id)).id == accepted.id  # a reader needs no write lock

        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == (
            "the SQLite database is locked by another writer (its busy timeout passed); retry"
        )
        after = await submit(channel, "nobody.serves.this", {"after": True})
        inputs = [MessageToDict((await get_task(channel, t.id)).input.json) for t in (accepted, after)]
        assert inputs == [{"before": True}, {"after": True}]
        listed = await tasks_stub(channel).ListTasks(task_service_pb2.ListTasksRequest(capability="nobody.serves.this"))
        assert len(listed.tasks) == 2  # the refused submit left nothing behind
