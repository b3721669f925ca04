"""`meshplane agent run`: loading an agent, and SIGTERM draining in-flight work before exiting."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from agent_runtime import MeshClient, TaskState
from tests.cli.conftest import MESHPLANE, REPO, Mesh, cli_env, read_line, task_fields
from tests.support.eventually import eventually

pytestmark = pytest.mark.timeout(120)

SLOW_AGENT = """
import asyncio

from agent_runtime import Agent, TaskContext

agent = Agent("slowpoke", max_concurrency=2)


@agent.task("slow.work")
async def work(ctx: TaskContext, data: int) -> dict:
    for step in range(1, 11):
        await asyncio.sleep(0.15)
        await ctx.progress(step / 10)
    return {"done": data}
"""


async def _task_state(address: str, task_id: str) -> TaskState:
    async with MeshClient(address) as client:
        return (await client.get(task_id)).state


def test_sigterm_lets_in_flight_work_finish_before_the_agent_exits(mesh: Mesh, tmp_path: Path) -> None:
    (tmp_path / "slow_agent.py").write_text(SLOW_AGENT)
    log = tmp_path / "agent.log"
    with log.open("w") as stderr:
        agent = subprocess.Popen(
            [MESHPLANE, "agent", "run", f"{tmp_path / 'slow_agent.py'}:agent"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=cli_env(mesh.address),
            cwd=REPO,
        )
    try:
        connected = read_line(agent, "agent slowpoke connected", timeout=30)
        assert f"connected to {mesh.address}" in connected and "(capabilities: slow.work)" in connected
        task_id = mesh.cli("task", "submit", "slow.work", "--input", "7").stdout.strip()

        async def running() -> bool:
            return await _task_state(mesh.address, task_id) is TaskState.RUNNING

        asyncio.run(eventually(running, message="the task is running on the agent"))
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        if agent.stdout is not None:
            agent.stdout.close()

    result = mesh.cli("task", "get", task_id)
    fields = task_fields(result.stdout)
    assert (fields["state"], fields["output"]) == ("SUCCEEDED", '{"done": 7}'), result.stdout
    assert "attempt 1: SUCCEEDED" in result.stdout and "attempt 2" not in result.stdout
    text = log.read_text()
    assert "SIGTERM received, draining" in text
    assert "agent slowpoke (" in text and ") stopped" in text


def test_agent_run_explains_what_it_could_not_load(mesh: Mesh, tmp_path: Path) -> None:
    missing = mesh.cli("agent", "run", "no/such/agent.py:agent")
    assert (missing.returncode, missing.stderr) == (2, "error: no such file: no/such/agent.py\n")

    (tmp_path / "not_an_agent.py").write_text("agent = 42\n")
    wrong = mesh.cli("agent", "run", f"{tmp_path / 'not_an_agent.py'}")
    assert wrong.returncode == 2
    assert wrong.stderr.endswith("is a int, not an agent_runtime.Agent\n")

    bad_module = mesh.cli("agent", "run", "no_such_module:agent")
    assert bad_module.returncode == 2 and bad_module.stderr.startswith("error: cannot import no_such_module")
