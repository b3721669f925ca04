"""`meshplane task submit|ls|watch` flags: placement (--agent, --label), --metadata, the task's deadlines, retries,
`ls --correlation-id` and `--all` past one page, `watch --after-sequence`; and how bad values are refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agent_runtime import MeshClient, TaskSpec
from tests.cli.conftest import MESHPLANE, REPO, Mesh, cli_env, lines, read_line, run_cli, start_mesh
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(120)

CAPABILITY = "flags.where"

# One agent per process; its name and labels come from the environment, so two processes make two distinct agents.
WHERE_AGENT = """
import os

from agent_runtime import Agent, TaskContext

agent = Agent(
    os.environ["FLAGS_AGENT_NAME"],
    labels={"side": os.environ["FLAGS_AGENT_SIDE"], "zone": "a"},
    max_concurrency=8,
)


@agent.task("flags.where")
async def where(ctx: TaskContext, data: object) -> dict:
    return {"agent": agent.name, "side": agent.labels["side"], "metadata": ctx.metadata}
"""


@pytest.fixture(scope="module")
def where_agents(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """Two agents serving flags.where on the shared mesh: flags-left (side=left) and flags-right (side=right),
    both zone=a."""
    folder = tmp_path_factory.mktemp("where-agents")
    source = folder / "where_agent.py"
    source.write_text(WHERE_AGENT)
    agents: list[subprocess.Popen[str]] = []
    try:
        for side in ("left", "right"):
            with (folder / f"{side}.log").open("w") as stderr:
                agents.append(
                    subprocess.Popen(
                        [MESHPLANE, "agent", "run", f"{source}:agent"],
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                        text=True,
                        env=cli_env(mesh.address, FLAGS_AGENT_NAME=f"flags-{side}", FLAGS_AGENT_SIDE=side),
                        cwd=REPO,
                    )
                )
            read_line(agents[-1], f"agent flags-{side} connected", timeout=30)
        yield mesh
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
            if agent.stdout is not None:
                agent.stdout.close()


def _run_where(mesh: Mesh, *flags: str) -> dict[str, Any]:
    """Submit flags.where with `flags` (round robin: without a constraint, both agents get work) and wait."""
    result = mesh.cli("task", "submit", CAPABILITY, "--strategy", "round_robin", *flags, "--wait")
    assert result.returncode == 0, result.stderr
    ran: dict[str, Any] = json.loads(result.stdout)
    return ran


def _task(mesh: Mesh, task_id: str) -> dict[str, Any]:
    shown = mesh.cli("task", "get", task_id, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    task: dict[str, Any] = json.loads(shown.stdout)
    return task


# ---------------------------------------------------------------- placement and metadata


def test_label_routes_only_to_the_instances_that_carry_it(where_agents: Mesh) -> None:
    mesh = where_agents
    for side in ("left", "right", "left", "right", "right", "left"):
        assert _run_where(mesh, "--label", f"side={side}")["side"] == side
    # Every pair must match (and one key given twice with the same value is no conflict).
    for side in ("right", "left", "right"):
        ran = _run_where(mesh, "--label", "zone=a", "--label", f"side={side}", "--label", "zone=a")
        assert ran["side"] == side

    submitted = mesh.cli("task", "submit", CAPABILITY, "--label", "side=left", "--label", "zone=b", "-o", "json")
    assert submitted.returncode == 0, submitted.stderr
    task = json.loads(submitted.stdout)
    assert task["target"]["labelSelector"] == {"side": "left", "zone": "b"}
    try:
        # A later task the agents can take is placed and runs: the unmatched one was passed over, not just late.
        assert _run_where(mesh, "--label", "side=left")["side"] == "left"
        assert _task(mesh, task["id"])["state"] == "TASK_STATE_QUEUED"
    finally:
        assert mesh.cli("task", "cancel", task["id"]).returncode == 0


def test_agent_runs_a_task_only_on_agents_of_that_name(where_agents: Mesh) -> None:
    mesh = where_agents
    for name in ("flags-left", "flags-right", "flags-left", "flags-right", "flags-right", "flags-left"):
        assert _run_where(mesh, "--agent", name)["agent"] == name

    submitted = mesh.cli("task", "submit", CAPABILITY, "--agent", "flags-nowhere", "-o", "json")
    assert submitted.returncode == 0, submitted.stderr
    task = json.loads(submitted.stdout)
    assert task["target"]["agentName"] == "flags-nowhere"
    # Agents serve the capability, but none of that name: a typo in the name should not look fine either.
    assert submitted.stderr == (
        f"note: no connected agent named flags-nowhere serves {CAPABILITY}; the task waits until one does "
        "(up to its schedule-to-start timeout)\n"
    )
    try:
        assert _run_where(mesh, "--agent", "flags-right")["agent"] == "flags-right"
        assert _task(mesh, task["id"])["state"] == "TASK_STATE_QUEUED"
    finally:
        assert mesh.cli("task", "cancel", task["id"]).returncode == 0


def test_metadata_reaches_the_agent_and_is_stored_on_the_task(where_agents: Mesh) -> None:
    mesh = where_agents
    flags = [
        "--metadata",
        "team=search",
        "--metadata",
        "query=a=b",
        "--metadata",
        "empty=",
        "--metadata",
        "team=search",
    ]
    submitted = mesh.cli("task", "submit", CAPABILITY, *flags)
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    expected = {"team": "search", "query": "a=b", "empty": ""}  # split at the first "="; a value may be empty

    assert mesh.cli("task", "watch", task_id).returncode == 0
    task = _task(mesh, task_id)
    assert task["metadata"] == expected
    assert task["output"]["json"]["metadata"] == expected  # what the handler saw as ctx.metadata


# ---------------------------------------------------------------- deadlines and retries


def test_deadlines_are_stored_on_the_task(mesh: Mesh) -> None:
    submitted = mesh.cli(
        "task",
        "submit",
        "demo.echo",
        "--schedule-to-start",
        "30s",
        "--start-to-close",
        "5m",
        "--heartbeat-timeout",
        "1500ms",
        "--schedule-to-close",
        "1d",
        "--wait",
        "--timeout",
        "1m",  # the CLI's own wait: not sent
        "-o",
        "json",
    )
    assert submitted.returncode == 0, submitted.stderr
    timeouts = {"scheduleToStart": "30s", "startToClose": "300s", "heartbeat": "1.500s", "scheduleToClose": "86400s"}
    assert json.loads(submitted.stdout)["timeouts"] == timeouts
    assert _task(mesh, json.loads(submitted.stdout)["id"])["timeouts"] == timeouts

    one = mesh.cli("task", "submit", "demo.echo", "--schedule-to-close", "2h", "-o", "json")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["timeouts"]["scheduleToClose"] == "7200s"
    assert _task(mesh, json.loads(one.stdout)["id"])["timeouts"]["scheduleToClose"] == "7200s"


def _ended(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The task a failed `submit --wait -o json` printed (its error line checked)."""
    assert result.returncode == 1, result.stderr
    task: dict[str, Any] = json.loads(result.stdout)
    assert lines(result.stderr)[-1].startswith(f"error: task {task['id']} ended "), result.stderr
    return task


