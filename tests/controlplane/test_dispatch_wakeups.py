"""When a joining session wakes the dispatcher, on both stores.

The plane here polls only every 30 s, so work placed within the tests' few seconds was placed because
the right wake-up happened, not by the fallback poll.
"""

from __future__ import annotations

import time

import grpc
import pytest

from controlplane.app import ControlPlane
from meshplane.v1 import task_pb2
from tests.controlplane.helpers import submit
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent

pytestmark = pytest.mark.timeout(60)


async def test_a_joining_session_takes_work_that_waited_for_room(
    quiet_plane: ControlPlane, quiet_channel: grpc.aio.Channel
) -> None:
    busy = LinkAgent(quiet_plane.address, capabilities=["cap.room"], max_concurrency=1)
    await busy.connect()
    first = await submit(quiet_channel, capability="cap.room")
    assert (await busy.next_assignment()).task_id == first.id
    waiting = await submit(quiet_channel, capability="cap.room")

    joining = LinkAgent(quiet_plane.address, capabilities=["cap.room"], max_concurrency=1)
    await joining.connect()
    assert (await joining.next_assignment(timeout=5)).task_id == waiting.id
    await busy.close()
    await joining.close()


async def test_a_joining_session_takes_work_no_other_session_could_take(
    quiet_plane: ControlPlane, quiet_channel: grpc.aio.Channel
) -> None:
    elsewhere = LinkAgent(quiet_plane.address, capabilities=["cap.zone"], labels={"zone": "us"})
    await elsewhere.connect()
    await eventually(lambda: quiet_plane.dispatcher.rounds >= 1, message="the round for the new capability")
    # Counted before the submit: its round may end before the client hears back.
    rounds = quiet_plane.dispatcher.rounds
    target = task_pb2.TaskTarget(capability="cap.zone", label_selector={"zone": "eu"})
    waiting = await submit(quiet_channel, target=target)
    await eventually(lambda: quiet_plane.dispatcher.rounds > rounds, message="the submit's dispatch round")

    joining = LinkAgent(quiet_plane.address, capabilities=["cap.zone"], labels={"zone": "eu"})
    await joining.connect()
    assert (await joining.next_assignment(timeout=5)).task_id == waiting.id
    await elsewhere.close()
    await joining.close()


async def test_a_session_adding_no_capability_costs_no_round_when_nothing_waits(quiet_plane: ControlPlane) -> None:
    first = LinkAgent(quiet_plane.address, capabilities=["cap.idle"])
    await first.connect()
    await eventually(lambda: quiet_plane.dispatcher.rounds == 1, message="the round for a new capability")

    second = LinkAgent(quiet_plane.address, capabilities=["cap.idle"])
    await second.connect()
    session = quiet_plane.registry.by_instance(second.instance_id)
    assert session is not None
    joined = time.monotonic()
    # A few heartbeats later the plane has long had its chance to run a (needless) round.
    await eventually(lambda: session.last_seen > joined + 0.5, message="heartbeats of the second session")
    assert quiet_plane.dispatcher.rounds == 1, "a session serving only served capabilities woke the dispatcher"

    third = LinkAgent(quiet_plane.address, capabilities=["cap.new"])
    await third.connect()
    await eventually(lambda: quiet_plane.dispatcher.rounds == 2, message="the round for another new capability")
    for agent in (first, second, third):
        await agent.close()


async def test_a_freed_slot_costs_no_round_when_nothing_waits_for_its_capabilities(
    quiet_plane: ControlPlane, quiet_channel: grpc.aio.Channel
) -> None:
    agent = LinkAgent(quiet_plane.address, capabilities=["cap.freed"], max_concurrency=1)
    await agent.connect()
    await eventually(lambda: quiet_plane.dispatcher.is_clear("cap.freed"), message="the round for a new capability")
    assert quiet_plane.dispatcher.rounds == 1
    task = await submit(quiet_channel, capability="cap.freed")
    assert task.state == task_pb2.TASK_STATE_ASSIGNED  # placed by its submit: no round
    await agent.succeed(await agent.next_assignment(), {"ok": True})
    await eventually(
        lambda: quiet_plane.reports.applied_results == 1, message="the result, which freed the session's slot"
    )
    session = quiet_plane.registry.by_instance(agent.instance_id)
    assert session is not None
    freed = time.monotonic()
    await eventually(lambda: session.last_seen > freed + 0.5, message="heartbeats after the freed slot")
    assert quiet_plane.dispatcher.rounds == 1, "a freed slot woke the dispatcher though nothing waited"
    await agent.close()
