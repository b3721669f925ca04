"""Prometheus metrics and trace context propagation."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import grpc
import pytest

from agent_runtime import __version__
from meshplane.v1 import task_pb2, task_service_pb2
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


async def test_metrics_show_the_queue_per_capability_the_database_and_the_process(tmp_path: Path) -> None:
    async with (
        running_plane(tmp_path, metrics_listen="127.0.0.1:0") as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        for capability in ("queue.a", "queue.a", "queue.b"):  # nobody serves them: they wait
            await tasks_stub(channel).SubmitTask(submit_request(capability))
        await plane.sweeper.read_queue_depth()
        text = plane.metrics.render().decode()
        assert 'meshplane_tasks_queued{capability="queue.a"} 2.0' in text
        assert 'meshplane_tasks_queued{capability="queue.b"} 1.0' in text
        assert "meshplane_database_up 1.0" in text
        assert "process_resident_memory_bytes " in text and "process_cpu_seconds_total " in text
        assert f'meshplane_build_info{{version="{__version__}"}} 1.0' in text

        [queued] = [t for t in (await _list_queued(channel)) if t.target.capability == "queue.b"]
        await tasks_stub(channel).CancelTask(task_service_pb2.CancelTaskRequest(task_id=queued.id))
        await plane.sweeper.read_queue_depth()
        text = plane.metrics.render().decode()
        assert 'meshplane_tasks_queued{capability="queue.b"} 0.0' in text, "an emptied queue shows 0"


async def _list_queued(channel: grpc.aio.Channel) -> list[task_pb2.Task]:
    listed = await tasks_stub(channel).ListTasks(task_service_pb2.ListTasksRequest(state=task_pb2.TASK_STATE_QUEUED))
    return list(listed.tasks)


async def test_trace_context_travels_from_client_to_agent(tmp_path: Path) -> None:
    async with running_plane(tmp_path) as plane, grpc.aio.insecure_channel(plane.address) as channel:
        agent = LinkAgent(plane.address)
        await agent.connect()
        await tasks_stub(channel).SubmitTask(submit_request(), metadata=(("traceparent", TRACEPARENT),))
        assignment = await agent.next_assignment()
        trace_id = assignment.traceparent.split("-")[1]
        assert trace_id == "0af7651916cd43dd8448eb211c80319c", "the agent's work joins the client's trace"
        await agent.close()
