"""Placement on both stores: each strategy, label selectors, agent names, priority then FIFO."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest

from controlplane.app import ControlPlane
from controlplane.scheduling.placement import _rendezvous_score
from meshplane.v1 import task_pb2, task_service_pb2
from tests.controlplane.helpers import submit, submit_request, tasks_stub
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent

pytestmark = pytest.mark.timeout(90)


async def agents_on(plane: ControlPlane, count: int, **kwargs: object) -> list[LinkAgent]:
    started = []
    for index in range(count):
        agent = LinkAgent(plane.address, name=f"worker{index}", **kwargs)  # type: ignore[arg-type]
        await agent.connect()
        agent.serve_echo()
        started.append(agent)
    return started


async def run_tasks(channel: grpc.aio.Channel, count: int, **target: object) -> None:
    requests = [
        submit_request(target=task_pb2.TaskTarget(capability="demo.echo", **target), data={"i": i})  # type: ignore[arg-type]
        for i in range(count)
    ]
    await tasks_stub(channel).BatchSubmitTasks(task_service_pb2.BatchSubmitTasksRequest(requests=requests))


def placements(agents: list[LinkAgent]) -> Counter[str]:
    return Counter({a.name: len(a.all_assignments) for a in agents})


async def close_all(agents: list[LinkAgent]) -> None:
    await asyncio.gather(*(a.close() for a in agents))


async def test_round_robin_alternates(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agents = await agents_on(plane, 3, max_concurrency=100)
    await run_tasks(channel, 30, strategy=task_pb2.SCHEDULING_STRATEGY_ROUND_ROBIN)
    await eventually(lambda: sum(placements(agents).values()) == 30)
    assert sorted(placements(agents).values()) == [10, 10, 10]
    await close_all(agents)


async def test_least_loaded_prefers_the_idle_instance(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    busy = LinkAgent(plane.address, name="busy", max_concurrency=4)
    idle = LinkAgent(plane.address, name="idle", max_concurrency=4)
    await busy.connect()
    # Two tasks hold `busy` (they never finish) before `idle` arrives.
    await run_tasks(channel, 2, strategy=task_pb2.SCHEDULING_STRATEGY_LEAST_LOADED)
    await eventually(lambda: len(busy.all_assignments) == 2)
    await idle.connect()
    await run_tasks(channel, 2, strategy=task_pb2.SCHEDULING_STRATEGY_LEAST_LOADED)
    await eventually(lambda: len(idle.all_assignments) == 2)
    assert len(busy.all_assignments) == 2, "least loaded sends new work to the idle instance"
    await close_all([busy, idle])


async def test_weighted_follows_weights(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    heavy = LinkAgent(plane.address, name="heavy", weight=9, max_concurrency=1000)
    light = LinkAgent(plane.address, name="light", weight=1, max_concurrency=1000)
    for agent in (heavy, light):
        await agent.connect()
        agent.serve_echo()
    await run_tasks(channel, 400, strategy=task_pb2.SCHEDULING_STRATEGY_WEIGHTED)
    await eventually(lambda: len(heavy.all_assignments) + len(light.all_assignments) == 400)
    share = len(heavy.all_assignments) / 400
    assert 0.8 <= share <= 0.97, f"heavy (weight 9 of 10) got {share:.0%}"
    await close_all([heavy, light])


async def test_consistent_hash_is_sticky_per_routing_key(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    agents = await agents_on(plane, 3, max_concurrency=100)
    keys = [f"customer-{n}" for n in range(12)]
    for _ in range(3):
        for key in keys:
            await run_tasks(channel, 1, strategy=task_pb2.SCHEDULING_STRATEGY_CONSISTENT_HASH, routing_key=key)
    await eventually(lambda: sum(placements(agents).values()) == 36)
    owners: dict[str, set[str]] = {}
    for agent in agents:
        for assignment in agent.all_assignments:
            task = (await tasks_stub(channel).GetTask(task_service_pb2.GetTaskRequest(task_id=assignment.task_id))).task
            owners.setdefault(task.target.routing_key, set()).add(agent.name)
    assert all(len(names) == 1 for names in owners.values()), owners
    assert len({next(iter(n)) for n in owners.values()}) > 1, "keys spread over instances"
    await close_all(agents)


async def test_label_selector_and_agent_name_restrict_placement(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    eu = LinkAgent(plane.address, name="eu-agent", labels={"zone": "eu", "gpu": "yes"}, max_concurrency=50)
    us = LinkAgent(plane.address, name="us-agent", labels={"zone": "us"}, max_concurrency=50)
    for agent in (eu, us):
        await agent.connect()
        agent.serve_echo()
    await run_tasks(channel, 10, label_selector={"zone": "eu"})
    await run_tasks(channel, 5, agent_name="us-agent")
    await eventually(lambda: len(eu.all_assignments) == 10 and len(us.all_assignments) == 5)
    # Nobody matches: the task waits rather than going to a wrong agent.
    waiting = await submit(channel, target=task_pb2.TaskTarget(capability="demo.echo", label_selector={"zone": "mars"}))
    await asyncio.sleep(0.5)
    assert len(eu.all_assignments) + len(us.all_assignments) == 15
    state = (await tasks_stub(channel).GetTask(task_service_pb2.GetTaskRequest(task_id=waiting.id))).task.state
    assert state == task_pb2.TASK_STATE_QUEUED
    await close_all([eu, us])


async def test_higher_priority_first_then_fifo(plane: ControlPlane, channel: grpc.aio.Channel) -> None:
    low = [await submit(channel, data={"p": 0, "i": i}) for i in range(3)]
    high = [await submit(channel, data={"p": 5, "i": i}, priority=5) for i in range(3)]
    agent = LinkAgent(plane.address, max_concurrency=1)
    await agent.connect()
    order = []
    for _ in range(6):
        assignment = await agent.next_assignment()
        order.append(assignment.task_id)
        await agent.succeed(assignment, {})
    assert order == [t.id for t in high] + [t.id for t in low]
    await agent.close()


async def test_work_no_session_can_take_does_not_hide_work_queued_behind_it(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    # Far more tasks nobody here matches at the head of the queue than a round reads (even reading on past
    # them), at two priorities, with one task anybody can take queued behind each group.
    mars = task_pb2.TaskTarget(capability="demo.echo", label_selector={"zone": "mars"})
    stuck = [submit_request(target=mars, data={"i": i}, priority=5 if i % 2 else 0) for i in range(1000)]
    await tasks_stub(channel).BatchSubmitTasks(task_service_pb2.BatchSubmitTasksRequest(requests=stuck))
    behind_low = await submit(channel, data={"behind": "low"})
    behind_high = await submit(channel, data={"behind": "high"}, priority=5)

    agent = LinkAgent(plane.address, labels={"zone": "earth"}, max_concurrency=1)
    await agent.connect()
    first = await agent.next_assignment()
    assert first.task_id == behind_high.id
    await agent.succeed(first, {})
    second = await agent.next_assignment()
    assert second.task_id == behind_low.id
    await agent.succeed(second, {})
    await agent.close()


@pytest.mark.parametrize("backlog", ["many keys", "one hot key"])
async def test_sticky_work_waiting_for_its_full_owner_does_not_hide_work_behind_it(
    plane: ControlPlane, channel: grpc.aio.Channel, backlog: str
) -> None:
    owner = LinkAgent(plane.address, name="owner", max_concurrency=1)
    other = LinkAgent(plane.address, name="other", max_concurrency=1)
    for agent in (owner, other):
        await agent.connect()
    busy = await submit(channel, target=task_pb2.TaskTarget(capability="demo.echo", agent_name="owner"))
    assert (await owner.next_assignment()).task_id == busy.id  # held: the owner has no room now
    owned = (k for k in (f"key-{n}" for n in range(400)) if _owned_by(k, owner, other))
    # Many keys: more sticky tasks than one claim reads (room + slack), all owned by the full instance. One hot
    # key: its backlog is longer than all the pages a round reads put together (33 + 132 + 528 rows here).
    keys = list(owned)[:100] if backlog == "many keys" else [next(owned)] * 800
    sticky = [
        submit_request(
            target=task_pb2.TaskTarget(
                capability="demo.echo", routing_key=key, strategy=task_pb2.SCHEDULING_STRATEGY_CONSISTENT_HASH
            )
        )
        for key in keys
    ]
    await tasks_stub(channel).BatchSubmitTasks(task_service_pb2.BatchSubmitTasksRequest(requests=sticky))
    # One task anybody can take behind them: the instance with room gets it.
    behind = await submit(channel, data={"behind": True})
    assert (await other.next_assignment()).task_id == behind.id
    await close_all([owner, other])


def _owned_by(routing_key: str, owner: LinkAgent, other: LinkAgent) -> bool:
    return _rendezvous_score(routing_key, owner.instance_id) > _rendezvous_score(routing_key, other.instance_id)
