"""One control plane per data directory: a second embedded plane on the same directory would share the SQLite
file but start a NATS of its own (channels and wake-ups split without a word), so it refuses to start, naming
the plane that holds the directory. Planes that keep nothing there (PostgreSQL and an external NATS) share it.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from controlplane.app import ControlPlane
from controlplane.datadir import DataDirInUse
from tests.controlplane.helpers import get_task, submit
from tests.support.nats import nats_server
from tests.support.plane import plane_settings, running_plane
from tests.support.plane_process import PlaneProcess
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.timeout(60)


async def _refused_start(data_dir: Path) -> DataDirInUse:
    second = ControlPlane(plane_settings(data_dir))
    with pytest.raises(DataDirInUse) as caught:
        await second.start()
    await second.stop()
    return caught.value


async def test_a_second_plane_on_a_data_dir_in_use_refuses_to_start_and_the_first_carries_on(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with running_plane(data_dir) as first, grpc.aio.insecure_channel(first.address) as channel:
        before = await submit(channel, "nobody.serves.this", {"n": 1})

        refusal = await _refused_start(data_dir)

        assert str(refusal) == (
            f"data dir {data_dir.resolve()} is in use by another control plane (pid {os.getpid()}): give each "
            "plane its own data dir, or run replicas on one PostgreSQL and NATS (--database-url, --nats-url)"
        )
        after = await submit(channel, "nobody.serves.this", {"n": 2})  # the first plane is untouched
        assert {(await get_task(channel, t.id)).id for t in (before, after)} == {before.id, after.id}

    async with running_plane(data_dir) as next_plane, grpc.aio.insecure_channel(next_plane.address) as channel:
        assert (await get_task(channel, before.id)).id == before.id  # released on stop: the next one has it all


async def test_a_killed_plane_leaves_no_hold_on_its_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    process = PlaneProcess(data_dir).start()
    try:
        assert process.process is not None
        refusal = await _refused_start(data_dir)
        assert f"in use by another control plane (pid {process.process.pid})" in str(refusal)
    finally:
        process.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock with the process

    async with running_plane(data_dir) as plane:
        assert plane.running


@pytest.mark.postgres
async def test_planes_on_postgres_and_a_shared_nats_keep_nothing_in_the_data_dir_and_share_it(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    database_url = postgres_server.create_database()
    async with nats_server(tmp_path / "nats") as nats_url:
        shared = {"database_url": database_url, "nats_url": nats_url}
        async with running_plane(tmp_path / "data", **shared), running_plane(tmp_path / "data", **shared) as b:
            assert b.running
    assert not (tmp_path / "data" / "plane.lock").exists()
