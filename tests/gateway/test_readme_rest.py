"""The README's REST section works as written: its curl commands, run by bash against `meshplane up --demo`.

Only the address changes: the mesh here listens on ephemeral ports instead of 127.0.0.1:8080.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.support.processes import stop_process_group
from tests.support.toolchain import require_tool

ROOT = Path(__file__).resolve().parents[2]
MESHPLANE = str(Path(sys.executable).with_name("meshplane"))
README_URL = "http://127.0.0.1:8080"
MARK = "@@@ command done @@@"
TOKEN = "s3cret"  # the README's


def rest_blocks() -> list[str]:
    """The ```bash blocks of the README's "## REST" section."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## REST\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## REST' section"
    return re.findall(r"^```bash\n(.*?)^```", section.group(1), re.S | re.M)


def block(containing: str) -> str:
    found = [b for b in rest_blocks() if containing in b]
    assert len(found) == 1, f"expected one README REST block with {containing!r}, found {len(found)}"
    return found[0]


def commands(script: str) -> list[str]:
    """The block's commands: comment lines dropped, backslash continuations joined."""
    result: list[str] = []
    current = ""
    for line in script.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line + "\n"
        if not line.endswith("\\"):
            result.append(current)
            current = ""
    assert not current, f"dangling continuation: {current!r}"
    return result


def for_mesh(command: str, url: str) -> str:
    assert README_URL in command, command
    return command.replace(README_URL, url)


def run_block(script: str, url: str, env: dict[str, str]) -> list[str]:
    """Runs the block's commands as one bash script (variables carry over); returns each command's output."""
    steps = [for_mesh(c, url) for c in commands(script)]
    program = "set -euo pipefail\n" + "".join(f"{step}printf '\\n{MARK}\\n'\n" for step in steps)
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, f"README commands failed ({result.returncode}):\n{program}\n{result.stderr}"
    outputs = result.stdout.split(f"\n{MARK}\n")
    assert outputs[-1] == "" and len(outputs) == len(steps) + 1, result.stdout
    return [o.strip() for o in outputs[:-1]]


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def http_response(output: str) -> tuple[int, dict[str, Any]]:
    """`curl -i` output: the status code and the JSON body."""
    head, _, body = output.replace("\r\n", "\n").partition("\n\n")
    status = int(head.split()[1])
    assert "Content-Type: application/json" in head, head
    return status, json.loads(body)


def readline(stream: IO[str], timeout: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no line within {timeout}s")
    return stream.readline()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHPLANE_")}
    return {**env, **extra}


@contextlib.contextmanager
def meshplane_up(gateway_binary: Path, data_dir: Path, **env: str) -> Iterator[str]:
    """`meshplane up --demo` on ephemeral ports; yields the REST gateway's URL from its ready line."""
    data_dir.mkdir(parents=True)
    ports = ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
    with (data_dir / "up.log").open("w") as log:
        process = subprocess.Popen(
            [MESHPLANE, "up", "--demo", "--data-dir", str(data_dir), *ports],
            cwd=ROOT,
            env=clean_env(MESHPLANE_GATEWAY_BIN=str(gateway_binary), **env),
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while not line.startswith("meshplane ready:") and time.monotonic() < deadline:
            line = readline(process.stdout, deadline - time.monotonic())
            if not line and process.poll() is not None:
                break
        match = re.search(r"rest (http://\S+)", line)
        assert match, f"meshplane up is not ready with a REST gateway: {line!r}\n{(data_dir / 'up.log').read_text()}"
        yield match.group(1)
    finally:
        stop_process_group(process, grace=30)


@pytest.fixture
def tools() -> None:
    require_tool("curl", "the README's REST examples are curl commands (apt-get install curl)")
    require_tool("bash", "the README's REST examples are bash")


@pytest.mark.timeout(120)
def test_readme_rest_examples_work_as_written(tools: None, gateway_binary: Path, tmp_path: Path) -> None:
    env = clean_env()
    with meshplane_up(gateway_binary, tmp_path / "mesh") as url:
        # Tasks: submit, watch, resume, get, list, cancel.
        (submitted, watched, resumed, got, listed, _, cancelled) = run_block(block(":watch"), url, env)
        assert submitted == ""
        events = [line["result"]["event"] for line in json_lines(watched)]
        task_id = events[0]["taskId"]
        assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["state"] == "TASK_STATE_SUCCEEDED" and events[-1]["output"]["json"] == {"slept": 2}
        assert [line["result"]["event"] for line in json_lines(resumed)] == events[2:]
        task = json.loads(got)["task"]
        assert task["id"] == task_id and task["state"] == "TASK_STATE_SUCCEEDED"
        assert task["output"]["json"] == {"slept": 2}
        assert task_id in [t["id"] for t in json.loads(listed)["tasks"]]
        cancelled_task = json.loads(cancelled)["task"]
        assert cancelled_task["state"] == "TASK_STATE_CANCELLED" and cancelled_task["cancelReason"] == "not needed"

        # Channels: subscribe (another terminal), publish, the message arrives.
        (subscribe,) = commands(block(":subscribe"))
        with subprocess.Popen(
            ["bash", "-c", for_mesh(subscribe, url)],
            env=env,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        ) as subscriber:
            try:
                assert subscriber.stdout is not None
                started = json.loads(readline(subscriber.stdout, 15))
                assert started == {"result": {"started": {"channel": "news"}}}
                (published,) = run_block(block(":publish"), url, env)
                message = json.loads(published)["message"]
                received = json.loads(readline(subscriber.stdout, 15))["result"]["message"]
                assert received["messageId"] == message["messageId"]
                assert received["payload"]["json"] == {"headline": "hello"}
            finally:
                os.killpg(subscriber.pid, signal.SIGTERM)

        # State: write, read the version, compare-and-set, then the stale write is 412.
        (written, _, swapped, stale) = run_block(block("expectedVersion"), url, env)
        assert json.loads(written)["entry"]["version"] == "1"
        assert json.loads(swapped)["entry"]["version"] == "2"
        assert json.loads(swapped)["entry"]["value"]["json"] == {"count": 2}
        status, body = http_response(stale)
        assert status == 412 and body["code"] == 9
        assert body["message"] == "namespaces/readme/states/counter: expected version 1, stored is version 2"
        violations = [d for d in body["details"] if d["@type"].endswith("google.rpc.PreconditionFailure")]
        assert violations[0]["violations"][0]["type"] == "VERSION_MISMATCH"

        # The audit trail of those writes: the two that took, newest first.
        (trail,) = run_block(block("/v1/audit-entries"), url, env)
        entries = json.loads(trail)["entries"]
        assert [(e["action"], e["details"]) for e in entries] == [
            ("state.put", {"version": 2}),
            ("state.put", {"version": 1}),
        ]
        assert all(e["actor"] == "client/anonymous" and e["correlationId"] for e in entries)

        # Errors: 404 and 400 with the status body, as the README shows them.
        (missing, invalid) = run_block(block("no-such-task"), url, env)
        status, body = http_response(missing)
        assert status == 404 and body["code"] == 5 and body["message"] == "task 'no-such-task' not found"
        status, body = http_response(invalid)
        assert status == 400 and body["code"] == 3
        assert body["message"] == "target.capability: capability is required"
        bad_request = [d for d in body["details"] if d["@type"].endswith("google.rpc.BadRequest")]
        assert bad_request[0]["fieldViolations"][0]["field"] == "target.capability"

    # Auth: the same commands against a mesh started with MESHPLANE_AUTH_TOKENS=s3cret.
    with meshplane_up(gateway_binary, tmp_path / "auth-mesh", MESHPLANE_AUTH_TOKENS=TOKEN) as url:
        assert run_block(block("Authorization: Bearer"), url, env) == ["401", "200"]
