"""Prometheus metrics and trace context propagation."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import grpc
import pytest

from meshplane.v1 import task_pb2
from tests.controlplane.helpers import submit_request, tasks_stub
from tests.controlplane.test_lifecycle import wait_state
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_metrics_endpoint_counts_tasks_and_sessions(tmp_path: Path) -> None:
    async with (
        running_plane(tmp_path, metrics_listen="127.0.0.1:0") as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        agent = LinkAgent(plane.address)
        await agent.connect()
        agent.serve_echo()
        task = (await tasks_stub(channel).SubmitTask(submit_request())).task
        await wait_state(channel, task.id, task_pb2.TASK_STATE_SUCCEEDED)
        with urllib.request.urlopen(f"http://{plane.metrics.address}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert "meshplane_tasks_submitted_total 1.0" in text
        assert 'meshplane_tasks_ended_total{state="SUCCEEDED"} 1.0' in text
        assert "meshplane_agent_sessions 1.0" in text
        assert "meshplane_assignments_total 1.0" in text
        await agent.close()


async def test_trace_context_travels_from_client_to_agent(tmp_path: Path) -> None:
    async with running_plane(tmp_path) as plane, grpc.aio.insecure_channel(plane.address) as channel:
        agent = LinkAgent(plane.address)
        await agent.connect()
        await tasks_stub(channel).SubmitTask(submit_request(), metadata=(("traceparent", TRACEPARENT),))
        assignment = await agent.next_assignment()
        trace_id = assignment.traceparent.split("-")[1]
        assert trace_id == "0af7651916cd43dd8448eb211c80319c", "the agent's work joins the client's trace"
        await agent.close()