def test_the_plane_enforces_the_deadlines_given(mesh: Mesh) -> None:
    """Each deadline, short, ends a task that would otherwise run (or wait) for a minute: the plane got it."""
    long_sleep = ["--input", '{"seconds": 60}', "--wait", "--timeout", "50s", "-o", "json"]
    cases = [
        ["task", "submit", "demo.sleep", "--start-to-close", "300ms", "--max-attempts", "1", *long_sleep],
        ["task", "submit", "demo.sleep", "--schedule-to-close", "300ms", *long_sleep],
        ["task", "submit", "flags.nobody.serves", "--schedule-to-start", "300ms", *long_sleep],
    ]
    with ThreadPoolExecutor(len(cases)) as pool:
        per_attempt, overall, unstarted = pool.map(lambda args: mesh.cli(*args), cases)

    task = _ended(per_attempt)
    assert task["state"] == "TASK_STATE_DEAD_LETTER"  # its only attempt ran out of time
    [attempt] = task["attempts"]
    assert attempt["error"]["code"] == task["error"]["code"] == "deadline_exceeded"

    task = _ended(overall)
    assert task["state"] == "TASK_STATE_TIMED_OUT"

    task = _ended(unstarted)
    assert lines(unstarted.stderr)[0].startswith("note: no connected agent serves flags.nobody.serves;")
    assert (task["state"], task["error"]["code"]) == ("TASK_STATE_TIMED_OUT", "schedule_to_start_timeout")
    assert "attempts" not in task  # none started


