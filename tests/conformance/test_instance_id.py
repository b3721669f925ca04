"""Two conformance agents given one instance id (tests/conformance/CONTRACT.md, "One instance id, two agents"):
the older one stops with its SDK's instance-id-taken error instead of reconnecting, and the newer one keeps the
instance. Each registration of an instance id replaces the session the instance had (that is how an agent
reconnects), so two agents sharing one, each reconnecting when replaced, used to take it from each other for good.
"""

from __future__ import annotations

import pytest

from controlplane.app import ControlPlane
from meshplane.v1 import agent_pb2
from tests.conformance.driver import Agents, Mesh, describe
from tests.conformance.test_conformance import assert_succeeded

CONNECTED = agent_pb2.AGENT_INSTANCE_STATUS_CONNECTED


@pytest.mark.timeout(60)
async def test_the_agent_whose_instance_id_another_agent_registers_stops_and_the_other_keeps_it(
    plane: ControlPlane, mesh: Mesh, agents: Agents
) -> None:
    first = await agents.start(plane.address)
    second = await agents.start(plane.address, name=first.name, instance_id=first.instance_id)

    code = await first.wait_exit(timeout=15)
    assert code != 0 and "STOPPED" not in first.stdout_lines, first.describe()
    stderr = first.stderr_tail()
    assert "is taken by another agent" in stderr and first.instance_id in stderr, first.describe()

    instance = await mesh.instance(second.name, second.instance_id)
    assert instance is not None and instance.status == CONNECTED, instance
    assert instance.pid == second.pid, "the instance is the second agent's"
    echo = await mesh.run("conf.echo", {"after": "taken"})
    assert_succeeded(echo)
    assert echo.attempts[-1].session_id == instance.session_id, describe(echo)
    still = await mesh.instance(second.name, second.instance_id)
    assert still is not None and (still.session_id, still.status) == (instance.session_id, CONNECTED), still
    assert second.returncode is None, second.describe()
