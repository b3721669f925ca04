"""Two control planes, one of which cannot take agents: its PostgreSQL is halted, so it reports health
NOT_SERVING and ends every agent stream with UNAVAILABLE (it cannot store the registration).

The other one runs on a SQLite database of its own; each has its own embedded NATS. They are not replicas of one
mesh (each has its own database), which does not matter to an agent: it must find the one that registers it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controlplane.app import ControlPlane
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane
from tests.support.postgres import throwaway_postgres


@dataclass(frozen=True)
class Replicas:
    broken: ControlPlane  # its database is out of reach: every registration fails UNAVAILABLE
    healthy: ControlPlane

    def addresses_target(self) -> str:
        """A gRPC target naming both, the broken one first: ``ipv4:127.0.0.1:<broken>,127.0.0.1:<healthy>``."""
        return f"ipv4:{self.broken.address},{self.healthy.address}"


async def _not_serving(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    return bool(answer.status == health_pb2.HealthCheckResponse.NOT_SERVING)


async def _registration_fails(address: str) -> bool:
    agent = LinkAgent(address, name="probe")
    try:
        await agent.connect(wait=False)
        await asyncio.wait_for(agent.ended.wait(), 15)
        assert agent.registered is None
        return agent.end_code == grpc.StatusCode.UNAVAILABLE
    finally:
        await agent.kill()


@contextlib.asynccontextmanager
async def replica_without_database(tmp_path: Path) -> AsyncIterator[Replicas]:
    """The two planes, the broken one's database already halted (health NOT_SERVING, a registration refused)."""
    with throwaway_postgres() as postgres:
        async with (
            running_plane(tmp_path / "broken", database_url=postgres.create_database()) as broken,
            running_plane(tmp_path / "healthy") as healthy,
        ):
            await asyncio.to_thread(postgres.halt)
            await eventually(lambda: _not_serving(broken.address), timeout=15, message="the broken plane NOT_SERVING")
            await eventually(
                lambda: _registration_fails(broken.address),
                timeout=15,
                message="the broken plane ends an agent's stream UNAVAILABLE",
            )
            yield Replicas(broken, healthy)