def test_non_retryable_codes_end_the_task_at_the_first_such_failure(mesh: Mesh) -> None:
    flaky = ["task", "submit", "demo.flaky", "--input", '{"failures": 1}', "--wait", "-o", "json"]
    retried = mesh.cli(*flaky, "--non-retryable", "SomethingElse")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["attempt"] == 2  # another code: FlakyError is retried as usual

    failed = _ended(mesh.cli(*flaky, "--non-retryable", "SomethingElse", "--non-retryable", "FlakyError"))
    assert failed["state"] == "TASK_STATE_FAILED"
    assert failed["error"]["code"] == "FlakyError"
    assert [a["outcome"] for a in failed["attempts"]] == ["ATTEMPT_OUTCOME_FAILED"]
    assert failed["retryPolicy"]["nonRetryableErrorCodes"] == ["SomethingElse", "FlakyError"]


def test_backoff_flags_shape_the_retry_policy(mesh: Mesh) -> None:
    flags = ["--initial-backoff", "250ms", "--max-backoff", "2s", "--backoff-multiplier", "3", "--max-attempts", "3"]
    flaky = ["task", "submit", "demo.flaky", "--input", '{"failures": 1}', *flags, "--wait", "-o", "json"]
    retried = mesh.cli(*flaky)
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["attempt"] == 2
    newest = mesh.cli("task", "ls", "--capability", "demo.flaky", "--limit", "1", "-o", "json")
    [task] = json.loads(newest.stdout)["tasks"]
    policy = _task(mesh, task["id"])["retryPolicy"]
    assert (policy["initialBackoff"], policy["maxBackoff"], policy["backoffMultiplier"]) == ("0.250s", "2s", 3)
    assert policy["maxAttempts"] == 3


def test_the_planes_range_checks_come_back_as_one_line(mesh: Mesh) -> None:
    """Durations the CLI can parse but the plane refuses (over a year): its INVALID_ARGUMENT, naming the field."""
    cases = {
        "--schedule-to-start": "timeouts.schedule_to_start",
        "--start-to-close": "timeouts.start_to_close",
        "--heartbeat-timeout": "timeouts.heartbeat",
        "--schedule-to-close": "timeouts.schedule_to_close",
        "--initial-backoff": "retry_policy.initial_backoff",
        "--max-backoff": "retry_policy.max_backoff",
        "--backoff-multiplier": "retry_policy.backoff_multiplier",
    }
    for option, field in cases.items():
        refused = mesh.cli("task", "submit", "demo.echo", option, "101" if option == "--backoff-multiplier" else "400d")
        assert refused.returncode == 1, (option, refused.stderr)
        assert refused.stderr.startswith(f"error: invalid argument: {field}: "), refused.stderr
        assert len(lines(refused.stderr)) == 1 and refused.stdout == ""


# ---------------------------------------------------------------- watch --after-sequence


