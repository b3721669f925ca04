"""`meshplane task ...` and `agents ls` against a running mesh with demo agents."""

from __future__ import annotations

import asyncio
import json
import re

import grpc
import pytest
from google.protobuf import json_format

from meshplane.v1 import agent_service_pb2, agent_service_pb2_grpc, task_service_pb2, task_service_pb2_grpc
from tests.cli.conftest import Mesh, lines, task_fields
from tests.support.eventually import eventually

pytestmark = pytest.mark.timeout(120)


def _raw_task_json(address: str, task_id: str) -> str:
    async def fetch() -> str:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = task_service_pb2_grpc.TaskServiceStub(channel)
            response = await stub.GetTask(task_service_pb2.GetTaskRequest(task_id=task_id))
            return json_format.MessageToJson(response.task)

    return asyncio.run(fetch())


def test_submit_and_wait_prints_the_output(mesh: Mesh) -> None:
    result = mesh.cli("task", "submit", "demo.echo", "--input", '{"text":"hi"}', "--wait")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"text": "hi"}
    assert result.stderr == ""


def test_submit_prints_the_id_and_get_shows_the_task(mesh: Mesh) -> None:
    submitted = mesh.cli("task", "submit", "demo.echo", "--input", "[1, 2]", "--priority", "3")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    assert len(task_id) == 26  # a ULID and nothing else: `$(meshplane task submit ...)` works

    waited = mesh.cli("task", "watch", task_id)
    assert waited.returncode == 0, waited.stderr
    text = mesh.cli("task", "get", task_id)
    assert text.returncode == 0, text.stderr
    fields = task_fields(text.stdout)
    assert (fields["id"], fields["state"], fields["output"]) == (task_id, "SUCCEEDED", "[1, 2]")
    assert re.fullmatch(r"cli-[0-9a-f]{32}", fields["correlation id"])  # the submitting command's (x-correlation-id)
    assert "attempt 1: SUCCEEDED on demo/" in text.stdout

    as_json = mesh.cli("task", "get", task_id, "--output", "json")
    assert as_json.returncode == 0, as_json.stderr
    shown = json.loads(as_json.stdout)
    assert shown["output"]["json"] == [1, 2]
    assert "[\n      1,\n      2\n    ]" in as_json.stdout, "whole numbers print whole, as the REST gateway prints them"
    assert shown == json.loads(_raw_task_json(mesh.address, task_id))  # the API's protobuf JSON, nothing else


def test_watch_prints_every_event_then_exits(mesh: Mesh) -> None:
    task_id = mesh.cli("task", "submit", "demo.sleep", "--input", '{"seconds": 0.5}').stdout.strip()
    watched = mesh.cli("task", "watch", task_id)
    assert watched.returncode == 0, watched.stderr
    events = lines(watched.stdout)
    assert events[0] == "#1 CREATED state=QUEUED"
    assert any(" PROGRESS " in e and "progress=100%" in e for e in events)
    assert events[-1].endswith('SUCCEEDED state=SUCCEEDED attempt=1 output={"slept": 0.5}')

    as_json = mesh.cli("task", "watch", task_id, "-o", "json")
    parsed = [json.loads(line) for line in lines(as_json.stdout)]
    assert [e["sequence"] for e in parsed] == [str(i) for i in range(1, len(events) + 1)]  # int64: JSON strings
    assert parsed[-1]["type"] == "TASK_EVENT_TYPE_SUCCEEDED"


def test_flaky_tasks_are_retried_until_they_succeed(mesh: Mesh) -> None:
    result = mesh.cli("task", "submit", "demo.flaky", "--input", '{"failures": 1}', "--wait", "-o", "json")
    assert result.returncode == 0, result.stderr
    task = json.loads(result.stdout)
    assert task["state"] == "TASK_STATE_SUCCEEDED"
    assert [a["outcome"] for a in task["attempts"]] == ["ATTEMPT_OUTCOME_FAILED", "ATTEMPT_OUTCOME_SUCCEEDED"]


