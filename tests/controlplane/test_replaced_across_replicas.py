"""An instance that registers on another replica replaces its session here, and that session hears why: two live
agents given one instance_id, connected to different replicas, would otherwise replace each other for good."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.nats import nats_server
from tests.support.plane import running_plane
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]


async def test_a_session_replaced_from_another_replica_gets_the_fatal_instance_id_frame(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    shared = {"database_url": postgres_server.create_database()}
    async with (
        nats_server(tmp_path / "nats") as nats_url,
        running_plane(tmp_path / "r1", replica_id="r1", nats_url=nats_url, **shared) as r1,
        running_plane(tmp_path / "r2", replica_id="r2", nats_url=nats_url, **shared) as r2,
    ):
        first = LinkAgent(r1.address, name="twin", instance_id="shared-across")
        await first.connect()
        second = LinkAgent(r2.address, name="twin", instance_id="shared-across")
        await second.connect()
        try:
            await asyncio.wait_for(first.ended.wait(), 10)
            assert first.end_code == grpc.StatusCode.OK
            [error] = first.errors
            assert (error.code, error.field, error.fatal) == (6, "register.instance_id", True)  # ALREADY_EXISTS
            assert error.message.startswith("replaced by a newer session of instance shared-across on another replica")
            assert "two agents share this instance_id" in error.message
            assert second.errors == [] and not second.ended.is_set()
            await eventually(lambda: not r1.supervisor.live_sessions(), message="r1 let its session go")

            # A stale notice (sent while NATS was down, delivered late) naming the older session changes
            # nothing here: the store shows the session here registered last.
            assert first.registered is not None and second.registered is not None
            await r2.supervisor.replaced_elsewhere("shared-across", first.registered.session_id)
            [kept] = r2.supervisor.live_sessions()
            assert kept.session_id == second.registered.session_id
            assert second.errors == [] and not second.ended.is_set()
        finally:
            await first.close()
            await second.close()