def test_watch_after_sequence_skips_the_events_up_to_it(mesh: Mesh) -> None:
    task_id = mesh.cli("task", "submit", "demo.sleep", "--input", '{"seconds": 0.3}').stdout.strip()
    everything = mesh.cli("task", "watch", task_id)
    assert everything.returncode == 0, everything.stderr
    events = lines(everything.stdout)
    assert len(events) >= 4 and events[0].startswith("#1 CREATED")

    resumed = mesh.cli("task", "watch", task_id, "--after-sequence", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert lines(resumed.stdout) == events[2:]

    as_json = mesh.cli("task", "watch", task_id, "--after-sequence", "3", "-o", "json")
    assert [json.loads(e)["sequence"] for e in lines(as_json.stdout)] == [str(n) for n in range(4, len(events) + 1)]

    past_the_end = mesh.cli("task", "watch", task_id, "--after-sequence", str(len(events)))
    assert (past_the_end.returncode, past_the_end.stdout, past_the_end.stderr) == (0, "", "")

    explicit_zero = mesh.cli("task", "watch", task_id, "--after-sequence", "0")
    assert lines(explicit_zero.stdout) == events


# ---------------------------------------------------------------- ls --correlation-id, --all


async def _submit_many(address: str, capability: str, correlation_id: str, count: int) -> list[str]:
    async with MeshClient(address) as client:
        ids: list[str] = []
        while len(ids) < count:
            batch = [TaskSpec(capability, n, correlation_id=correlation_id) for n in range(min(1000, count - len(ids)))]
            ids += [handle.id for handle in await client.submit_many(batch)]
        return ids


def _listed_ids(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    header, *rows = lines(result.stdout)
    assert header.split() == ["ID", "STATE", "CAPABILITY", "ATTEMPT", "PROGRESS", "AGE"]
    return [row.split()[0] for row in rows]


def test_ls_filters_by_correlation_id_and_all_lists_past_one_page(tmp_path: Path) -> None:
    """A plane of its own (no agents): 1001 queued tasks of one correlation id, more than a page holds (1000)."""
    mesh = start_mesh(tmp_path / "data", demo=False)
    try:
        many = asyncio.run(_submit_many(mesh.address, "flags.page", "many", 1001))
        other = asyncio.run(_submit_many(mesh.address, "flags.page", "other", 2))
        assert mesh.cli("task", "submit", "flags.page").returncode == 0  # no correlation id
        newest_first = sorted(many, reverse=True)  # ULIDs: a later task sorts after

        assert _listed_ids(mesh.cli("task", "ls", "--correlation-id", "other")) == sorted(other, reverse=True)
        assert mesh.cli("task", "ls", "--correlation-id", "none-such").stdout == "no tasks\n"
        assert _listed_ids(mesh.cli("task", "ls", "--correlation-id", "many")) == newest_first[:50]
        assert _listed_ids(mesh.cli("task", "ls", "--correlation-id", "many", "--limit", "1000")) == newest_first[:1000]

        assert _listed_ids(mesh.cli("task", "ls", "--correlation-id", "many", "--all")) == newest_first
        assert len(_listed_ids(mesh.cli("task", "ls", "--all"))) == 1001 + 2 + 1

        as_json = mesh.cli("task", "ls", "--correlation-id", "many", "--all", "-o", "json")
        assert as_json.returncode == 0, as_json.stderr
        listed = json.loads(as_json.stdout)
        assert list(listed) == ["tasks"]  # the shape of one page's answer, and no next page
        assert [t["id"] for t in listed["tasks"]] == newest_first
        assert {t["correlationId"] for t in listed["tasks"]} == {"many"}

        one_page = json.loads(
            mesh.cli("task", "ls", "--correlation-id", "many", "--limit", "1000", "-o", "json").stdout
        )
        assert listed["tasks"][:1000] == one_page["tasks"] and one_page["nextPageToken"]
        assert json.loads(mesh.cli("task", "ls", "--correlation-id", "other", "--all", "-o", "json").stdout) == {
            "tasks": json.loads(mesh.cli("task", "ls", "--correlation-id", "other", "-o", "json").stdout)["tasks"]
        }
        assert json.loads(mesh.cli("task", "ls", "--correlation-id", "none-such", "--all", "-o", "json").stdout) == {}
    finally:
        assert mesh.stop() == 0


# ---------------------------------------------------------------- bad input


def test_bad_flag_values_are_one_line_and_exit_2_before_anything_is_sent() -> None:
    """The plane named is unreachable: every case is refused before a call is made (or it would exit 1)."""
    address = f"127.0.0.1:{free_port()}"
    duration = "must be a duration like 500ms, 30s, 5m, 2h or 7d (up to 10000 years): got"
    submit = ["task", "submit", "demo.echo"]
    cases: list[tuple[list[str], str]] = [
        ([*submit, "--label", "zone"], "--label must be KEY=VALUE: got 'zone'"),
        ([*submit, "--label", "=a"], "--label must be KEY=VALUE with a key before the =: got '=a'"),
        ([*submit, "--label", "zone=a", "--label", "zone=b"], "--label gives the key 'zone' two values: 'a' and 'b'"),
        ([*submit, "--metadata", "team"], "--metadata must be KEY=VALUE: got 'team'"),
        ([*submit, "--metadata", "=x"], "--metadata must be KEY=VALUE with a key before the =: got '=x'"),
        ([*submit, "--metadata", "k=1", "--metadata", "k="], "--metadata gives the key 'k' two values: '1' and ''"),
        ([*submit, "--schedule-to-start", "soon"], f"--schedule-to-start {duration} 'soon'"),
        ([*submit, "--start-to-close=-5s"], f"--start-to-close {duration} '-5s'"),
        ([*submit, "--heartbeat-timeout", "nan"], f"--heartbeat-timeout {duration} 'nan'"),
        ([*submit, "--schedule-to-close", "100000000d"], f"--schedule-to-close {duration} '100000000d'"),
        ([*submit, "--schedule-to-close", "5m", "--timeout", "5s"], "--timeout needs --wait"),
        ([*submit, "--initial-backoff", "later"], f"--initial-backoff {duration} 'later'"),
        ([*submit, "--max-backoff=-1s"], f"--max-backoff {duration} '-1s'"),
        ([*submit, "--backoff-multiplier", "nan"], "--backoff-multiplier must be a finite number: got nan"),
        ([*submit, "--backoff-multiplier", "inf"], "--backoff-multiplier must be a finite number: got inf"),
        (
            ["task", "watch", "01ANY", "--after-sequence", "-1"],
            "--after-sequence must be within 0..9223372036854775807",
        ),
        (
            ["task", "watch", "01ANY", "--after-sequence", str(2**63)],
            "--after-sequence must be within 0..9223372036854775807",
        ),
    ]
    usage_errors: list[tuple[list[str], str]] = [  # argparse's: its usage, then one error line
        (["task", "watch", "01ANY", "--after-sequence", "x"], "argument --after-sequence: invalid int value: 'x'"),
        (["task", "ls", "--all", "--limit", "5"], "argument --limit: not allowed with argument --all"),
    ]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda case: run_cli(*case[0], target=address), cases + usage_errors))
    for (args, message), result in zip(cases, results, strict=False):
        assert (result.returncode, result.stderr) == (2, f"error: {message}\n"), (args, result.stderr)
        assert result.stdout == "", args
    for (args, message), result in zip(usage_errors, results[len(cases) :], strict=True):
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("usage: meshplane task "), (args, result.stderr)
        assert result.stderr.splitlines()[-1].endswith(f": error: {message}"), (args, result.stderr)


def test_help_tells_the_tasks_deadlines_from_the_cli_wait() -> None:
    shown = run_cli("task", "submit", "--help", target=None, env=cli_env(COLUMNS="200"))
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "--timeout DURATION with --wait: stop waiting after this long" in text
    assert "a limit on this command, not the task's deadline: the task is not cancelled" in text
    assert "the task's deadlines: enforced by the plane" in text
    for option in ("--schedule-to-start", "--start-to-close", "--heartbeat-timeout", "--schedule-to-close"):
        assert f"{option} DURATION" in text
