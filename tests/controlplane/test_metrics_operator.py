"""The operator's metrics every gRPC service exports: calls by method and status code, unary calls' handling
time; tasks' queue waits and lives; and whether NATS is connected. Read from the plane's real /metrics endpoint."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.app import ControlPlane
from controlplane.bus.embedded import EmbeddedNats
from controlplane.observability.histogram import Histogram
from meshplane.v1 import agent_link_pb2, task_pb2, task_service_pb2
from tests.controlplane.helpers import submit_request, tasks_stub, watch_events
from tests.controlplane.test_lifecycle import wait_state
from tests.support.eventually import eventually
from tests.support.link_agent import LinkAgent
from tests.support.plane import running_plane

pytestmark = pytest.mark.timeout(60)

SUBMIT = "meshplane.v1.TaskService/SubmitTask"
GET = "meshplane.v1.TaskService/GetTask"
WATCH = "meshplane.v1.TaskService/WatchTask"
CONNECT = "meshplane.v1.AgentLinkService/Connect"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(plane: ControlPlane) -> Samples:
    """Every sample on the plane's /metrics, by name and labels."""
    with urllib.request.urlopen(f"http://{plane.metrics.address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_grpc_calls_are_counted_by_method_and_status_and_unary_ones_timed(tmp_path: Path) -> None:
    async with (
        running_plane(tmp_path, metrics_listen="127.0.0.1:0") as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        agent = LinkAgent(plane.address)
        await agent.connect()
        agent.serve_echo()
        tasks = tasks_stub(channel)
        submitted = [(await tasks.SubmitTask(submit_request())).task for _ in range(3)]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tasks.GetTask(task_service_pb2.GetTaskRequest(task_id=""))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await wait_state(channel, submitted[0].id, task_pb2.TASK_STATE_SUCCEEDED)
        await watch_events(channel, submitted[0].id)  # a stream, ended by the server (the task is over)
        rejected = LinkAgent(plane.address)  # a stream its handler aborts itself
        await rejected.connect(first=agent_link_pb2.ConnectRequest(heartbeat=agent_link_pb2.Heartbeat()), wait=False)
        await asyncio.wait_for(rejected.ended.wait(), 10)
        samples = scrape(plane)
        await agent.close()

    handled = "meshplane_grpc_server_handled_total"
    assert sample(samples, handled, method=SUBMIT, code="OK") == 3
    assert sample(samples, handled, method=GET, code="INVALID_ARGUMENT") == 1
    assert sample(samples, handled, method=WATCH, code="OK") == 1, "a stream counts once, when it ends"
    assert sample(samples, handled, method=CONNECT, code="INVALID_ARGUMENT") == 1

    seconds = "meshplane_grpc_server_handling_seconds"
    assert sample(samples, f"{seconds}_count", method=SUBMIT) == 3
    assert sample(samples, f"{seconds}_bucket", method=SUBMIT, le="+Inf") == 3
    assert (sample(samples, f"{seconds}_sum", method=SUBMIT) or 0) > 0
    assert sample(samples, f"{seconds}_count", method=GET) is not None, "failed calls are timed too"
    assert sample(samples, f"{seconds}_count", method=WATCH) is None, "streams are not timed"
    assert sample(samples, f"{seconds}_count", method=CONNECT) is None


class FrozenClock:
    """The plane's clock, moved by the test: the times transitions store are the test's own."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


T0 = 1_800_000_000.0  # whole seconds: stored (microseconds) and read back exactly


async def test_task_latencies_are_measured_from_the_submit_time_stored(tmp_path: Path) -> None:
    async with (
        running_plane(tmp_path, metrics_listen="127.0.0.1:0") as plane,
        grpc.aio.insecure_channel(plane.address) as channel,
    ):
        clock = FrozenClock(T0)
        plane.tasks._clock = plane.dispatcher._clock = plane.reports._clock = clock
        tasks = tasks_stub(channel)
        waited = (await tasks.SubmitTask(submit_request())).task  # nobody serves it yet: it waits
        never_served = (await tasks.SubmitTask(submit_request("nobody.serves"))).task

        clock.now = T0 + 5.0
        agent = LinkAgent(plane.address)
        await agent.connect()  # the dispatcher assigns `waited` now: 5 s in the queue
        assignment = await agent.next_assignment()
        assert assignment.task_id == waited.id
        clock.now = T0 + 30.0
        await agent.succeed(assignment, {})  # 30 s since its submit
        await wait_state(channel, waited.id, task_pb2.TASK_STATE_SUCCEEDED)

        quick = (await tasks.SubmitTask(submit_request())).task  # a session has room: assigned at once
        assignment = await agent.next_assignment()
        assert assignment.task_id == quick.id
        clock.now = T0 + 30.5
        await agent.succeed(assignment, {})  # 0.5 s since its submit
        await wait_state(channel, quick.id, task_pb2.TASK_STATE_SUCCEEDED)

        clock.now = T0 + 60.0
        await tasks.CancelTask(task_service_pb2.CancelTaskRequest(task_id=never_served.id))  # 60 s, never assigned

        def all_observed() -> Samples:
            samples = scrape(plane)
            ended = sample(samples, "meshplane_task_duration_seconds_count", state="CANCELLED")
            return samples if ended == 1 else {}  # empty: not yet

        samples = await eventually(all_observed, message="the cancel observed")
        await agent.close()

    schedule = "meshplane_task_schedule_seconds"
    assert sample(samples, f"{schedule}_count") == 2, "the two tasks assigned, each once"
    assert sample(samples, f"{schedule}_sum") == 5.0
    assert sample(samples, f"{schedule}_bucket", le="0.001") == 1  # `quick`: no wait
    assert sample(samples, f"{schedule}_bucket", le="1.0") == 1
    assert sample(samples, f"{schedule}_bucket", le="5.0") == 2  # `waited`: on the bound

    duration = "meshplane_task_duration_seconds"
    assert sample(samples, f"{duration}_count", state="SUCCEEDED") == 2
    assert sample(samples, f"{duration}_sum", state="SUCCEEDED") == 30.5
    assert sample(samples, f"{duration}_bucket", state="SUCCEEDED", le="0.1") == 0
    assert sample(samples, f"{duration}_bucket", state="SUCCEEDED", le="0.5") == 1  # `quick`
    assert sample(samples, f"{duration}_bucket", state="SUCCEEDED", le="10.0") == 1
    assert sample(samples, f"{duration}_bucket", state="SUCCEEDED", le="30.0") == 2  # `waited`
    assert sample(samples, f"{duration}_bucket", state="CANCELLED", le="30.0") == 0
    assert sample(samples, f"{duration}_bucket", state="CANCELLED", le="60.0") == 1


def test_a_histogram_counts_a_value_equal_to_a_bound_in_that_bound_s_bucket() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.cumulative == (2, 4, 5)  # le=0.1, le=1, +Inf
    assert snapshot.count == 5
    assert snapshot.total == pytest.approx(8.65)


async def test_nats_connected_is_1_while_connected_and_0_once_the_server_is_gone(tmp_path: Path) -> None:
    nats = EmbeddedNats(tmp_path / "nats")
    await nats.start()
    try:
        async with running_plane(tmp_path / "plane", nats_url=nats.url, metrics_listen="127.0.0.1:0") as plane:
            assert sample(scrape(plane), "meshplane_nats_connected") == 1
            await nats.stop()
            await eventually(
                lambda: sample(scrape(plane), "meshplane_nats_connected") == 0, message="the gauge shows the loss"
            )
    finally:
        await nats.stop()