def test_cancel_ends_a_running_task(mesh: Mesh) -> None:
    task_id = mesh.cli("task", "submit", "demo.sleep", "--input", '{"seconds": 60}').stdout.strip()
    cancelled = mesh.cli("task", "cancel", task_id, "--reason", "enough")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"task {task_id} CANCELLED"

    watched = mesh.cli("task", "watch", task_id)
    assert watched.returncode == 1
    assert watched.stderr.strip() == f"error: task {task_id} ended CANCELLED (enough)"

    again = mesh.cli("task", "cancel", task_id)
    assert again.returncode == 1
    assert again.stderr.startswith("error: ") and len(lines(again.stderr)) == 1


def test_resubmit_runs_an_ended_task_again_as_a_new_task(mesh: Mesh) -> None:
    original = json.loads(mesh.cli("task", "submit", "demo.echo", "--input", '{"n": 7}', "--wait", "-o", "json").stdout)

    waited = mesh.cli("task", "resubmit", original["id"], "--wait")
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout) == {"n": 7}

    resubmitted = mesh.cli("task", "resubmit", original["id"])
    assert resubmitted.returncode == 0, resubmitted.stderr
    copy_id = resubmitted.stdout.strip()
    assert len(copy_id) == 26 and copy_id != original["id"]
    assert mesh.cli("task", "watch", copy_id).returncode == 0
    shown = mesh.cli("task", "get", copy_id)
    assert f"resubmitted from: {original['id']}" in lines(shown.stdout)
    assert 'output:           {"n": 7}' in lines(shown.stdout)

    running = mesh.cli("task", "submit", "demo.sleep", "--input", '{"seconds": 60}').stdout.strip()
    refused = mesh.cli("task", "resubmit", running)
    assert refused.returncode == 1
    only_ended = rf"error: task '{running}' is (QUEUED|ASSIGNED|RUNNING); only ended tasks can be re-submitted\n"
    assert re.fullmatch(only_ended, refused.stderr), refused.stderr
    assert mesh.cli("task", "cancel", running).returncode == 0


def test_agents_instances_lists_and_drain_recycles_an_instance(mesh: Mesh) -> None:
    listed = mesh.cli("agents", "instances", "demo")
    assert listed.returncode == 0, listed.stderr
    header, *rows = lines(listed.stdout)
    assert header.split() == ["INSTANCE", "AGENT", "STATUS", "IN", "FLIGHT", "LOAD", "SDK", "NODE:PID", "LAST", "SEEN"]
    [row] = [r.split() for r in rows if r.split()[2] == "CONNECTED"]
    instance_id = row[0]
    assert row[1] == "demo" and row[3].endswith("/64") and row[5] == "python"

    def connected() -> list[dict[str, str]]:
        found = json.loads(mesh.cli("agents", "instances", "demo", "-o", "json").stdout)["instances"]
        return [i for i in found if i["status"] == "AGENT_INSTANCE_STATUS_CONNECTED"]

    [before] = connected()
    assert before["instanceId"] == instance_id

    drained = mesh.cli("agents", "drain", "demo", instance_id, "--timeout", "5s", "--reason", "upgrade")
    assert drained.returncode == 0, drained.stderr
    assert drained.stdout == f"instance {instance_id} DRAINING\n"

    def back_with_a_new_session() -> bool:  # the SDK finishes its work and reconnects as the same instance
        return any(i["instanceId"] == instance_id and i["sessionId"] != before["sessionId"] for i in connected())

    asyncio.run(eventually(back_with_a_new_session, timeout=30, interval=0.2, message="the instance reconnected"))
    assert json.loads(mesh.cli("task", "submit", "demo.echo", "--input", "1", "--wait").stdout) == 1

    unknown = mesh.cli("agents", "drain", "demo", "no-such-instance")
    assert (unknown.returncode, unknown.stderr) == (1, "error: agent instance demo/no-such-instance not found\n")
    no_agent = mesh.cli("agents", "instances", "nobody")
    assert (no_agent.returncode, no_agent.stderr) == (1, "error: agent nobody not found\n")


