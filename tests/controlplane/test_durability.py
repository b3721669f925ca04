"""A control plane killed with SIGKILL loses no acknowledged task and completes none twice (both stores)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from meshplane.v1 import task_pb2, task_service_pb2
from tests.controlplane.helpers import get_task, output_of, submit, tasks_stub, watch_events
from tests.controlplane.test_lifecycle import retry, wait_state
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.plane_process import PlaneProcess

pytestmark = pytest.mark.timeout(120)

# A restarted replica takes no task back before it has been up for a lease, so that agents have a lease to
# come back holding theirs. The keeper reconnects right after the restart, well inside that in any hour
# with the lease here, wider than the suite's (the goner's tasks come back after it).
LEASE_S = 4.0


async def test_sigkill_loses_nothing_and_completes_nothing_twice(tmp_path: Path, database_url: str) -> None:
    port_plane = PlaneProcess(
        tmp_path / "plane", database_url=database_url, replica_id="first", lease_timeout=LEASE_S
    ).start()
    port = port_plane.address.rsplit(":", 1)[1]
    try:
        async with grpc.aio.insecure_channel(port_plane.address) as channel:
            submitted = [(await submit(channel, data={"i": i}, retry_policy=retry(5))).id for i in range(30)]
            keeper = LinkAgent(port_plane.address, name="keeper", max_concurrency=3)
            goner = LinkAgent(port_plane.address, name="goner", max_concurrency=2)
            await keeper.connect()
            held = [await keeper.next_assignment() for _ in range(3)]
            for assignment in held:
                await keeper.started(assignment)
            await keeper.succeed(held[0], {"done": "before the crash"})  # sent; the ack may or may not come
            await goner.connect()
            for _ in range(2):
                await goner.started(await goner.next_assignment())
            await eventually(lambda: len(goner.all_assignments) == 2)

        port_plane.kill()  # SIGKILL: whatever was committed is all there is
        await keeper.kill()
        await goner.kill()  # this agent never comes back: its tasks must come back after the lease

        second = PlaneProcess(
            tmp_path / "plane",
            database_url=database_url,
            replica_id="second",
            listen=f"127.0.0.1:{port}",
            lease_timeout=LEASE_S,
        ).start()
        try:
            async with grpc.aio.insecure_channel(second.address) as channel:
                # The keeper reconnects holding its running tasks and its maybe-unacknowledged result.
                returning = LinkAgent(
                    second.address,
                    name="keeper",
                    instance_id=keeper.instance_id,
                    max_concurrency=3,
                    held=[(a.task_id, a.attempt) for a in held],
                )
                registered = await returning.connect()
                assert registered is not None
                kept = {t.task_id for t in registered.kept_tasks}
                acked_before = (held[0].task_id, held[0].attempt) in keeper.acks
                assert {a.task_id for a in held[1:]} <= kept, "running tasks are kept"
                # The kill may land between the commit of the first result and the agent reading its ack, so
                # an unacknowledged result may be committed or still held; an acknowledged one is committed.
                first_committed = held[0].task_id not in kept
                assert first_committed or not acked_before, "an acknowledged result is committed"
                if first_committed:
                    first = await get_task(channel, held[0].task_id)
                    assert first.state == task_pb2.TASK_STATE_SUCCEEDED, "a result no longer held is committed"
                    assert output_of(first) == {"done": "before the crash"}
                await returning.succeed(held[0], {"done": "resent"})
                for assignment in held[1:]:
                    await returning.succeed(assignment, {"done": "after the restart"})
                returning.serve_echo()

                async def all_succeeded() -> bool:
                    listed = await tasks_stub(channel).ListTasks(task_service_pb2.ListTasksRequest(page_size=100))
                    states = {t.id: t.state for t in listed.tasks}
                    return all(states.get(i) == task_pb2.TASK_STATE_SUCCEEDED for i in submitted)

                await eventually(all_succeeded, timeout=60, message="every acknowledged task succeeded")
                for task_id in submitted:
                    events = await watch_events(channel, task_id)
                    succeeded = [e for e in events if e.type == task_pb2.TASK_EVENT_TYPE_SUCCEEDED]
                    assert len(succeeded) == 1, f"{task_id} completed {len(succeeded)} times"
                lost = [a.task_id for a in goner.all_assignments]
                for task_id in lost:
                    done = await wait_state(channel, task_id, task_pb2.TASK_STATE_SUCCEEDED)
                    assert done.attempts[0].outcome == task_pb2.ATTEMPT_OUTCOME_LOST
                    assert done.attempts[-1].agent_instance_id == returning.instance_id
                for assignment in held[1:]:
                    done = await wait_state(channel, assignment.task_id, task_pb2.TASK_STATE_SUCCEEDED)
                    assert len(done.attempts) == 1, "a kept task is not run again"
                await returning.close()
        finally:
            second.kill()
    finally:
        port_plane.kill()


async def test_agents_back_within_a_lease_of_a_restart_keep_their_tasks_however_long_the_outage(
    tmp_path: Path, database_url: str
) -> None:
    lease = 3.0  # the keeper's reconnect comes well inside a lease of the restart in a slow hour too
    first = PlaneProcess(tmp_path / "plane", database_url=database_url, replica_id="first", lease_timeout=lease).start()
    port = first.address.rsplit(":", 1)[1]
    try:
        async with grpc.aio.insecure_channel(first.address) as channel:
            keeper = LinkAgent(first.address, name="keeper", max_concurrency=1)
            await keeper.connect()
            kept = await submit(channel, retry_policy=retry(3))
            held = await keeper.next_assignment()
            await keeper.started(held)
            await wait_state(channel, kept.id, task_pb2.TASK_STATE_RUNNING)
            goner = LinkAgent(first.address, name="goner", max_concurrency=1)
            await goner.connect()
            orphan = await submit(channel, retry_policy=retry(3))
            await goner.started(await goner.next_assignment())
            await wait_state(channel, orphan.id, task_pb2.TASK_STATE_RUNNING)
    finally:
        first.kill()
    await keeper.kill()
    await goner.kill()
    await asyncio.sleep(lease + 0.5)  # the only replica stays down for longer than the lease

    second = PlaneProcess(
        tmp_path / "plane",
        database_url=database_url,
        replica_id="second",
        listen=f"127.0.0.1:{port}",
        lease_timeout=lease,
    ).start()
    try:
        await asyncio.sleep(0.25)  # the agent's reconnect backoff
        returning = LinkAgent(
            second.address,
            name="keeper",
            instance_id=keeper.instance_id,
            max_concurrency=1,
            held=[(held.task_id, held.attempt)],
        )
        registered = await returning.connect()
        assert registered is not None
        assert [t.task_id for t in registered.kept_tasks] == [kept.id], "the task it still runs is kept"
        async with grpc.aio.insecure_channel(second.address) as channel:
            await returning.succeed(held, {"kept": True})
            done = await wait_state(channel, kept.id, task_pb2.TASK_STATE_SUCCEEDED)
            assert len(done.attempts) == 1, "a kept task is not run again"

            # The goner never comes back: once the restarted replica has been up a lease, its task is retried.
            retried = await returning.next_assignment(timeout=20)
            assert (retried.task_id, retried.attempt) == (orphan.id, 2)
            await returning.succeed(retried, {})
            recovered = await wait_state(channel, orphan.id, task_pb2.TASK_STATE_SUCCEEDED)
            assert recovered.attempts[0].outcome == task_pb2.ATTEMPT_OUTCOME_LOST
        await returning.close()
    finally:
        second.kill()
