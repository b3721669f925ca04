"""The Go SDK's own checks (gofmt, go vet, go test) and its example agent and client against a real plane."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from tests.conformance.driver import AgentProcess
from tests.support.plane import running_plane
from tests.support.toolchain import require_tool

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk" / "go"
EXAMPLES = ROOT / "examples" / "go"


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GOFLAGS"] = f"{env.get('GOFLAGS', '')} -buildvcs=false".strip()
    env["GOWORK"] = "off"
    return env


def run(argv: list[str], cwd: Path, timeout: float = 900) -> str:
    result = subprocess.run(argv, cwd=cwd, env=go_env(), capture_output=True, text=True, timeout=timeout)
    output = f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    assert result.returncode == 0, f"{' '.join(argv)} in {cwd} failed:\n{output}"
    return result.stdout


@pytest.mark.timeout(900)
def test_go_sdk_is_formatted_vetted_and_its_unit_tests_pass() -> None:
    go = require_tool("go", "the Go SDK is a Go module (install Go >= 1.26)")
    gofmt = require_tool("gofmt", "gofmt ships with the Go toolchain")
    for module in (SDK, EXAMPLES):
        unformatted = run([gofmt, "-l", "."], module)
        assert unformatted.strip() == "", f"gofmt -l in {module}:\n{unformatted}"
        run([go, "vet", "./..."], module)
    run([go, "test", "-count=1", "./..."], SDK)


@pytest.mark.timeout(300)
async def test_go_example_agent_serves_the_example_client(tmp_path: Path) -> None:
    go = require_tool("go", "the Go example is a Go module (install Go >= 1.26)")
    agent_bin, client_bin = tmp_path / "example-agent", tmp_path / "example-client"
    await asyncio.to_thread(run, [go, "build", "-o", str(agent_bin), "."], EXAMPLES)
    await asyncio.to_thread(run, [go, "build", "-o", str(client_bin), "./client"], EXAMPLES)

    async with running_plane(tmp_path / "plane") as plane:
        agent = AgentProcess("go", [str(agent_bin), "-target", plane.address], "go-example", "example", tmp_path)
        await agent.start()
        try:
            client = await asyncio.create_subprocess_exec(
                str(client_bin),
                "-target",
                plane.address,
                "-input",
                '{"name": "Ada"}',
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(client.communicate(), 60)
            assert client.returncode == 0, f"client: {out.decode()}\n{err.decode()}\nagent: {agent.describe()}"
            assert "SUCCEEDED" in out.decode() and "Hello, Ada!" in out.decode(), out.decode()

            agent.terminate()
            assert await agent.wait_exit() == 0, agent.describe()
        finally:
            await agent.kill()
