"""`meshplane channel`, `state`, `db upgrade`, `bench`, and the unreachable-plane error."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import MESHPLANE, REPO, Mesh, cli_env, lines, run_cli
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.timeout(120)


def test_channel_publish_reaches_a_subscriber(mesh: Mesh) -> None:
    subscriber = subprocess.Popen(
        [MESHPLANE, "channel", "subscribe", "cli-news", "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(mesh.address),
        cwd=REPO,
    )
    try:
        assert subscriber.stderr is not None
        assert subscriber.stderr.readline().strip() == "subscribed to cli-news"  # live: nothing published is lost
        first = mesh.cli("channel", "publish", "cli-news", "--data", '{"n": 1}')
        assert first.returncode == 0, first.stderr
        assert len(first.stdout.strip()) == 26  # the message id
        second = mesh.cli("channel", "publish", "cli-news", "--data", '"two"', "--header", "k=v", "-o", "json")
        assert json.loads(second.stdout)["headers"] == {"k": "v"}
        out, _ = subscriber.communicate(timeout=30)
    finally:
        subscriber.kill()
        subscriber.wait()
    assert subscriber.returncode == 0
    assert lines(out) == ['{"n": 1}', '"two"']

    listed = mesh.cli("channel", "ls")
    assert listed.returncode == 0, listed.stderr
    [header, *rows] = lines(listed.stdout)
    assert header.split() == ["NAME", "CREATED", "LAST", "USED"]
    assert "cli-news" in [row.split()[0] for row in rows]
    as_json = json.loads(mesh.cli("channel", "ls", "-o", "json").stdout)
    [news] = [c for c in as_json["channels"] if c["name"] == "cli-news"]
    assert news["createTime"] <= news["lastUseTime"]


def test_state_put_get_rm_and_a_version_conflict(mesh: Mesh) -> None:
    put = mesh.cli("state", "put", "cli", "color", "--value", '{"name": "blue"}', "--expected-version", "0")
    assert (put.returncode, put.stdout) == (0, "version 1\n")
    assert mesh.cli("state", "get", "cli", "color").stdout == '{"name": "blue"}\n'
    entry = json.loads(mesh.cli("state", "get", "cli", "color", "-o", "json").stdout)
    assert (entry["namespace"], entry["key"], entry["version"]) == ("cli", "color", "1")

    conflict = mesh.cli("state", "put", "cli", "color", "--value", '"red"', "--expected-version", "0")
    assert conflict.returncode == 1
    assert conflict.stderr.startswith("error: ") and "expected version 0" in conflict.stderr
    assert len(lines(conflict.stderr)) == 1

    with_ttl = mesh.cli("state", "put", "cli", "color", "--value", '"red"', "--ttl", "5m", "-o", "json")
    assert "expireTime" in json.loads(with_ttl.stdout)

    assert mesh.cli("state", "rm", "cli", "color").stdout == "deleted cli/color\n"
    missing = mesh.cli("state", "get", "cli", "color")
    assert (missing.returncode, missing.stderr) == (1, "error: state cli/color not found\n")
    assert mesh.cli("state", "rm", "cli", "color").returncode == 1

    # Who did all that: the audit trail, newest first (the refused writes recorded nothing).
    trail = mesh.cli("audit", "ls", "--resource", "namespaces/cli/states/color", "--since", "1h")
    assert trail.returncode == 0, trail.stderr
    [header, *rows] = lines(trail.stdout)
    assert header.split() == ["TIME", "ACTOR", "ACTION", "RESOURCE", "CORRELATION", "ID"]
    assert [row.split()[1:4] for row in rows] == [
        ["client/anonymous", "state.delete", "namespaces/cli/states/color"],
        ["client/anonymous", "state.put", "namespaces/cli/states/color"],
        ["client/anonymous", "state.put", "namespaces/cli/states/color"],
    ]
    as_json = json.loads(mesh.cli("audit", "ls", "--action", "state.put", "--limit", "1", "-o", "json").stdout)
    [newest] = as_json["entries"]
    assert (newest["action"], newest["details"]) == ("state.put", {"version": 2})
    assert as_json["nextPageToken"]
    assert mesh.cli("audit", "ls", "--until", "1h").stdout == "no audit entries\n"
    bad = mesh.cli("audit", "ls", "--since", "yesterday")
    assert (bad.returncode, lines(bad.stderr)) == (
        2,
        ["error: --since must be a time ago like 30m, 2h or 7d, or an ISO 8601 time: got 'yesterday'"],
    )


def test_an_unreachable_control_plane_is_one_clear_line() -> None:
    address = f"127.0.0.1:{free_port()}"
    result = run_cli("task", "ls", target=address)
    assert (result.returncode, result.stderr) == (1, f"error: control plane unreachable at {address}\n")
    flag = run_cli("--target", address, "agents", "ls", target=None)
    assert flag.stderr == f"error: control plane unreachable at {address}\n"
    after = run_cli("agents", "ls", "--target", address, target="127.0.0.1:1")
    assert after.stderr == f"error: control plane unreachable at {address}\n"


def test_db_upgrade_migrates_a_fresh_database(tmp_path: Path) -> None:
    result = run_cli("db", "upgrade", "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}", target=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("database sqlite+aiosqlite:///") and " at revision " in result.stdout
    assert (tmp_path / "fresh.db").exists()


def test_db_upgrade_names_a_database_it_cannot_reach_in_one_line(tmp_path: Path) -> None:
    database_url = f"postgresql+asyncpg://meshplane:secret@127.0.0.1:{free_port()}/mesh"
    result = run_cli("db", "upgrade", "--database-url", database_url, target=None)
    assert result.returncode == 1  # a failure, not a usage error
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: cannot reach the database postgresql+asyncpg://meshplane:***@127.0.0.1:"), line
    assert "secret" not in line


def test_bench_hands_its_options_to_the_benchmark() -> None:
    result = run_cli("bench", "--help", target=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: meshplane bench")
    assert "--idle-sessions" in result.stdout and "--batch-callers" in result.stdout


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_a_small_bench_run_prints_every_figure_and_cleans_up(
    postgres_server: PostgresServer, gateway_binary: Path, tmp_path: Path
) -> None:
    """The whole benchmark, tiny: every phase runs and reports its counts (speeds are not asserted)."""
    figures = small_bench(
        postgres_server, tmp_path, "--tasks=300", "--echo-seconds=0.3", "--idle-sessions=20", "--idle-seconds=1"
    )
    assert figures["batch_submit"]["tasks"] == 300 and figures["batch_submit"]["tasks_per_second"] > 0
    assert figures["single_submit"]["tasks"] == 100 and "ratio_to_64_caller_unary_echo" in figures["single_submit"]
    via_gateway = figures["single_submit_via_gateway"]
    assert via_gateway["tasks"] == 100 and via_gateway["gateway_cpu_us_per_task"] > 0
    assert via_gateway["gateway_submits_per_upstream_call"] >= 1  # read from the gateway's own metrics
    for phase in ("batch_submit", "single_submit", "single_submit_via_gateway"):  # each process's share is counted
        assert figures[phase]["client_cpu_us_per_task"] > 0 and figures[phase]["agents_cpu_us_per_task"] > 0
        assert figures[phase]["load_client"] == "python"
    assert figures["one_caller_latency"]["samples"] == 20
    assert figures["one_caller_latency"]["floor_p50_ms"] > 0
    assert figures["one_caller_latency"]["floor_after_idle_p50_ms"] > 0
    assert figures["database_commit"]["samples"] == 20
    assert figures["idle_sessions"]["sessions"] == 20
    assert list(tmp_path.glob("meshplane-bench-*")) == [], "the run's work directory is removed"


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_the_bench_load_can_come_from_the_go_load_generator(
    postgres_server: PostgresServer, gateway_binary: Path, tmp_path: Path
) -> None:
    figures = small_bench(postgres_server, tmp_path, "--load-client=go", "--tasks=200", "--skip=echo", "--skip=idle")
    for phase in ("batch_submit", "single_submit", "single_submit_via_gateway"):
        assert figures[phase]["load_client"] == "go" and figures[phase]["client_cpu_us_per_task"] > 0
    assert figures["single_submit_via_gateway"]["tasks"] == 100
    assert figures["one_caller_latency"]["load_client"] == "go" and figures["one_caller_latency"]["samples"] == 20


def small_bench(postgres_server: PostgresServer, tmp_path: Path, *options: str) -> dict[str, Any]:
    """`meshplane bench --json` on a fresh database, small: 100 single submits from 8 callers, one agent process."""
    result = run_cli(
        "bench",
        "--database-url",
        postgres_server.create_database(),
        "--single-tasks=100",
        "--callers=8",
        "--latency-samples=20",
        "--agent-processes=1",
        "--json",
        *options,
        target=None,
        timeout=170,
        env=cli_env(TMPDIR=str(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def test_bad_input_is_one_line_and_exit_2_before_anything_is_sent(tmp_path: Path) -> None:
    """Refused before any call: the plane named is unreachable, yet no command says so (nor prints a traceback)."""
    address = f"127.0.0.1:{free_port()}"
    not_utf8 = tmp_path / "latin1.json"
    not_utf8.write_bytes(b'"caf\xe9"')
    no_handlers = tmp_path / "idle_agent.py"
    no_handlers.write_text('from agent_runtime import Agent\n\nagent = Agent("idle")\n')
    duration = "must be a duration like 500ms, 30s, 5m, 2h or 7d (up to 10000 years): got"
    cases: list[tuple[list[str], str]] = [
        (["task", "submit", "demo.echo", "--input", "NaN"], "--input is not valid JSON: NaN is not a JSON number"),
        (["task", "submit", "demo.echo", "-i", '{"a": Infinity}'], "--input is not valid JSON: Infinity is not a"),
        (["task", "submit", "demo.echo", "--input", "1e999"], "--input holds the number 1e999, too large for JSON"),
        (["task", "submit", "demo.echo", "-i", '"\\ud800"'], "--input holds '\\ud800', a lone surrogate that UTF-8"),
        (["task", "submit", "demo.echo", "-i", f"@{not_utf8}"], f"--input file {not_utf8} is not UTF-8 text (byte 4)"),
        (["channel", "publish", "news", "--data", "[-Infinity]"], "--data is not valid JSON: -Infinity is not a JSON"),
        (["state", "put", "ns", "k", "--value", "NaN"], "--value is not valid JSON: NaN is not a JSON number"),
        (["state", "put", "ns", "k", "--value", f"@{not_utf8}"], f"--value file {not_utf8} is not UTF-8 text"),
        (["task", "submit", "demo.echo", "--max-attempts", "2147483648"], "--max-attempts must be within 0..100"),
        (["task", "submit", "demo.echo", "--wait", "--timeout", "nan"], f"--timeout {duration} 'nan'"),
        (["task", "submit", "demo.echo", "--wait", "--timeout", "-1"], f"--timeout {duration} '-1'"),
        (["task", "submit", "demo.echo", "--wait", "--timeout", "0s"], "--timeout must be more than 0"),
        (["task", "submit", "demo.echo", "--timeout", "5s"], "--timeout needs --wait"),
        (["task", "resubmit", "01ANY", "--timeout", "5s"], "--timeout needs --wait"),
        (
            ["state", "put", "ns", "k", "--value", "1", "--expected-version", "99999999999999999999"],
            "--expected-version must be within 0..9223372036854775807",
        ),
        (
            ["state", "rm", "ns", "k", "--expected-version", "-1"],
            "--expected-version must be within 0..9223372036854775807",
        ),
        (["state", "put", "ns", "k", "--value", "1", "--ttl", "nan"], f"--ttl {duration} 'nan'"),
        (["state", "put", "ns", "k", "--value", "1", "--ttl", "inf"], f"--ttl {duration} 'inf'"),
        (["state", "put", "ns", "k", "--value", "1", "--ttl", "1e20"], f"--ttl {duration} '1e20'"),
        (["state", "put", "ns", "k", "--value", "1", "--ttl", "100000000d"], f"--ttl {duration} '100000000d'"),
        (["agents", "drain", "demo", "i-1", "--timeout", "nan"], f"--timeout {duration} 'nan'"),
        (["audit", "ls", "--since", "1000000d"], "--since 1000000d ago is before the year 1"),
        (["agent", "run", str(no_handlers)], "agent 'idle' has no task or channel handlers: nothing to serve"),
        (["agent", "run", "json:dumps"], "json:dumps is neither an Agent nor a factory callable without arguments"),
        (
            ["--token", "a\nb", "task", "ls"],
            "the token holds a line break or control character (position 1), which a request header cannot carry: "
            "tokens must be printable ASCII",
        ),
        (
            ["task", "ls", "--token", "t\u00f6ken"],
            "the token holds a non-ASCII character (position 1), which a request header cannot carry: "
            "tokens must be printable ASCII",
        ),
    ]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda case: run_cli(*case[0], target=address), cases))
    for (args, message), result in zip(cases, results, strict=True):
        assert result.returncode == 2 and result.stderr.startswith(f"error: {message}"), (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1, (args, result.stderr)


def test_durations_take_every_unit_the_readme_names(mesh: Mesh) -> None:
    for ttl in ("7d", "1w", "500ms", "1.5h"):
        put = mesh.cli("state", "put", "cli-durations", "k", "--value", "1", "--ttl", ttl)
        assert put.returncode == 0, (ttl, put.stderr)
    for since in ("500ms", "1w", "2d"):
        listed = mesh.cli("audit", "ls", "--since", since)
        assert listed.returncode == 0, (since, listed.stderr)
    waited = mesh.cli("task", "submit", "demo.echo", "--input", "1", "--wait", "--timeout", "1m")
    assert (waited.returncode, waited.stdout) == (0, "1\n"), waited.stderr


def test_a_token_read_from_a_file_loses_its_trailing_newline(mesh: Mesh) -> None:
    env = cli_env(mesh.address, MESHPLANE_TOKEN="s3cret\n")  # MESHPLANE_TOKEN=$(cat file) strips it; < file does not
    listed = run_cli("agents", "ls", target=mesh.address, env=env)
    assert listed.returncode == 0, listed.stderr
