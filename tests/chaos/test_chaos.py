"""Chaos: load runs while agents and the control plane are killed with SIGKILL (and restarted).

Every acknowledged task must reach exactly one terminal state with one recorded result; none may be lost.
Tasks executed more than once (at-least-once delivery) are counted, with the reason for each.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshplane.v1 import task_pb2, task_service_pb2
from tests.chaos.report import REPORTS
from tests.controlplane.helpers import submit_request, tasks_stub
from tests.support.eventually import eventually
from tests.support.plane_process import PlaneProcess

ROOT = Path(__file__).resolve().parents[2]
AGENT = Path(__file__).with_name("chaos_agent.py")
TASKS = 400
AGENTS = 3


class AgentProcess:
    def __init__(self, target: str, instance_id: str, log: Path, work: Path) -> None:
        self.instance_id = instance_id
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, str(AGENT), target, instance_id, str(log)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(work / f"{instance_id}.log").open("a"),
            start_new_session=True,
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _executions(log: Path) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in log.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            if entry["event"] == "start":
                runs[entry["task"]].append(entry)
    return runs


@pytest.mark.timeout(240)
async def test_no_acknowledged_task_is_lost_or_completed_twice_under_chaos(tmp_path: Path, database_url: str) -> None:
    rng = random.Random(20261122)
    log = tmp_path / "executions.jsonl"
    settings = {"database_url": database_url, "lease_timeout": 2.0, "heartbeat_interval": 0.3}
    planes = [PlaneProcess(tmp_path / "plane", replica_id="plane-1", **settings).start()]
    address = planes[0].address
    agents = [AgentProcess(address, f"chaos-{n}", log, tmp_path) for n in range(AGENTS)]
    acknowledged: dict[str, int] = {}
    unacknowledged = 0
    kills = Counter[str]()
    load_done = asyncio.Event()
    accepted_after = Counter[int]()  # tasks acknowledged after the n-th plane kill

    async def load(stub: Any) -> None:
        """A batch of ten every 50 ms, whatever happens to the plane; failed calls are not acknowledged."""
        nonlocal unacknowledged
        first = 0
        while first < TASKS or kills["control plane"] < 2 or accepted_after[2] < 50:
            batch = [submit_request("chaos.work", {"n": first + i}, retry_policy=_retry()) for i in range(10)]
            try:
                response = await stub.BatchSubmitTasks(
                    task_service_pb2.BatchSubmitTasksRequest(requests=batch), timeout=2
                )
                for i, task in enumerate(response.tasks):
                    acknowledged[task.id] = first + i
                accepted_after[kills["control plane"]] += len(batch)
            except grpc.aio.AioRpcError:
                unacknowledged += len(batch)
                await asyncio.sleep(0.2)  # as a client would: back off while the plane is away
            first += 10
            await asyncio.sleep(0.05)
        load_done.set()

    async def chaos() -> None:
        """Kill a random agent every ~0.7 s (and start a fresh one); kill and restart the plane twice."""
        next_agent = AGENTS
        started = time.monotonic()
        while not load_done.is_set():
            await asyncio.sleep(0.1)
            if rng.random() < 0.14:
                agents.pop(rng.randrange(len(agents))).kill()
                kills["agent"] += 1
                agents.append(AgentProcess(address, f"chaos-{next_agent}", log, tmp_path))
                next_agent += 1
            restarted_and_busy = accepted_after[kills["control plane"]] >= 50  # the current plane took load
            if kills["control plane"] < 2 and restarted_and_busy and time.monotonic() - started > 1.5:
                planes[-1].kill()
                kills["control plane"] += 1
                await asyncio.sleep(0.5)  # the plane is down: submits fail, agents reconnect with backoff
                restart = PlaneProcess(
                    tmp_path / "plane",
                    replica_id=f"plane-{len(planes) + 1}",
                    listen=address,
                    **settings,
                )
                planes.append(await asyncio.to_thread(restart.start))

    try:
        reconnect_fast = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]
        async with grpc.aio.insecure_channel(address, options=reconnect_fast) as channel:
            stub = tasks_stub(channel)
            await asyncio.gather(load(stub), chaos())

            async def settled() -> bool:
                listed = await stub.ListTasks(task_service_pb2.ListTasksRequest(page_size=1000))
                states = {t.id: t.state for t in listed.tasks}
                return all(states.get(task_id, 0) >= task_pb2.TASK_STATE_SUCCEEDED for task_id in acknowledged)

            await eventually(settled, timeout=120, interval=0.5, message="every acknowledged task ended")

            runs = _executions(log)
            lost, completed_twice, wrong_output = [], [], []
            repeated: dict[str, str] = {}
            for task_id, n in acknowledged.items():
                task = (await stub.GetTask(task_service_pb2.GetTaskRequest(task_id=task_id))).task
                if task.state != task_pb2.TASK_STATE_SUCCEEDED:
                    lost.append(task_id)
                    continue
                if task.output.json.struct_value.fields["n"].number_value != n:
                    wrong_output.append(task_id)
                history = [r.event async for r in stub.WatchTask(task_service_pb2.WatchTaskRequest(task_id=task_id))]
                if sum(e.state >= task_pb2.TASK_STATE_SUCCEEDED for e in history) != 1:
                    completed_twice.append(task_id)
                executions = runs.get(task_id, [])
                if not executions:
                    lost.append(task_id)  # "succeeded" without ever running would be a lie
                elif len(executions) > 1:
                    repeated[task_id] = _why(task, executions)
    finally:
        for agent in agents:
            agent.kill()
        for plane in planes:
            plane.kill()

    report = {
        "database": "postgresql" if "postgresql" in database_url else "sqlite",
        "acknowledged_tasks": len(acknowledged),
        "unacknowledged_submits": unacknowledged,
        "acknowledged_after_each_plane_kill": [accepted_after[n] for n in range(3)],
        "lost": len(lost),
        "completed_twice": len(completed_twice),
        "wrong_output": len(wrong_output),
        "agents_killed": kills["agent"],
        "control_plane_killed": kills["control plane"],
        "executed_more_than_once": len(repeated),
        "why": dict(Counter(repeated.values())),
    }
    REPORTS.append(report)
    (tmp_path / "chaos-report.json").write_text(json.dumps(report, indent=2))
    assert (lost, completed_twice, wrong_output) == ([], [], []), report
    assert all(accepted_after[n] for n in range(3)), (
        f"load was accepted before and after each restart: {accepted_after}"
    )
    assert kills["agent"] >= 2 and kills["control plane"] == 2, "the chaos actually happened"


def _retry() -> task_pb2.RetryPolicy:
    from google.protobuf import duration_pb2

    return task_pb2.RetryPolicy(
        max_attempts=20,
        initial_backoff=duration_pb2.Duration(nanos=50_000_000),
        max_backoff=duration_pb2.Duration(seconds=1),
    )


def _why(task: task_pb2.Task, executions: list[dict[str, Any]]) -> str:
    """Why a task ran more than once: attempts whose agent died (lost lease) or that were re-run in place."""
    outcomes = [a.outcome for a in task.attempts]
    attempts = {e["attempt"] for e in executions}
    if len(attempts) == len(executions) and task_pb2.ATTEMPT_OUTCOME_LOST in outcomes:
        return "an earlier attempt's agent was killed mid-task; the task was re-queued after its lease"
    if len(attempts) == len(executions):
        return (
            "an earlier attempt ended without a result ("
            + ", ".join(task_pb2.AttemptOutcome.Name(o) for o in outcomes[:-1])
            + ")"
        )
    return "the same attempt ran twice"
