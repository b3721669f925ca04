"""Several replicas sharing one PostgreSQL and one NATS: cross-replica dispatch and replica loss."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from meshplane.v1 import channel_pb2, channel_pb2_grpc, common_pb2, task_pb2
from tests.controlplane.helpers import get_task, output_of, submit, watch_events
from tests.controlplane.test_lifecycle import retry, wait_state
from tests.support.link_agent import LinkAgent
from tests.support.nats import nats_server
from tests.support.plane_process import PlaneProcess
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


@pytest.fixture
async def shared(postgres_server: PostgresServer, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    async with nats_server(tmp_path / "nats") as nats_url:
        yield {"database_url": postgres_server.create_database(), "nats_url": nats_url}


def replica(tmp_path: Path, name: str, shared: dict[str, str], **settings: object) -> PlaneProcess:
    return PlaneProcess(tmp_path / name, replica_id=name, **shared, **settings).start()


# A moving agent must reconnect before its old replica's lease runs out, or the survivor rightly takes its
# task back; a lease wider than the suite's 1.5 s keeps that from being a race in a slow hour.
MOVE_LEASE_S = 4.0


async def test_task_submitted_on_one_replica_runs_on_an_agent_of_another(
    shared: dict[str, str], tmp_path: Path
) -> None:
    a, b = replica(tmp_path, "replica-a", shared), replica(tmp_path, "replica-b", shared)
    try:
        agent = LinkAgent(b.address, name="on-b")
        await agent.connect()
        agent.serve_echo()
        async with grpc.aio.insecure_channel(a.address) as on_a:
            task = await submit(on_a, data={"via": "a"})
            events = await watch_events(on_a, task.id)  # watched on A, completed through B
            assert events[-1].type == task_pb2.TASK_EVENT_TYPE_SUCCEEDED
            done = await get_task(on_a, task.id)
            assert output_of(done) == {"via": "a"}
            assert done.attempts[0].agent_instance_id == agent.instance_id

            # A channel message published on B reaches a subscriber on A.
            stream = channel_pb2_grpc.ChannelServiceStub(on_a).Subscribe(channel_pb2.SubscribeRequest(channel="fleet"))
            assert (await stream.read()).WhichOneof("event") == "started"
            async with grpc.aio.insecure_channel(b.address) as on_b:
                await channel_pb2_grpc.ChannelServiceStub(on_b).Publish(
                    channel_pb2.PublishRequest(
                        channel="fleet", payload=common_pb2.Payload(data=b'"hi"', content_type="application/json")
                    )
                )
            received = await asyncio.wait_for(stream.read(), 10)
            assert received.message.payload.json.string_value == "hi"
            stream.cancel()
        await agent.close()
    finally:
        a.kill()
        b.kill()


async def test_losing_a_replica_loses_no_task(shared: dict[str, str], tmp_path: Path) -> None:
    a = replica(tmp_path, "replica-a", shared, lease_timeout=MOVE_LEASE_S)
    b = replica(tmp_path, "replica-b", shared, lease_timeout=MOVE_LEASE_S)
    try:
        async with grpc.aio.insecure_channel(a.address) as on_a:
            # Agent 1 lives on B and reconnects to A after B dies: its running task is kept.
            mover = LinkAgent(b.address, name="mover", max_concurrency=1)
            await mover.connect()
            kept = await submit(on_a, retry_policy=retry(3))
            first = await mover.next_assignment()
            await mover.started(first)
            await wait_state(on_a, kept.id, task_pb2.TASK_STATE_RUNNING)

            # Agent 2 also lives on B but never comes back: its task is recovered after the lease.
            goner = LinkAgent(b.address, name="goner", capabilities=["other.cap"], max_concurrency=1)
            await goner.connect()
            orphan = await submit(on_a, capability="other.cap", retry_policy=retry(3))
            await goner.started(await goner.next_assignment())
            await wait_state(on_a, orphan.id, task_pb2.TASK_STATE_RUNNING)

            b.kill()  # SIGKILL: no drain, no goodbye
            await mover.kill()
            await goner.kill()

            back = LinkAgent(
                a.address, name="mover", instance_id=mover.instance_id, max_concurrency=1, held=[(kept.id, 1)]
            )
            registered = await back.connect()
            assert registered is not None and [t.task_id for t in registered.kept_tasks] == [kept.id]
            await back.succeed((kept.id, 1), {"kept": True})
            done = await wait_state(on_a, kept.id, task_pb2.TASK_STATE_SUCCEEDED)
            assert len(done.attempts) == 1, "the task continued on its reconnected agent"

            rescuer = LinkAgent(a.address, name="rescuer", capabilities=["other.cap"])
            await rescuer.connect()
            retried = await rescuer.next_assignment(timeout=20)  # after B's lease ran out
            assert (retried.task_id, retried.attempt) == (orphan.id, 2)
            await rescuer.succeed(retried, {})
            recovered = await wait_state(on_a, orphan.id, task_pb2.TASK_STATE_SUCCEEDED)
            assert recovered.attempts[0].outcome == task_pb2.ATTEMPT_OUTCOME_LOST
            await back.close()
            await rescuer.close()
    finally:
        a.kill()
        b.kill()


async def test_consistent_hash_is_sticky_across_replicas(shared: dict[str, str], tmp_path: Path) -> None:
    """A routing key goes to one instance of the whole cluster, whichever replica the task was submitted to
    and whichever replica's dispatcher claimed it."""
    a, b = replica(tmp_path, "replica-a", shared), replica(tmp_path, "replica-b", shared)
    agents = [LinkAgent(a.address, name="on-a"), LinkAgent(b.address, name="on-b")]
    try:
        for agent in agents:
            await agent.connect()
            agent.serve_echo()
        keys = [f"customer-{n}" for n in range(16)]
        async with grpc.aio.insecure_channel(a.address) as on_a, grpc.aio.insecure_channel(b.address) as on_b:
            submitted: dict[str, str] = {}  # task id -> routing key
            for round_ in range(3):
                for index, key in enumerate(keys):
                    via = on_a if (index + round_) % 2 == 0 else on_b
                    target = task_pb2.TaskTarget(
                        capability="demo.echo",
                        routing_key=key,
                        strategy=task_pb2.SCHEDULING_STRATEGY_CONSISTENT_HASH,
                    )
                    submitted[(await submit(via, target=target)).id] = key
            owners: dict[str, set[str]] = {}
            for task_id, key in submitted.items():
                done = await wait_state(on_a, task_id, task_pb2.TASK_STATE_SUCCEEDED)
                owners.setdefault(key, set()).add(done.attempts[0].agent_instance_id)
        assert all(len(instances) == 1 for instances in owners.values()), owners
        used = {next(iter(instances)) for instances in owners.values()}
        assert used == {agent.instance_id for agent in agents}, "keys spread over the instances of both replicas"
    finally:
        for agent in agents:
            await agent.close()
        a.kill()
        b.kill()