def test_ls_lists_tasks_with_filters(mesh: Mesh) -> None:
    mesh.cli("task", "submit", "demo.echo", "--input", '"for ls"', "--wait")
    text = mesh.cli("task", "ls", "--capability", "demo.echo", "--state", "succeeded", "--limit", "2")
    assert text.returncode == 0, text.stderr
    rows = lines(text.stdout)
    assert rows[0].split() == ["ID", "STATE", "CAPABILITY", "ATTEMPT", "PROGRESS", "AGE"]
    assert 1 <= len(rows) - 1 <= 2
    assert all(" SUCCEEDED " in row and " demo.echo " in row for row in rows[1:])

    as_json = json.loads(mesh.cli("task", "ls", "--limit", "1", "-o", "json").stdout)
    assert len(as_json["tasks"]) == 1


def test_agents_ls_shows_the_demo_agent(mesh: Mesh) -> None:
    text = mesh.cli("agents", "ls")
    assert text.returncode == 0, text.stderr
    assert any(row.split()[:3] == ["demo", row.split()[1], "ONLINE"] for row in lines(text.stdout)[1:])
    assert "demo.echo demo.sleep demo.flaky" in text.stdout

    as_json = mesh.cli("agents", "ls", "--output", "json")

    async def fetch() -> str:
        async with grpc.aio.insecure_channel(mesh.address) as channel:
            stub = agent_service_pb2_grpc.AgentServiceStub(channel)
            response = await stub.ListAgents(agent_service_pb2.ListAgentsRequest(page_size=1000))
            return json_format.MessageToJson(response)

    assert json.loads(as_json.stdout)["agents"][0]["name"] == json.loads(asyncio.run(fetch()))["agents"][0]["name"]


def test_expected_errors_are_one_line_and_a_non_zero_exit(mesh: Mesh) -> None:
    not_found = mesh.cli("task", "get", "01NOTATASK")
    assert (not_found.returncode, not_found.stderr) == (1, "error: task 01NOTATASK not found\n")

    invalid = mesh.cli("task", "submit", "", "--input", "{}")
    assert invalid.returncode == 1
    assert invalid.stderr == "error: invalid argument: target.capability: capability is required\n"

    bad_json = mesh.cli("task", "submit", "demo.echo", "--input", "{oops")
    assert bad_json.returncode == 2
    assert bad_json.stderr.startswith("error: --input is not valid JSON: ") and len(lines(bad_json.stderr)) == 1

    missing_file = mesh.cli("task", "submit", "demo.echo", "--input", "@/nonexistent/input.json")
    assert missing_file.returncode == 2 and missing_file.stderr.startswith("error: cannot read --input file")


def test_input_can_come_from_a_file_or_stdin(mesh: Mesh, tmp_path: object) -> None:
    from_stdin = mesh.cli("task", "submit", "demo.echo", "--input", "@-", "--wait", stdin='{"from": "stdin"}')
    assert json.loads(from_stdin.stdout) == {"from": "stdin"}


def test_submit_takes_a_routing_key_and_a_strategy(mesh: Mesh) -> None:
    keyed = mesh.cli("task", "submit", "demo.echo", "--input", "1", "--routing-key", "user-1", "-o", "json")
    assert keyed.returncode == 0, keyed.stderr
    target = json.loads(keyed.stdout)["target"]
    assert (target["routingKey"], target["strategy"]) == ("user-1", "SCHEDULING_STRATEGY_CONSISTENT_HASH")

    chosen = mesh.cli("task", "submit", "demo.echo", "--input", "1", "--strategy", "round_robin", "-o", "json")
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["target"]["strategy"] == "SCHEDULING_STRATEGY_ROUND_ROBIN"


def test_submit_says_when_no_connected_agent_serves_the_capability(mesh: Mesh) -> None:
    """Such a task waits silently up to its schedule-to-start timeout (an hour): a typo should not look fine."""
    submitted = mesh.cli("task", "submit", "nobody.home")
    try:
        assert submitted.returncode == 0, submitted.stderr
        assert len(submitted.stdout.strip()) == 26, "stdout stays the id alone"
        assert submitted.stderr == (
            "note: no connected agent serves nobody.home; the task waits until one does "
            "(up to its schedule-to-start timeout)\n"
        )
    finally:
        mesh.cli("task", "cancel", submitted.stdout.strip())
    served = mesh.cli("task", "submit", "demo.echo")
    assert served.returncode == 0 and served.stderr == "", served.stderr
